"""Voxel maps from the three per-axis attention profiles, the refinement the paper's Discussion proposes.

``sum``: m[d, h, w] = a[d] + b[h] + c[w], high on each attended plane (a union); ``product``: a[d] * b[h] * c[w],
high only where attended planes cross (an intersection). Profiles keep each axis's share of the total
attention, so an ignored axis adds little to ``sum``; maps are normalised to sum 1 per volume.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from ..models import AXIS_NAMES

MODES = ("sum", "product")


def voxel_map(profiles: Mapping[str, np.ndarray], mode: str = "sum") -> np.ndarray:
    """``{"axial": (B, D), "coronal": (B, H), "sagittal": (B, W)}`` -> ``(B, D, H, W)`` summing to 1 per volume;
    unbatched profiles give a ``(D, H, W)`` map."""
    if mode not in MODES:
        raise ValueError(f"unknown voxel map mode {mode!r}; valid: {', '.join(MODES)}")
    missing = [name for name in AXIS_NAMES if name not in profiles]
    if missing:
        raise ValueError(f"a voxel map needs attention along all three axes; missing {', '.join(missing)} "
                         "(was the model built with fewer axes?)")
    a, b, c = (np.asarray(profiles[name], dtype=np.float64) for name in AXIS_NAMES)
    if not a.ndim == b.ndim == c.ndim or a.ndim not in (1, 2) or len({a.shape[:-1], b.shape[:-1], c.shape[:-1]}) != 1:
        raise ValueError(f"profiles must all be (n,) or all (B, n); got shapes {a.shape}, {b.shape}, {c.shape}")
    if min(a.min(), b.min(), c.min()) < 0:
        raise ValueError("attention profiles must be non-negative")
    batched = a.ndim == 2
    a, b, c = np.atleast_2d(a)[:, :, None, None], np.atleast_2d(b)[:, None, :, None], np.atleast_2d(c)[:, None, None]
    grid = a + b + c if mode == "sum" else a * b * c
    total = grid.sum(axis=(1, 2, 3), keepdims=True)
    if (total <= 0).any():
        raise ValueError(f"the {mode} of the attention profiles is zero everywhere for some volume; "
                         "cannot normalise it to a map (are the profiles all zero?)")
    return grid / total if batched else (grid / total)[0]


def peak_voxels(maps: np.ndarray, rtol: float = 1e-6) -> np.ndarray:
    """``(B, 3)`` (d, h, w) of each map's maximum, ``-1`` for a constant map. Ties (an upsampled 2x2x2 CAM has
    plateaus of 7^3 voxels) resolve to their centre, not to a plateau corner on the volume border."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4:
        raise ValueError(f"expected maps (B, D, H, W), got shape {maps.shape}")
    out = np.full((len(maps), 3), -1, dtype=int)
    for b, m in enumerate(maps):
        top, span = m.max(), m.max() - m.min()
        if span > 0:
            ties = np.argwhere(m >= top - rtol * span)
            out[b] = ties[np.argmin(((ties - ties.mean(axis=0)) ** 2).sum(axis=1))]
    return out
