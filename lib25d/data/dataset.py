"""The one dataset type every loader returns, checked once so that models never see a malformed batch.

Items are ``(float32 tensor (C, D, H, W), int label)``, batches ``(B, C, D, H, W)`` and ``int64``; D is
head-foot (axial slices), H anterior-posterior, W left-right (see :mod:`lib25d.models.slicing`).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

SPLITS = ("train", "val", "test")
TASKS = ("binary-class", "multi-class")
READ_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, struct.error)  # damaged or foreign file
_FINITE_CHUNK = 64  # volumes checked per step: bounds the temporary boolean array


def check_split(split: str) -> str:
    """Fail early and readably on a typo such as 'valid' or 'training'."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}")
    return split


def task_for(num_classes: int) -> str:
    """Two classes train with one logit (BCE), more with cross-entropy."""
    return "binary-class" if num_classes == 2 else "multi-class"


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and a result file need to know about a dataset, without its voxels; ``identity`` pins down
    the data used (file + MD5, generator parameters, or CSV + SHA-256 + preprocessing) to trace a result."""

    name: str
    task: str
    num_classes: int
    class_names: list[str]
    in_channels: int
    shape: tuple[int, int, int]
    identity: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task {self.task!r} is not supported: use one of {', '.join(TASKS)}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.task == "binary-class" and self.num_classes != 2:
            raise ValueError(f"a binary-class task has 2 classes, got {self.num_classes}")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{len(self.class_names)} class names for {self.num_classes} classes: give one name per class"
            )
        if self.in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {self.in_channels}")
        shape = tuple(int(s) for s in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be three positive sizes (D, H, W), got {self.shape}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "class_names", [str(c) for c in self.class_names])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for result files (tuples become lists)."""
        return {**asdict(self), "shape": list(self.shape)}


class Uint8Volumes:
    """Lazy float32 ``raw / divisor`` view of integer volumes, channel axis added: a quarter of the memory
    (MedMNIST at 64^3 would take 1.2 GB as float32); ``np.asarray(view)`` materialises everything."""

    def __init__(self, raw: np.ndarray, divisor: float = 255.0) -> None:
        if not np.issubdtype(raw.dtype, np.integer):
            raise TypeError(f"Uint8Volumes needs integer voxels, got {raw.dtype}")
        self.raw = raw[:, None] if raw.ndim == 4 else raw
        if self.raw.ndim != 5:
            raise ValueError(f"expected raw volumes (N, D, H, W) or (N, C, D, H, W), got shape {raw.shape}")
        self.divisor = float(divisor)
        self.shape = tuple(self.raw.shape)

    def __len__(self) -> int:
        return self.raw.shape[0]

    def __getitem__(self, index: Any) -> np.ndarray:
        return np.divide(self.raw[index], self.divisor, dtype=np.float32)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)


class VolumeDataset(Dataset):
    """Volumes float32 ``(N, C, D, H, W)`` (or a lazy :class:`Uint8Volumes`), labels int64 ``(N,)``, optional
    lesion ``masks`` bool ``(N, D, H, W)`` and their :class:`DatasetInfo`, validated once at construction."""

    def __init__(
        self,
        volumes: np.ndarray | Uint8Volumes,
        labels: np.ndarray,
        info: DatasetInfo,
        split: str,
        masks: np.ndarray | None = None,
    ) -> None:
        self.info = info
        self.split = check_split(split)
        self.volumes = volumes if isinstance(volumes, Uint8Volumes) else np.asarray(volumes, dtype=np.float32)
        self.masks = None if masks is None else np.asarray(masks, dtype=bool)
        self.labels = self._validate(np.asarray(labels))

    def _validate(self, labels: np.ndarray) -> np.ndarray:
        """int64 labels, once labels, volumes and masks are checked against each other and the info."""
        n, where = len(self.volumes), f"dataset {self.info.name!r} split {self.split!r}"
        if labels.dtype.kind == "f":  # a cast would turn 0.7 into 0 and NaN into -2**63
            with np.errstate(invalid="ignore"):
                bad = (~np.isfinite(labels) | (labels != np.round(labels))).reshape(-1)
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(
                    f"{where}: label {labels.reshape(-1)[i]} at index {i} is not a class index "
                    "(0, 1, ...); fix the labels"
                )
        labels = labels.astype(np.int64, copy=False)
        if n == 0:
            raise ValueError(f"{where} is empty: check the data files or the split sizes")
        expected = (n, self.info.in_channels, *self.info.shape)
        if tuple(self.volumes.shape) != expected:
            raise ValueError(
                f"{where}: volumes have shape {tuple(self.volumes.shape)}, expected {expected} (N, C, D, H, W)"
            )
        if labels.shape != (n,):
            raise ValueError(f"{where}: labels have shape {labels.shape}, expected ({n},)")
        bad = np.flatnonzero((labels < 0) | (labels >= self.info.num_classes))
        if len(bad):
            raise ValueError(
                f"{where}: label {labels[bad[0]]} at index {bad[0]} is outside "
                f"[0, {self.info.num_classes}); fix the labels or num_classes"
            )
        if self.masks is not None and self.masks.shape != (n, *self.info.shape):
            raise ValueError(
                f"{where}: masks have shape {self.masks.shape}, expected {(n, *self.info.shape)} (N, D, H, W)"
            )
        i = None if isinstance(self.volumes, Uint8Volumes) else first_nonfinite(self.volumes)  # integers: all finite
        if i is not None:
            raise ValueError(f"{where}: volume {i} holds NaN or inf voxels; fix or drop that scan")
        return labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        # torch.tensor copies: in-place edits of a batch never reach the stored data
        return torch.tensor(self.volumes[index], dtype=torch.float32), int(self.labels[index])

    def __repr__(self) -> str:
        return (
            f"VolumeDataset({self.info.name!r}, split={self.split!r}, n={len(self)}, "
            f"shape={(self.info.in_channels, *self.info.shape)}, classes={self.info.num_classes})"
        )


def first_nonfinite(volumes: np.ndarray) -> int | None:
    """Index of the first volume holding NaN/inf, or None; checked in chunks to bound the temporary array."""
    for start in range(0, len(volumes), _FINITE_CHUNK):
        chunk = volumes[start : start + _FINITE_CHUNK]
        ok = np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
        if not ok.all():
            return start + int(np.argmin(ok))
    return None


def stratified_subset(data: VolumeDataset, n: int, seed: int = 0) -> VolumeDataset:
    """At most ``n`` items, each class keeping its share (at least one each), seeded: for quick runs on real
    data (the smoke profile, teaching); the identity records it."""
    if n < 1:
        raise ValueError(f"subset must be a positive number of volumes, got {n}")
    if n >= len(data):
        return data
    rng = np.random.default_rng(seed)
    classes = np.unique(data.labels)
    picked = []
    for c in classes:
        idx = np.flatnonzero(data.labels == c)
        k = max(1, round(n * len(idx) / len(data)))
        picked.append(rng.choice(idx, size=min(k, len(idx)), replace=False))
    order = np.sort(np.concatenate(picked))[: max(n, len(classes))]
    vols = data.volumes
    vols = Uint8Volumes(vols.raw[order], vols.divisor) if isinstance(vols, Uint8Volumes) else vols[order]
    info = replace(data.info, identity={**data.info.identity, "subset": int(n), "subset_seed": int(seed)})
    return VolumeDataset(vols, data.labels[order], info, data.split, None if data.masks is None else data.masks[order])
