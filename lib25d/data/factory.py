"""One entry point from a dataset name to its data: :func:`load_dataset`, :func:`dataset_info` (no voxels), and
:func:`check_dataset` (the name and options, checked before anything is read)."""

from __future__ import annotations

import inspect
from typing import Any

from .dataset import DatasetInfo, VolumeDataset, check_split, stratified_subset
from .medmnist3d import load_medmnist3d, medmnist3d_info
from .registry import MEDMNIST, NIFTI_PREFIX, available_datasets
from .scans import load_nifti, nifti_info
from .synthetic import load_synthetic, synthetic_info

_FLAG_ALIASES = {flag: short for short, flag in MEDMNIST.items()}


def check_dataset(name: str, options: dict[str, Any] | None = None) -> tuple[str, str]:
    """(kind, argument), e.g. ('medmnist', 'adrenal'), ('synthetic', ''), ('nifti', csv path), of a dataset name
    that takes these options; else one ValueError listing the valid names or options."""
    valid = ", ".join([*available_datasets(), f"{NIFTI_PREFIX}<path to csv>"])
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}: use one of {valid}")
    key = _FLAG_ALIASES.get(name.strip().lower(), name.strip().lower())
    if name.startswith(NIFTI_PREFIX):
        kind, arg = "nifti", name[len(NIFTI_PREFIX) :].strip()
        if not arg:
            raise ValueError(f"{name!r} names no CSV: write {NIFTI_PREFIX}path/to/scans.csv")
    elif key in MEDMNIST:
        kind, arg = "medmnist", key
    elif key == "synthetic":
        kind, arg = "synthetic", ""
    else:
        raise ValueError(f"unknown dataset {name!r}: use one of {valid}")
    info_fn = {"medmnist": None, "synthetic": synthetic_info, "nifti": nifti_info}[kind]
    params = inspect.signature(info_fn).parameters.values() if info_fn else []
    allowed = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "name"]  # besides size, root, ...
    unknown = sorted(set(options or {}) - set(allowed) - {"subset"})
    if unknown:
        takes = (
            f"valid: {', '.join([*allowed, 'subset'])}"
            if allowed
            else "it takes only subset (size, root, download are settings)"
        )
        raise ValueError(f"dataset {name!r} has no option(s) {', '.join(unknown)}; {takes}")
    return kind, arg


def load_dataset(
    name: str, split: str, *, size: int = 28, root=None, download: bool = False, **kwargs: Any
) -> VolumeDataset:
    """One split (train, val or test) of the named dataset, validated and ready for a DataLoader."""
    subset = kwargs.pop("subset", None)  # any dataset: a stratified, seeded sample of each split
    kind, arg = check_dataset(name, kwargs)
    check_split(split)
    if kind == "medmnist":
        data = load_medmnist3d(arg, split, size=size, root=root, download=download)
    elif kind == "synthetic":
        data = load_synthetic(split, size=size, **kwargs)
    else:
        data = load_nifti(arg, split, name=name, **kwargs)
    return data if subset is None else stratified_subset(data, int(subset))


def dataset_info(name: str, size: int = 28, root=None, **kwargs: Any) -> DatasetInfo:
    """What :func:`load_dataset` would return as ``.info``, without loading voxels (MedMNIST needs no file)."""
    kwargs.pop("subset", None)
    kind, arg = check_dataset(name, kwargs)
    if kind == "medmnist":
        return medmnist3d_info(arg, size=size, root=root)
    if kind == "synthetic":
        return synthetic_info(size, **kwargs)
    return nifti_info(arg, name=name, **kwargs)
