"""The six MedMNIST 3D datasets, read from a local root and checked against official MD5s.

Root: the ``root`` argument, else ``$LIB25D_DATA_ROOT``, else medmnist's default
(``~/.medmnist``). Files are named as medmnist names them (``{flag}.npz`` at 28^3,
``{flag}_64.npz`` at 64^3). A truncated download would otherwise fail deep inside numpy or,
worse, load fewer volumes, so every file is MD5-checked once per process (cached on
path, mtime and size).
"""
from __future__ import annotations

import hashlib
import os
import struct
import zipfile
import zlib
from pathlib import Path

import medmnist
import medmnist.info
import numpy as np

from .base import DatasetInfo, Uint8Volumes, VolumeDataset, check_split

# short name -> medmnist flag, from medmnist's own table: organ, nodule, adrenal, fracture, vessel, synapse
MEDMNIST = {flag.removesuffix("mnist3d"): flag for flag in medmnist.INFO if flag.endswith("mnist3d")}
SIZES = (28, 64)
ENV_ROOT = "LIB25D_DATA_ROOT"

_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def _flag(name: str) -> str:
    if name not in MEDMNIST:
        raise ValueError(f"unknown MedMNIST 3D dataset {name!r}: use one of {', '.join(MEDMNIST)}")
    return MEDMNIST[name]


def _size_suffix(size: int) -> str:
    if size not in SIZES:
        raise ValueError(f"MedMNIST 3D size {size!r} is not available: use 28 or 64")
    return "" if size == 28 else f"_{size}"


def resolve_root(root: str | os.PathLike | None = None) -> Path | None:
    """Argument, then environment, then medmnist's default (read at call time, so it can be patched)."""
    if root is not None:
        return Path(root).expanduser().resolve()
    env = os.environ.get(ENV_ROOT)
    if env:
        return Path(env).expanduser().resolve()
    default = medmnist.info.DEFAULT_ROOT
    return None if default is None else Path(default)


def file_name(name: str, size: int = 28) -> str:
    """The archive name medmnist uses for this dataset and size."""
    return f"{_flag(name)}{_size_suffix(size)}.npz"


def _official(name: str, size: int) -> tuple[str, str]:
    """(MD5, URL) that medmnist publishes for this file."""
    info = medmnist.INFO[_flag(name)]
    suffix = _size_suffix(size)
    return info[f"MD5{suffix}"], info[f"url{suffix}"]


def file_md5(path: Path) -> str:
    """MD5 of a file, computed once per (path, mtime, size) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    if key not in _MD5_CACHE:
        _MD5_CACHE[key] = _hash_file(path)
    return _MD5_CACHE[key]


def _hash_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _missing_message(name: str, size: int, root: Path | None, reason: str = "") -> str:
    _, url = _official(name, size)
    where = f"in {root}" if root is not None else "(no data folder: medmnist has no default root)"
    extra = f" ({reason})" if reason else ""
    return (
        f"{file_name(name, size)} not found {where}{extra}: point LIB25D_DATA_ROOT (or --data-root) at the folder "
        f"holding it, or pass download=True, or download {url} into that folder"
    )


def _download(name: str, split: str, size: int, root: Path | None) -> None:
    """Let medmnist fetch the file; offline, turn its multi-line failure into one clear error."""
    if root is None:
        raise FileNotFoundError(_missing_message(name, size, root, "download needs a data folder"))
    cls = getattr(medmnist, medmnist.INFO[_flag(name)]["python_class"])
    try:
        root.mkdir(parents=True, exist_ok=True)
        cls(split=split, root=str(root), download=True, size=size)
    except Exception as err:  # medmnist raises a bare RuntimeError; any failure means no file
        raise FileNotFoundError(_missing_message(name, size, root, "download failed, are you offline?")) from err


def locate(name: str, split: str = "train", *, size: int = 28, root=None, download: bool = False) -> Path:
    """Path of a verified archive: found (or downloaded) and matching the official MD5."""
    folder = resolve_root(root)
    path = None if folder is None else folder / file_name(name, size)
    if path is None or not path.is_file():
        if not download:
            raise FileNotFoundError(_missing_message(name, size, folder))
        _download(name, split, size, folder)
        path = folder / file_name(name, size)
        if not path.is_file():
            raise FileNotFoundError(_missing_message(name, size, folder, "download produced no file"))
    md5, url = _official(name, size)
    actual = file_md5(path)
    if actual != md5:
        raise ValueError(
            f"{path} is truncated or corrupt (MD5 {actual}, expected {md5}): delete it and download it again "
            f"(download=True or {url})"
        )
    return path


def medmnist3d_info(name: str, size: int = 28, root=None) -> DatasetInfo:
    """Info from medmnist.INFO alone: no file is needed to plan a run."""
    flag = _flag(name)
    info = medmnist.INFO[flag]
    md5, _ = _official(name, size)
    labels = info["label"]
    class_names = [labels[k] for k in sorted(labels, key=int)]
    folder = resolve_root(root)
    return DatasetInfo(
        name=name,
        task=info["task"],
        num_classes=len(class_names),
        class_names=class_names,
        in_channels=int(info["n_channels"]),
        shape=(size, size, size),
        identity={
            "dataset": flag,
            "size": size,
            "file": str(folder / file_name(name, size)) if folder is not None else file_name(name, size),
            "md5": md5,
        },
    )


def load_medmnist3d(name: str, split: str, *, size: int = 28, root=None, download: bool = False) -> VolumeDataset:
    """One split as uint8 kept in memory and viewed as float32 in [0, 1] per item.

    A file with floating-point images (not an official one: those are uint8) is used as stored,
    once checked for NaN/inf voxels; the error names the file, the split and the volume.
    """
    check_split(split)
    path = locate(name, split, size=size, root=root, download=download)
    keys = (f"{split}_images", f"{split}_labels")
    try:
        with np.load(path, allow_pickle=False) as npz:
            absent = [k for k in keys if k not in npz.files]
            if absent:
                raise ValueError(f"{path} has no {' or '.join(absent)} array (it holds {', '.join(npz.files) or 'none'}): "
                                 "delete it and download it again (download=True)")
            images, labels = npz[keys[0]], npz[keys[1]]
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, struct.error) as err:  # MD5 passed, so only a file changed since
        raise ValueError(f"{path} cannot be read ({err}): delete it and download it again (download=True)") from err
    info = medmnist3d_info(name, size=size, root=path.parent)
    if np.issubdtype(images.dtype, np.integer):
        return VolumeDataset(Uint8Volumes(images), labels.reshape(-1), info, split)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{path}: {split} images are {images.dtype}, not integer or floating-point voxels; "
                         "delete the file and download it again (download=True)")
    flat = images.reshape(len(images), -1)
    finite = np.isfinite(flat).all(axis=1)
    if not finite.all():
        raise ValueError(f"{path}: {split} volume {int(np.argmin(finite))} holds NaN or inf voxels "
                         f"({int(np.count_nonzero(~finite))} volume(s) in {keys[0]}); fix the file or download it again")
    images = images.astype(np.float32, copy=False)
    return VolumeDataset(images if images.ndim == 5 else images[:, None], labels.reshape(-1), info, split)
