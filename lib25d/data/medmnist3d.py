"""The six MedMNIST 3D datasets, read from a local root and checked against medmnist's official MD5s.

Root: the ``root`` argument, else ``$LIB25D_DATA_ROOT``, else medmnist's default (``~/.medmnist``). A truncated
download would otherwise fail deep inside numpy or, worse, load fewer volumes, so every file is MD5-checked once
per process (cached on path, mtime and size).
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import medmnist
import medmnist.info
import numpy as np

from .dataset import READ_ERRORS, DatasetInfo, Uint8Volumes, VolumeDataset, check_split, first_nonfinite
from .registry import MEDMNIST

ENV_ROOT = "LIB25D_DATA_ROOT"


def _flag(name: str) -> str:
    if name not in MEDMNIST:
        raise ValueError(f"unknown MedMNIST 3D dataset {name!r}: use one of {', '.join(MEDMNIST)}")
    return MEDMNIST[name]


def _size_suffix(size: int) -> str:
    if size not in medmnist.dataset.MedMNIST3D.available_sizes:
        raise ValueError(f"MedMNIST 3D size {size!r} is not available: use 28 or 64")
    return "" if size == 28 else f"_{size}"


def resolve_root(root: str | os.PathLike | None = None) -> Path | None:
    """Argument, then environment, then medmnist's default (read at call time, so it can be patched)."""
    root = root if root is not None else os.environ.get(ENV_ROOT) or None
    if root is not None:
        return Path(root).expanduser().resolve()
    return None if medmnist.info.DEFAULT_ROOT is None else Path(medmnist.info.DEFAULT_ROOT)


def file_name(name: str, size: int = 28) -> str:
    """The archive name medmnist uses for this dataset and size."""
    return f"{_flag(name)}{_size_suffix(size)}.npz"


def _official(name: str, size: int) -> tuple[str, str]:
    """(MD5, URL) that medmnist publishes for this file."""
    info, suffix = medmnist.INFO[_flag(name)], _size_suffix(size)
    return info[f"MD5{suffix}"], info[f"url{suffix}"]


@functools.cache
def _md5(path: str, mtime_ns: int, size: int) -> str:
    """MD5 of a file, computed once per (path, mtime, size) in this process."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "md5").hexdigest()


def _missing(name: str, size: int, root: Path | None, reason: str = "") -> FileNotFoundError:
    where = f"in {root}" if root is not None else "(no data folder: medmnist has no default root)"
    return FileNotFoundError(
        f"{file_name(name, size)} not found {where}{f' ({reason})' if reason else ''}: point LIB25D_DATA_ROOT "
        f"(or --data-root) at the folder holding it, or pass download=True, or download {_official(name, size)[1]} "
        "into that folder"
    )


def locate(name: str, split: str = "train", *, size: int = 28, root=None, download: bool = False) -> Path:
    """Path of a verified archive: found (or downloaded by medmnist) and matching the official MD5."""
    folder = resolve_root(root)
    path = None if folder is None else folder / file_name(name, size)
    if path is None or not path.is_file():
        if not download or folder is None:
            raise _missing(name, size, folder, "download needs a data folder" if download else "")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            getattr(medmnist, medmnist.INFO[_flag(name)]["python_class"])(
                split=split, root=str(folder), download=True, size=size
            )
        except Exception as err:  # medmnist raises a bare multi-line RuntimeError; any failure means no file
            raise _missing(name, size, folder, "download failed, are you offline?") from err
        if not path.is_file():
            raise _missing(name, size, folder, "download produced no file")
    md5, url = _official(name, size)
    st = path.stat()
    actual = _md5(str(path.resolve()), st.st_mtime_ns, st.st_size)
    if actual != md5:
        raise ValueError(
            f"{path} is truncated or corrupt (MD5 {actual}, expected {md5}): delete it and download "
            f"it again (download=True or {url})"
        )
    return path


def medmnist3d_info(name: str, size: int = 28, root=None) -> DatasetInfo:
    """Info from medmnist.INFO alone: no file is needed to plan a run."""
    info, folder = medmnist.INFO[_flag(name)], resolve_root(root)
    class_names = [info["label"][k] for k in sorted(info["label"], key=int)]
    identity = {
        "dataset": _flag(name),
        "size": size,
        "file": str(folder / file_name(name, size)) if folder is not None else file_name(name, size),
        "md5": _official(name, size)[0],
    }
    return DatasetInfo(
        name, info["task"], len(class_names), class_names, int(info["n_channels"]), (size,) * 3, identity
    )


def load_medmnist3d(name: str, split: str, *, size: int = 28, root=None, download: bool = False) -> VolumeDataset:
    """One split as uint8 in memory, viewed as float32 in [0, 1] per item; a (non-official) file of
    floating-point images is used as stored once checked for NaN/inf voxels."""
    path = locate(name, check_split(split), size=size, root=root, download=download)
    keys = (f"{split}_images", f"{split}_labels")
    again = "delete it and download it again (download=True)"
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays, files = [npz[k] for k in keys if k in npz.files], npz.files
    except READ_ERRORS as err:  # the MD5 passed, so only a file changed since then
        raise ValueError(f"{path} cannot be read ({err}): {again}") from err
    if len(arrays) < 2:
        absent = " or ".join(k for k in keys if k not in files)
        raise ValueError(f"{path} has no {absent} array (it holds {', '.join(files) or 'none'}): {again}")
    images, labels = arrays
    info = medmnist3d_info(name, size=size, root=path.parent)
    if np.issubdtype(images.dtype, np.integer):
        return VolumeDataset(Uint8Volumes(images), labels.reshape(-1), info, split)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"{path}: {split} images are {images.dtype}, not integer or floating-point voxels; {again}")
    i = first_nonfinite(images)
    if i is not None:
        bad = int(np.count_nonzero(~np.isfinite(images.reshape(len(images), -1)).all(axis=1)))
        raise ValueError(
            f"{path}: {split} volume {i} holds NaN or inf voxels ({bad} volume(s) in {keys[0]}); "
            "fix the file or download it again"
        )
    images = images.astype(np.float32, copy=False)
    return VolumeDataset(images if images.ndim == 5 else images[:, None], labels.reshape(-1), info, split)
