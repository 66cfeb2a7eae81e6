"""Voxel maps on three orthogonal planes through one point (the lesion's centre): the volume, then each map, with
one colour scale for all maps so that their heat compares. A plain :class:`~matplotlib.figure.Figure`, as
:mod:`.figures`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..models import AXIS_NAMES
from .figures import finish_figure, label_panel, take_slice


def mass(voxel_map: np.ndarray) -> np.ndarray:
    """A non-negative map as a share of its total (an attention map already is one); all zeros stay zero."""
    m = np.clip(np.asarray(voxel_map, dtype=np.float64), 0, None)
    total = m.sum()
    return m / total if total > 0 else m


def lesion_centre(mask: np.ndarray) -> tuple[int, int, int]:
    """The voxel nearest the lesion's centre of mass (the planes the figure cuts)."""
    points = np.argwhere(np.asarray(mask, dtype=bool))
    if not len(points):
        raise ValueError("the mask marks no voxel; pass a volume with a lesion, or choose the point yourself")
    return tuple(int(round(c)) for c in points.mean(axis=0))  # type: ignore[return-value]


def planes_figure(
    volume: np.ndarray,
    maps: Mapping[str, np.ndarray],
    point: tuple[int, int, int],
    mask: np.ndarray | None = None,
    *,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Rows: the volume, then each map (as its share of the attribution, :func:`mass`); columns: the axial, coronal
    and sagittal plane through ``point``; the lesion outlined in red where ``mask`` is given."""
    v = np.asarray(volume, dtype=np.float32)
    v = v[0] if v.ndim == 4 else v
    shares = {name: mass(m) for name, m in maps.items()}
    for name, m in shares.items():
        if m.shape != v.shape:
            raise ValueError(f"map {name!r} has shape {m.shape}, the volume {v.shape}: one (D, H, W) map per volume")
    top = max((float(np.take(m, i, axis=a).max()) for m in shares.values() for a, i in enumerate(point)), default=1)
    fig = Figure(figsize=(9, 2.9 * (1 + len(shares))), layout="constrained")
    axes = fig.subplots(1 + len(shares), 3, squeeze=False)
    image = None
    for a, axis_name in enumerate(AXIS_NAMES):
        plane, xlabel, ylabel = take_slice(v, axis_name, point[a])
        label_panel(axes[0, a], f"{axis_name} slice {point[a]}", xlabel, ylabel, plane)
        for row, (name, m) in enumerate(shares.items(), start=1):
            image = axes[row, a].imshow(take_slice(m, axis_name, point[a])[0], cmap="inferno", vmin=0, vmax=top)
            label_panel(axes[row, a], f"{name}\n{axis_name} plane", xlabel, ylabel)
        if mask is not None:
            lesion = take_slice(np.asarray(mask, dtype=float), axis_name, point[a])[0]
            for row in range(len(axes)):
                if lesion.any():
                    axes[row, a].contour(lesion, levels=[0.5], colors="red", linewidths=1.0)
    if image is not None:
        fig.colorbar(image, ax=axes[1:, :].ravel().tolist(), shrink=0.8, label="share of the map's mass per voxel")
    return finish_figure(fig, title, save)
