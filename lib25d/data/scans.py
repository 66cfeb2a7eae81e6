"""Your own scans: the CSV of a cohort (:mod:`.scan_table`) turned into a :class:`VolumeDataset`.

Each row goes through :mod:`.preprocess` (MONAI's transforms; options and recipes there): after it, D is head-foot
(axial), H anterior-posterior (coronal), W left-right (sagittal) whatever the storage order. Rows are cached in
``.lib25d_cache`` beside the CSV (or ``cache_dir``), keyed by the files' paths, mtimes and sizes and every option.
Bad input fails with one line naming the file, its CSV line and the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .dataset import READ_ERRORS, DatasetInfo, VolumeDataset, check_split, task_for
from .preprocess import NEEDS_MASK, ScanOptions, ScanReadError, preprocess, read_scan, what
from .scan_table import Row, read_table

CACHE_VERSION = 3  # bump when preprocessing changes what a cached file holds (3: MONAI chain, orientation)
CACHE_FOLDER = ".lib25d_cache"


def _require(path: Path, row: Row, csv_path: Path) -> None:
    if not (path.is_file() or path.is_dir()):
        raise FileNotFoundError(
            f"{path} not found (CSV {csv_path} line {row.line}): fix the path; relative paths start at the CSV's folder"
        )


def _read(path: Path, row: Row, csv_path: Path):
    """One scan (1, X, Y, Z) with its affine, refused when it holds NaN or inf voxels: the one place a file is
    read, so a damaged one is a single ValueError naming it and its row."""
    _require(path, row, csv_path)
    try:
        image = read_scan(path)
    except ScanReadError as err:  # damaged, truncated or foreign
        raise ValueError(
            f"{path} cannot be read as {what(path)} ({err}; CSV {csv_path} line {row.line}): "
            "re-export or copy the scan again, or drop its row"
        ) from err
    if image.dim() != 4:
        raise ValueError(f"{path} (line {row.line}) has shape {tuple(image.shape[1:])}: give one 3D file per modality")
    finite = np.isfinite(np.asarray(image.as_tensor()))
    if not finite.all():
        bad = int(finite.size - finite.sum())
        raise ValueError(
            f"{path}: split {row.split!r} volume {row.position} holds NaN or inf voxels ({bad} of "
            f"{finite.size}; CSV {csv_path} line {row.line}): replace them (e.g. np.nan_to_num) or "
            "drop the row"
        )
    return image


def preprocess_row(row: Row, options: ScanOptions, csv_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Volume float32 (C, D, H, W) and mask bool (D, H, W) or None for one row."""
    from monai.data import MetaTensor  # heavy optional import (MONAI): only when scans load

    chans = [_read(p, row, csv_path) for p in row.images]
    grids = {(tuple(c.shape[1:]), tuple(np.round(np.asarray(c.affine), 3).ravel())) for c in chans}
    if len(grids) != 1:
        raise ValueError(
            f"{csv_path}:{row.line}: modalities have shapes {[tuple(c.shape[1:]) for c in chans]} "
            "or differ in voxel grid (affine); co-register them to one grid"
        )
    image = MetaTensor(np.concatenate([np.asarray(c.as_tensor()) for c in chans]), affine=chans[0].affine)
    mask = None if row.mask is None else _read(row.mask, row, csv_path)
    if mask is not None and mask.shape[1:] != image.shape[1:]:
        raise ValueError(
            f"{csv_path}:{row.line}: mask shape {tuple(mask.shape[1:])} differs from image shape "
            f"{tuple(image.shape[1:])}"
        )
    if options.recipe in NEEDS_MASK and mask is None:
        raise ValueError(
            f"{csv_path}:{row.line}: recipe {options.recipe!r} crops around the lesion's centre of "
            "mass: add a mask column with its segmentation, or pass crop=none"
        )
    return preprocess(image, mask, options)


def _stamps(path: Path) -> list:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size] for p in files]


def _cache_key(row: Row, options: ScanOptions) -> str:
    blob = json.dumps(
        {
            "v": CACHE_VERSION,
            "files": [_stamps(p) for p in row.files],
            "mask": row.mask is not None,
            "opts": options.to_dict(),
        }
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read_cache(path: Path, row: Row) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A cached row, or None (redo it) when the file is absent, damaged or holds what no scan could give."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            vol, mask = npz["volume"], (npz["mask"] if "mask" in npz.files else None)
    except (*READ_ERRORS, KeyError):  # absent, truncated, foreign
        return None
    ok = (
        vol.dtype == np.float32
        and vol.ndim == 4
        and len(vol) == len(row.images)
        and np.isfinite(vol).all()
        and (mask is None) == (row.mask is None)
        and (mask is None or mask.shape == vol.shape[1:])
    )
    return (vol, mask) if ok else None


def _write_cache(path: Path, vol: np.ndarray, mask: np.ndarray | None) -> None:
    try:  # temp file + os.replace: a crash or a parallel run never leaves a half-written cache file
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **({"volume": vol} if mask is None else {"volume": vol, "mask": mask}))
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as err:
        warnings.warn(
            f"could not write the scan cache {path} ({err}); pass cache_dir= a writable folder to cache", stacklevel=4
        )


