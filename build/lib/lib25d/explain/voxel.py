"""Voxel maps from the three per-axis attention profiles (the paper's proposed refinement).

The Discussion notes that a voxel-level attribution "could trivially be obtained by multiplying
or adding slice attributions along sagittal, coronal, and axial directions". Both are here so
that they can be scored against ground truth like any other voxel map (see ``benchmark``):

- ``sum``:     m[d, h, w] = a[d] + b[h] + c[w]  — high on each highly attended plane (a union);
- ``product``: m[d, h, w] = a[d] * b[h] * c[w]  — high only where all three planes cross (an intersection).

:func:`peak_voxels` finds where a map points (plateaus resolve to their centre).

Profiles are used as the model produced them (each axis holds its share of the total
attention), so an axis the model ignores contributes little to ``sum``; ``product`` does not
depend on per-axis scale. Maps are normalised to sum 1 per volume.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..models import AXIS_NAMES

MODES = ("sum", "product")


def _profiles(profiles: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = [name for name in AXIS_NAMES if name not in profiles]
    if missing:
        raise ValueError(f"a voxel map needs attention along all three axes; missing {', '.join(missing)} "
                         "(was the model built with fewer axes?)")
    a, b, c = (np.asarray(profiles[name], dtype=np.float64) for name in AXIS_NAMES)
    if not a.ndim == b.ndim == c.ndim or a.ndim not in (1, 2) or len({a.shape[:-1], b.shape[:-1], c.shape[:-1]}) != 1:
        raise ValueError(f"profiles must all be (n,) or all (B, n); got shapes {a.shape}, {b.shape}, {c.shape}")
    if min(a.min(), b.min(), c.min()) < 0:
        raise ValueError("attention profiles must be non-negative")
    return a, b, c


def voxel_map(profiles: Mapping[str, np.ndarray], mode: str = "sum") -> np.ndarray:
    """``{"axial": (B, D), "coronal": (B, H), "sagittal": (B, W)}`` -> ``(B, D, H, W)`` summing to 1.

    Unbatched profiles ``(D,), (H,), (W,)`` give a ``(D, H, W)`` map. ``mode``: ``sum`` or ``product``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown voxel map mode {mode!r}; valid: {', '.join(MODES)}")
    a, b, c = _profiles(profiles)
    batched = a.ndim == 2
    if not batched:
        a, b, c = a[None], b[None], c[None]
    a, b, c = a[:, :, None, None], b[:, None, :, None], c[:, None, None, :]
    grid = a + b + c if mode == "sum" else a * b * c
    total = grid.sum(axis=(1, 2, 3), keepdims=True)
    if (total <= 0).any():
        raise ValueError(f"the {mode} of the attention profiles is zero everywhere for some volume; "
                         "cannot normalise it to a map (are the profiles all zero?)")
    out = grid / total
    return out if batched else out[0]


def peak_voxels(maps: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """``(B, 3)`` (d, h, w) of each map's maximum; ``-1`` rows for constant (blank) maps.

    Ties are common: an upsampled 2x2x2 CAM has plateaus of 7^3 equal voxels. They resolve to
    the maximal voxel closest to the centre of all maximal voxels, not to the first in memory
    order (which would always be a plateau corner, on the volume border for upsampled CAMs).
    A constant map points nowhere. Values within ``rtol`` of the map's range count as equal.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4:
        raise ValueError(f"expected maps (B, D, H, W), got shape {maps.shape}")
    out = np.full((len(maps), 3), -1, dtype=int)
    for b, m in enumerate(maps):
        top, span = m.max(), m.max() - m.min()
        if not span > 0:
            continue
        ties = np.argwhere(m >= top - rtol * span)
        out[b] = ties[np.argmin(((ties - ties.mean(axis=0)) ** 2).sum(axis=1))]
    return out
