"""Seeded planted-lesion volumes: a task with a known answer for tests and sanity runs.

Each volume is a smooth "organ" blob filling about half of every axis (many slices empty, as in MedMNIST), with
texture, noise and 1..4 label-independent distractors (thin tubes or large faint blobs, never lesion-like). Class
k > 0 plants one small lesion of kind k (1 bright sphere, 2 dark sphere, 3 bright hollow shell, 4 bright cube)
marked in ``masks``, so explanations can be scored against the truth. ``difficulty`` ("easy", "medium", "hard" or
a float in [0, 1]) shrinks the lesion and its contrast and adds noise and distractors.
"""

from __future__ import annotations

import numpy as np

from .dataset import SPLITS, DatasetInfo, VolumeDataset, check_split, task_for
from .scenes import render, sample_scenes

GENERATOR = "lib25d.synthetic/1"  # bump when the images a seed gives change
DIFFICULTIES = {"easy": 0.2, "medium": 0.5, "hard": 0.8}
KIND_NAMES = ("no lesion", "bright sphere", "dark sphere", "bright shell", "bright cube")
MIN_SIDE = 8
DEFAULT_SPLIT_SIZES = {"train": 256, "val": 64, "test": 128}


def difficulty_level(difficulty: str | float) -> float:
    """Map a named or numeric difficulty to [0, 1] (0 easiest)."""
    if isinstance(difficulty, str):
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"unknown difficulty {difficulty!r}: use {', '.join(DIFFICULTIES)} or a float in [0, 1]")
        return DIFFICULTIES[difficulty]
    level = float(difficulty)
    if not 0.0 <= level <= 1.0:
        raise ValueError(f"difficulty {difficulty!r} is outside [0, 1]: use a float in [0, 1] or easy/medium/hard")
    return level


def _check(shape: tuple[int, ...], num_classes: int) -> tuple[int, int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < MIN_SIDE:
        raise ValueError(f"synthetic shape must be three sizes >= {MIN_SIDE} (D, H, W), got {shape}")
    if not 2 <= num_classes <= len(KIND_NAMES):
        raise ValueError(f"synthetic num_classes must be in [2, {len(KIND_NAMES)}], got {num_classes}")
    return shape  # type: ignore[return-value]


def make_synthetic(
    n: int,
    *,
    shape: tuple[int, int, int] = (28, 28, 28),
    num_classes: int = 2,
    difficulty: str | float = "medium",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` volumes float32 (n, 1, D, H, W) in [0, 1], balanced labels int64 (n,), lesion masks bool (n, D, H, W).

    The same arguments always give the same arrays; masks are empty exactly for class 0.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    shape = _check(shape, num_classes)
    params = sample_scenes(np.random.default_rng(seed), n, shape, num_classes, difficulty_level(difficulty))
    vols, masks = render(params, shape)
    return vols, params.labels, masks


def split_seed(seed: int, split: str) -> int:
    """Independent, reproducible seed per split so train/val/test never share a volume."""
    return int(np.random.SeedSequence([int(seed), SPLITS.index(check_split(split))]).generate_state(1)[0])


def synthetic_info(
    size: int = 28,
    *,
    n_train: int = DEFAULT_SPLIT_SIZES["train"],
    n_val: int = DEFAULT_SPLIT_SIZES["val"],
    n_test: int = DEFAULT_SPLIT_SIZES["test"],
    shape: tuple[int, int, int] | None = None,
    num_classes: int = 2,
    difficulty: str | float = "medium",
    seed: int = 0,
) -> DatasetInfo:
    """Info for the synthetic dataset; ``shape`` defaults to ``(size, size, size)``."""
    shape = _check(shape if shape is not None else (size, size, size), num_classes)
    identity = dict(
        dataset="synthetic",
        generator=GENERATOR,
        shape=list(shape),
        num_classes=num_classes,
        difficulty=difficulty,
        difficulty_level=difficulty_level(difficulty),
        seed=int(seed),
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
    )
    return DatasetInfo(
        "synthetic", task_for(num_classes), num_classes, list(KIND_NAMES[:num_classes]), 1, shape, identity
    )


def load_synthetic(split: str, *, size: int = 28, **kwargs) -> VolumeDataset:
    """One split of the synthetic dataset (keyword arguments as :func:`synthetic_info`), with ``masks``."""
    info = synthetic_info(size, **kwargs)
    ident = info.identity
    vols, labels, masks = make_synthetic(
        ident[f"n_{check_split(split)}"],
        shape=info.shape,
        num_classes=info.num_classes,
        difficulty=ident["difficulty"],
        seed=split_seed(ident["seed"], split),
    )
    return VolumeDataset(vols, labels, info, split, masks=masks)