def _load_row(
    row: Row, options: ScanOptions, csv_path: Path, cache_dir: Path | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Preprocessed row, from the cache when its files and options are unchanged."""
    for p in row.files:
        _require(p, row, csv_path)
    if cache_dir is None:
        return preprocess_row(row, options, csv_path)
    path = cache_dir / f"{_cache_key(row, options)}.npz"
    cached = _read_cache(path, row)
    if cached is not None:
        return cached
    vol, mask = preprocess_row(row, options, csv_path)
    _write_cache(path, vol, mask)
    return vol, mask


def _cache_folder(csv_path: Path, cache_dir, cache: bool) -> Path | None:
    if not cache:
        return None
    folder = Path(cache_dir) if cache_dir is not None else csv_path.parent / CACHE_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        warnings.warn(f"no scan cache: cannot create {folder} ({err}); pass cache_dir= a writable folder", stacklevel=3)
        return None
    return folder


def _info(
    name: str, csv_path: Path, num_classes: int, class_names, channels: int, shape, options: ScanOptions
) -> DatasetInfo:
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for {num_classes} classes: give one name per class")
    identity = {
        "dataset": "nifti",
        "csv": str(csv_path.resolve()),
        "sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        "preprocess": options.to_dict(),
    }
    return DatasetInfo(name, task_for(num_classes), num_classes, names, channels, tuple(shape), identity)


def nifti_info(
    csv_path,
    *,
    num_classes=None,
    class_names=None,
    recipe=None,
    orientation="RAS",
    spacing=None,
    window=None,
    normalize=None,
    foreground=False,
    crop=None,
    target_shape=None,
    name: str | None = None,
    cache_dir=None,
    cache: bool = True,
) -> DatasetInfo:
    """What :func:`load_nifti` would return as ``.info``. The shape is ``target_shape`` or ``crop`` where they fix
    it, else the first scan's once preprocessed (and cached)."""
    csv_path = Path(csv_path)
    options = ScanOptions.make(recipe, orientation, spacing, window, normalize, foreground, crop, target_shape)
    rows, num_classes = read_table(csv_path, num_classes)
    shape = options.target_shape or (options.crop if not options.foreground else None)
    if shape is None:
        shape = _load_row(rows[0], options, csv_path, _cache_folder(csv_path, cache_dir, cache))[0].shape[1:]
    return _info(name or f"nifti:{csv_path}", csv_path, num_classes, class_names, len(rows[0].images), shape, options)


def load_nifti(
    csv_path: str | os.PathLike,
    split: str,
    *,
    num_classes: int | None = None,
    class_names=None,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    name: str | None = None,
    **preprocess,
) -> VolumeDataset:
    """One split of a scans CSV, preprocessed (``recipe``, ``orientation``, ``spacing``, ``window``, ``normalize``,
    ``foreground``, ``crop``, ``target_shape``: see :mod:`.preprocess`) and cached on disk."""
    csv_path = Path(csv_path)
    check_split(split)
    options = ScanOptions.make(**preprocess)
    rows, num_classes = read_table(csv_path, num_classes)
    name = name or f"nifti:{csv_path}"
    chosen = [r for r in rows if r.split == split]
    if not chosen:
        raise ValueError(f"dataset {name!r} split {split!r} is empty: add rows with split={split} to {csv_path}")
    folder = _cache_folder(csv_path, cache_dir, cache)
    loaded = [_load_row(r, options, csv_path, folder) for r in chosen]
    for row, (vol, _) in zip(chosen, loaded):
        if vol.shape != loaded[0][0].shape:
            raise ValueError(
                f"{csv_path}: volumes differ in shape (line {chosen[0].line}: {loaded[0][0].shape[1:]}, "
                f"line {row.line}: {vol.shape[1:]}): pass target_shape or crop"
            )
    volumes = np.stack([v for v, _ in loaded])
    masks = np.stack([m for _, m in loaded]) if all(m is not None for _, m in loaded) else None
    labels = np.array([r.label for r in chosen], dtype=np.int64)
    info = _info(name, csv_path, num_classes, class_names, volumes.shape[1], volumes.shape[2:], options)
    return VolumeDataset(volumes, labels, info, split, masks=masks)
