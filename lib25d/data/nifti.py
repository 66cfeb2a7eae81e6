"""Your own scans: a CSV of NIfTI files turned into a :class:`VolumeDataset`.

Columns: ``image`` (a path, or several joined by ``;``: modalities stacked as channels), ``label`` (int >= 0),
``split`` (train/val/test), optionally ``mask`` (crops centre on it; returned as ``dataset.masks`` when every row of
the split has one); paths are relative to the CSV's folder. Voxels (X, Y, Z) become (Z, Y, X) = (D, H, W), as in
MedMNIST; the affine is not applied. Per image: ``window=(lo, hi)`` (CT, scaled to [0, 1]) or ``normalize``
("minmax" default, "zscore", "none"); then ``crop=(d, h, w)`` around the mask's centre of mass (else the volume
centre), padded with the image minimum; then ``target_shape``, trilinear. Rows are cached in ``.lib25d_cache`` beside
the CSV (or ``cache_dir``), keyed by files' paths, mtimes, sizes and the options. Bad input fails with one line.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import nibabel
import numpy as np
import torch
from nibabel.filebasedimages import ImageFileError

from .base import READ_ERRORS, SPLITS, DatasetInfo, VolumeDataset, check_split, task_for

REQUIRED_COLUMNS = ("image", "label", "split")
NORMALIZE = ("minmax", "zscore", "none")
CACHE_VERSION = 2  # bump when preprocessing changes what a cached file holds (2: non-finite scans refused)
CACHE_FOLDER = ".lib25d_cache"


@dataclass(frozen=True)
class Row:
    """One CSV row with resolved paths; ``line`` is its line in the CSV, ``position`` its volume index in its split."""

    line: int
    images: tuple[Path, ...]
    label: int
    split: str
    mask: Path | None
    position: int

    @property
    def files(self) -> list[Path]:
        return [*self.images, *([self.mask] if self.mask is not None else [])]


def _triple(name: str, value) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) < 1:
        raise ValueError(f"{name} must be three positive ints (D, H, W), got {value!r}")
    return out  # type: ignore[return-value]


def make_preprocess(window=None, normalize: str | None = None, crop=None, target_shape=None) -> dict:
    """The options, checked once before any file is read: part of the cache key and of the identity."""
    if window is not None:
        try:
            lo, hi = (float(v) for v in window)
        except (TypeError, ValueError):
            raise ValueError(f"window must be (low, high), e.g. (-150, 250), got {window!r}") from None
        if not lo < hi:
            raise ValueError(f"window low must be below high, got {window!r}")
        if normalize not in (None, "none"):
            raise ValueError(f"window and normalize={normalize!r} both rescale intensities: pass only one")
        window, normalize = (lo, hi), "none"
    normalize = normalize or "minmax"
    if normalize not in NORMALIZE:
        raise ValueError(f"unknown normalize {normalize!r}: use one of {', '.join(NORMALIZE)}")
    return {"window": window, "normalize": normalize, "crop": _triple("crop", crop),
            "target_shape": _triple("target_shape", target_shape)}


def read_table(csv_path: str | os.PathLike, num_classes: int | None = None) -> tuple[list[Row], int]:
    """Rows of the CSV, validated as a whole (columns, labels, splits, channel counts), and num_classes."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"CSV {csv_path} not found: give the path of a CSV with columns "
                                f"{', '.join(REQUIRED_COLUMNS)}")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's byte-order mark
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in reader.fieldnames or []]
            raws = []
            for raw in reader:
                if raw.get(None):  # DictReader's place for cells beyond the header
                    raise ValueError(f"{csv_path}:{reader.line_num} has {len(raw[None])} more cell(s) than the header "
                                     "has columns: quote values holding commas, or add the missing column names")
                raws.append((reader.line_num, {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        problem = getattr(err, "strerror", None) or (str(err).splitlines() or [type(err).__name__])[0]
        if isinstance(err, UnicodeDecodeError):
            problem = "it is not UTF-8 text: a binary file, or saved in another encoding"
        raise ValueError(f"CSV {csv_path} cannot be read ({problem}): give a UTF-8 text file whose "
                         f"first line is the header {','.join(REQUIRED_COLUMNS)}") from err
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        one = len(columns) == 1 and any(sep in columns[0] for sep in ";\t")
        hint = " (the header is a single column: separate columns with commas, not ';' or tabs)" if one else ""
        raise ValueError(f"{csv_path} lacks column(s) {', '.join(missing)}: required columns are "
                         f"{', '.join(REQUIRED_COLUMNS)} (optional: mask), found {', '.join(columns) or 'none'}{hint}")
    seen = dict.fromkeys(SPLITS, 0)
    rows = [_parse_row(cells, line, csv_path, seen) for line, cells in raws]
    if not rows:
        raise ValueError(f"{csv_path} has no data rows: add one row per scan")
    for row in rows:
        if len(row.images) != len(rows[0].images):
            raise ValueError(f"{csv_path}:{row.line} has {len(row.images)} image(s), line {rows[0].line} has "
                             f"{len(rows[0].images)}: every row needs the same modalities")
    top = max(r.label for r in rows)
    if num_classes is None:
        num_classes = max(2, top + 1)
    elif top >= num_classes:
        line = next(r.line for r in rows if r.label == top)
        raise ValueError(f"{csv_path}:{line} has label {top} but num_classes={num_classes}: raise num_classes "
                         "or fix the label")
    return rows, num_classes


def _parse_row(cells: dict[str, str], line: int, csv_path: Path, seen: dict[str, int]) -> Row:
    """One checked row; ``seen`` counts the rows of each split so far."""
    where = f"{csv_path}:{line}"
    for col in REQUIRED_COLUMNS:
        if not cells.get(col):
            raise ValueError(f"{where}: empty {col!r}; fill it in or delete the row")
    try:
        label = int(cells["label"])
    except ValueError:
        raise ValueError(f"{where}: label {cells['label']!r} is not an integer class index") from None
    if label < 0:
        raise ValueError(f"{where}: label {label} is negative; classes are 0, 1, ...")
    split = cells["split"]
    if split not in SPLITS:
        raise ValueError(f"{where}: split {split!r} is not one of {', '.join(SPLITS)}")
    images = tuple(csv_path.parent / Path(p.strip()).expanduser() for p in cells["image"].split(";") if p.strip())
    mask = csv_path.parent / Path(cells["mask"]).expanduser() if cells.get("mask") else None
    seen[split] += 1
    return Row(line, images, label, split, mask, seen[split] - 1)


def _require(path: Path, row: Row, csv_path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (CSV {csv_path} line {row.line}): fix the path; "
                                "relative paths start at the CSV's folder")


def _nifti_problem(err: Exception, path: Path) -> str:
    """nibabel's complaint in a few words, without repeating the path."""
    text = (str(err).splitlines() or [""])[0]
    text = text.replace(f'"{path}"', "it").replace(f"'{path}'", "it").replace(str(path), "it")
    if isinstance(err, EOFError) or "Expected" in text:
        return f"truncated: {text}" if text else "truncated"
    if "Empty file" in text:
        return "the file is empty"
    if "Cannot work out file type" in text or "not a gzip file" in text:
        return "not a NIfTI file, or truncated"
    return text or type(err).__name__


def _read(path: Path, row: Row, csv_path: Path, header_only: bool = False):
    """One NIfTI as float32 (D, H, W) = (Z, Y, X), refused when it holds NaN or inf voxels, or its header's shape:
    the one place nibabel reads a file, so a damaged one is a single ValueError naming it and its row."""
    _require(path, row, csv_path)
    try:
        image = nibabel.load(str(path))
        if header_only:
            return tuple(image.shape)
        data = image.get_fdata(dtype=np.float32)
    except (*READ_ERRORS, ImageFileError) as err:  # damaged, truncated or foreign
        raise ValueError(f"{path} cannot be read as NIfTI ({_nifti_problem(err, path)}; CSV {csv_path} line "
                         f"{row.line}): re-export or copy the scan again, or drop its row") from err
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{path} (line {row.line}) has shape {data.shape}: give one 3D file per modality")
    if not np.isfinite(data).all():
        bad = int(data.size - np.count_nonzero(np.isfinite(data)))
        raise ValueError(f"{path}: split {row.split!r} volume {row.position} holds NaN or inf voxels ({bad} of "
                         f"{data.size}; CSV {csv_path} line {row.line}): replace them (e.g. np.nan_to_num) or drop "
                         "the row")
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def _intensity(x: np.ndarray, opts: dict) -> np.ndarray:
    if opts["window"] is not None:
        lo, hi = opts["window"]
        return (np.clip(x, lo, hi) - lo) / (hi - lo)
    if opts["normalize"] == "minmax":
        span = float(x.max() - x.min())
        return (x - x.min()) / span if span > 0 else np.zeros_like(x)
    if opts["normalize"] == "zscore":
        std = float(x.std())
        return (x - x.mean()) / std if std > 0 else x - x.mean()
    return x


def crop_around(vol: np.ndarray, centre: tuple[int, ...], size: tuple[int, int, int], fill) -> np.ndarray:
    """Box of ``size`` centred on ``centre`` from (..., D, H, W), padding with ``fill`` (one per leading index)."""
    lead = vol.shape[:-3]
    out = np.empty((*lead, *size), dtype=vol.dtype)
    out[...] = np.asarray(fill, dtype=vol.dtype).reshape(lead + (1, 1, 1)) if np.ndim(fill) else fill
    src, dst = [], []
    for c, s, n in zip(centre, size, vol.shape[-3:]):
        start = c - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:  # box entirely outside: all padding
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(Ellipsis, *dst)] = vol[(Ellipsis, *src)]
    return out


def _resample(x: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(C, D, H, W) float -> (C, *shape) trilinear."""
    t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None]
    return torch.nn.functional.interpolate(t, size=shape, mode="trilinear", align_corners=False)[0].numpy()


def preprocess_row(row: Row, opts: dict, csv_path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Volume float32 (C, D, H, W) and mask bool (D, H, W) or None for one row."""
    chans = [_read(p, row, csv_path) for p in row.images]
    if len({c.shape for c in chans}) != 1:
        raise ValueError(f"{csv_path}:{row.line}: modalities have shapes {[c.shape for c in chans]}; "
                         "co-register them to one grid")
    vol = np.stack([_intensity(c, opts) for c in chans]).astype(np.float32)
    mask = None if row.mask is None else _read(row.mask, row, csv_path) > 0
    if mask is not None and mask.shape != vol.shape[1:]:
        raise ValueError(f"{csv_path}:{row.line}: mask shape {mask.shape} differs from image shape {vol.shape[1:]}")
    if opts["crop"] is not None:
        centre = tuple(n // 2 for n in vol.shape[1:])
        if mask is not None and mask.any():  # rounded centre of mass
            centre = tuple(int(round(v)) for v in np.argwhere(mask).mean(axis=0))
        vol = crop_around(vol, centre, opts["crop"], vol.reshape(len(vol), -1).min(axis=1))
        mask = None if mask is None else crop_around(mask, centre, opts["crop"], False)
    if opts["target_shape"] is not None:
        vol = _resample(vol, opts["target_shape"])
        if mask is not None:
            mask = _resample(mask[None].astype(np.float32), opts["target_shape"])[0] >= 0.5
    return vol.astype(np.float32, copy=False), mask


def _cache_key(row: Row, opts: dict) -> str:
    stamps = [[str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size] for p in row.files]
    blob = json.dumps({"v": CACHE_VERSION, "files": stamps, "mask": row.mask is not None, "opts": opts})
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def _read_cache(path: Path, row: Row) -> tuple[np.ndarray, np.ndarray | None] | None:
    """A cached row, or None (redo it) when the file is absent, damaged or holds what no scan could give."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            vol, mask = npz["volume"], (npz["mask"] if "mask" in npz.files else None)
    except (*READ_ERRORS, KeyError):  # absent, truncated, foreign
        return None
    ok = (vol.dtype == np.float32 and vol.ndim == 4 and len(vol) == len(row.images) and np.isfinite(vol).all()
          and (mask is None) == (row.mask is None) and (mask is None or mask.shape == vol.shape[1:]))
    return (vol, mask) if ok else None


def _load_row(row: Row, opts: dict, csv_path: Path, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Preprocessed row, from the cache when its files and options are unchanged."""
    for p in row.files:
        _require(p, row, csv_path)
    if cache_dir is None:
        return preprocess_row(row, opts, csv_path)
    path = cache_dir / f"{_cache_key(row, opts)}.npz"
    cached = _read_cache(path, row)
    if cached is not None:
        return cached
    vol, mask = preprocess_row(row, opts, csv_path)
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
        warnings.warn(f"could not write NIfTI cache {path} ({err}); pass cache_dir= a writable folder to cache",
                      stacklevel=3)
    return vol, mask


def _info(name: str, csv_path: Path, num_classes: int, class_names, channels: int, shape, opts: dict) -> DatasetInfo:
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class_names for {num_classes} classes: give one name per class")
    identity = {"dataset": "nifti", "csv": str(csv_path.resolve()),
                "sha256": hashlib.sha256(csv_path.read_bytes()).hexdigest(), "preprocess": dict(opts)}
    return DatasetInfo(name, task_for(num_classes), num_classes, names, channels, tuple(shape), identity)


def nifti_info(csv_path, *, num_classes=None, class_names=None, window=None, normalize=None, crop=None,
               target_shape=None, name: str | None = None, cache_dir=None, cache: bool = True) -> DatasetInfo:
    """Info from the CSV (and the first image's header when neither crop nor target_shape fixes the shape).

    Takes the same keywords as :func:`load_nifti`; the cache ones are accepted and unused.
    """
    csv_path = Path(csv_path)
    opts = make_preprocess(window, normalize, crop, target_shape)
    rows, num_classes = read_table(csv_path, num_classes)
    shape = opts["target_shape"] or opts["crop"]
    if shape is None:  # the first image's header: (X, Y, Z) -> (D, H, W)
        shape = _read(rows[0].images[0], rows[0], csv_path, header_only=True)[:3][::-1]
    return _info(name or f"nifti:{csv_path}", csv_path, num_classes, class_names, len(rows[0].images), shape, opts)


def load_nifti(csv_path: str | os.PathLike, split: str, *, num_classes: int | None = None, class_names=None,
               cache_dir: str | os.PathLike | None = None, cache: bool = True, name: str | None = None,
               **preprocess) -> VolumeDataset:
    """One split of a NIfTI CSV, preprocessed (``window``, ``normalize``, ``crop``, ``target_shape``: see the
    module docstring) and cached on disk."""
    csv_path = Path(csv_path)
    check_split(split)
    opts = make_preprocess(**preprocess)
    rows, num_classes = read_table(csv_path, num_classes)
    name = name or f"nifti:{csv_path}"
    chosen = [r for r in rows if r.split == split]
    if not chosen:
        raise ValueError(f"dataset {name!r} split {split!r} is empty: add rows with split={split} to {csv_path}")
    folder = None
    if cache:
        folder = Path(cache_dir) if cache_dir is not None else csv_path.parent / CACHE_FOLDER
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            warnings.warn(f"no NIfTI cache: cannot create {folder} ({err}); pass cache_dir= a writable folder",
                          stacklevel=2)
            folder = None
    loaded = [_load_row(r, opts, csv_path, folder) for r in chosen]
    for row, (vol, _) in zip(chosen, loaded):
        if vol.shape != loaded[0][0].shape:
            raise ValueError(f"{csv_path}: volumes differ in shape (line {chosen[0].line}: {loaded[0][0].shape[1:]}, "
                             f"line {row.line}: {vol.shape[1:]}): pass target_shape or crop")
    volumes = np.stack([v for v, _ in loaded])
    masks = np.stack([m for _, m in loaded]) if all(m is not None for _, m in loaded) else None
    labels = np.array([r.label for r in chosen], dtype=np.int64)
    info = _info(name, csv_path, num_classes, class_names, volumes.shape[1], volumes.shape[2:], opts)
    return VolumeDataset(volumes, labels, info, split, masks=masks)
