"""The paper's Figure 3 for any volume, per-head attention, and attention against a known lesion: plain
:class:`~matplotlib.figure.Figure` objects (no pyplot state), so any backend, Agg included, draws them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from mpl_toolkits.axes_grid1 import make_axes_locatable
from torch import nn

from ..models import AXIS_NAMES
from .attention import peak_voxels, slice_attention
from .cam import hirescam

PROFILE_COLOR = "tab:orange"


def _volume_and_profiles(
    volume: torch.Tensor | np.ndarray, attention: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One volume's first channel ``(D, H, W)`` and its three attention profiles, checked against it."""
    v = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    v = v[0] if v.ndim == 4 else v
    if v.ndim != 3:
        raise ValueError(f"expected one volume (C, D, H, W) or (D, H, W), got shape {v.shape}; index the batch first")
    profiles = {}
    for a, name in enumerate(AXIS_NAMES):
        if name not in attention:
            raise ValueError(f"Figure 3 needs attention along all three axes; {name} is missing")
        profiles[name] = np.asarray(attention[name], dtype=np.float64).reshape(-1)
        if len(profiles[name]) != v.shape[a]:
            raise ValueError(
                f"{name} attention has {len(profiles[name])} values but the volume has {v.shape[a]} "
                f"{name} slices; pass one volume's profiles (SliceAttention.by_axis()[name][b])"
            )
    return v.astype(np.float32), profiles


def label_panel(ax: Axes, title: str, xlabel: str, ylabel: str, image: np.ndarray | None = None) -> None:
    """Title and axis labels of a panel, drawing ``image`` in grey first if given."""
    if image is not None:
        ax.imshow(image, cmap="gray", interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)


def _edge_profile(ax: Axes, profile: np.ndarray, side: str, top: float, label: str) -> Axes:
    """Draw an attention profile as bars along the ``top`` or ``right`` edge of an image axis."""
    divider = make_axes_locatable(ax)
    if side == "top":
        edge = divider.append_axes("top", size="22%", pad=0.05, sharex=ax)
        edge.bar(np.arange(len(profile)), profile, width=1.0, color=PROFILE_COLOR)
        edge.set_ylim(0, top)
        edge.tick_params(labelbottom=False, labelsize=6)
        edge.yaxis.set_major_locator(MaxNLocator(2, prune="lower"))  # no "0" label on the image's "0"
        edge.set_ylabel(label, fontsize=7)
    else:
        edge = divider.append_axes("right", size="22%", pad=0.05, sharey=ax)
        edge.barh(np.arange(len(profile)), profile, height=1.0, color=PROFILE_COLOR)
        edge.set_xlim(0, top)
        edge.tick_params(labelleft=False, labelsize=6)
        edge.xaxis.set_major_locator(MaxNLocator(2, prune="lower"))
        edge.set_xlabel(label, fontsize=7)
    return edge


def _peak_slice(profiles: dict[str, np.ndarray]) -> tuple[str, int, float]:
    name = max(AXIS_NAMES, key=lambda n: profiles[n].max())
    i = int(profiles[name].argmax())
    return name, i, float(profiles[name][i])


def take_slice(volume: np.ndarray, axis_name: str, index: int) -> tuple[np.ndarray, str, str]:
    """A slice of an axis and the names of its image rows and columns."""
    rest = [n for n in AXIS_NAMES if n != axis_name]
    return np.take(volume, index, axis=AXIS_NAMES.index(axis_name)), f"{rest[1]} index", f"{rest[0]} index"


def finish_figure(fig: Figure, title: str | None, save: str | Path | None, fontsize: int = 11) -> Figure:
    if title:
        fig.suptitle(title, fontsize=fontsize)
    if save is not None:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(save, dpi=120)
    return fig


def figure3(
    volume: torch.Tensor | np.ndarray,
    attention: Mapping[str, np.ndarray],
    cam: np.ndarray | None = None,
    *,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Paper Figure 3 for one volume: the middle axial slice with the sagittal and coronal profiles along its
    edges, the middle coronal slice with the axial one, the most attended slice, and the axial slice through the
    peak of ``cam`` (the 3D model's HiResCAM, (D, H, W), or None). ``attention``: one volume's per-axis profiles,
    drawn on one scale so that sparsity reads across panels."""
    v, profiles = _volume_and_profiles(volume, attention)
    top = max(p.max() for p in profiles.values()) * 1.05 or 1.0
    fig = Figure(figsize=(16, 4.6), layout="constrained")
    ax = fig.subplots(1, 4)
    d, h = v.shape[0] // 2, v.shape[1] // 2
    label_panel(ax[0], "", "sagittal index", "coronal index", v[d])
    edge = _edge_profile(ax[0], profiles["sagittal"], "top", top, "sagittal")
    edge.set_title(f"middle axial slice ({d})", fontsize=9)  # above the profile, not hidden under it
    _edge_profile(ax[0], profiles["coronal"], "right", top, "coronal")
    label_panel(ax[1], f"middle coronal slice ({h})", "sagittal index", "axial index", v[:, h, :])
    _edge_profile(ax[1], profiles["axial"], "right", top, "axial")
    name, i, weight = _peak_slice(profiles)
    image, xlabel, ylabel = take_slice(v, name, i)
    label_panel(ax[2], f"highest attention: {name} slice {i} (weight {weight:.3f})", xlabel, ylabel, image)
    if cam is None:
        ax[3].text(0.5, 0.5, "no 3D model given", ha="center", va="center", transform=ax[3].transAxes, fontsize=9)
        ax[3].set_axis_off()
        return finish_figure(fig, title, save)
    cam = np.asarray(cam, dtype=np.float32)
    if cam.shape != v.shape:
        raise ValueError(f"CAM of shape {cam.shape} does not match the volume {v.shape}; pass one volume's map")
    d, h, w = peak_voxels(cam[None])[0]
    if d < 0:
        label_panel(
            ax[3],
            "HiResCAM (3D) is blank (no positive evidence)",
            "sagittal index",
            "coronal index",
            v[v.shape[0] // 2],
        )
    else:
        label_panel(ax[3], f"HiResCAM (3D) peak: axial slice {d}", "sagittal index", "coronal index", v[d])
        ax[3].imshow(cam[d], cmap="jet", alpha=0.45, vmin=0, vmax=float(cam.max()) or 1.0, interpolation="bilinear")
        ax[3].plot([w], [h], marker="+", color="white", markersize=10, markeredgewidth=2)
    return finish_figure(fig, title, save)


def head_figure(
    head_profiles: Mapping[str, np.ndarray], *, title: str | None = None, save: str | Path | None = None
) -> Figure:
    """Per-head attention of one volume: per axis a heads x slices heat map (readable at a glance, unlike 8 x 3
    bar charts) on one colour scale; ``head_profiles[name]`` = ``SliceAttention.by_axis(per_head=True)[name][b]``."""
    arrays = {name: np.asarray(head_profiles[name], dtype=np.float64) for name in AXIS_NAMES if name in head_profiles}
    if not arrays or any(a.ndim != 2 for a in arrays.values()) or len({a.shape[0] for a in arrays.values()}) != 1:
        raise ValueError(
            "head_profiles must map axis names to (heads, n) arrays of one volume, e.g. "
            "SliceAttention.by_axis(per_head=True)[name][b]"
        )
    heads = next(iter(arrays.values())).shape[0]
    top = max(a.max() for a in arrays.values()) or 1.0
    fig = Figure(figsize=(4.0 * len(arrays) + 0.8, 0.32 * heads + 1.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(arrays), sharey=True))
    for ax, (name, a) in zip(axes, arrays.items()):
        image = ax.imshow(a, aspect="auto", cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        ax.set_title(f"{name} slices", fontsize=9)
        ax.set_xlabel("slice index", fontsize=8)
        ax.set_yticks(range(heads))
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("head", fontsize=8)
    fig.colorbar(image, ax=list(axes), label="attention weight", shrink=0.9)
    return finish_figure(fig, title, save, fontsize=10)


def lesion_figure(
    volume: torch.Tensor | np.ndarray,
    attention: Mapping[str, np.ndarray],
    mask: np.ndarray,
    *,
    title: str | None = None,
    save: str | Path | None = None,
) -> Figure:
    """Where one volume's attention goes against its lesion mask: the most attended slice, lesion outlined; per axis
    the attention per slice, slices that cut the lesion shaded, uniform attention dashed."""
    v, profiles = _volume_and_profiles(volume, attention)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != v.shape:
        raise ValueError(f"mask of shape {mask.shape} does not match the volume {v.shape}; pass one volume's mask")
    uniform = 1.0 / sum(len(p) for p in profiles.values())
    top = max(max(p.max() for p in profiles.values()), uniform) * 1.1
    fig = Figure(figsize=(9, 6), layout="constrained")  # 2 x 2: readable at a book's column width
    ax = fig.subplots(2, 2).ravel()
    name, i, _ = _peak_slice(profiles)
    image, xlabel, ylabel = take_slice(v, name, i)
    label_panel(ax[0], f"most attended: {name} slice {i}", xlabel, ylabel, image)
    lesion = take_slice(mask.astype(float), name, i)[0]
    if lesion.any():
        ax[0].contour(lesion, levels=[0.5], colors="red", linewidths=1.2)
    for a, (axis_ax, axis_name) in enumerate(zip(ax[1:], AXIS_NAMES)):
        for k in np.flatnonzero(mask.any(axis=tuple(j for j in range(3) if j != a))):
            axis_ax.axvspan(k - 0.5, k + 0.5, color="red", alpha=0.15, lw=0)
        axis_ax.bar(np.arange(len(profiles[axis_name])), profiles[axis_name], width=0.9, color=PROFILE_COLOR)
        axis_ax.axhline(uniform, color="0.3", ls="--", lw=1)
        axis_ax.set_ylim(0, top)
        label_panel(axis_ax, f"{axis_name} slices (red: cut the lesion)", "slice index", "attention (dashed: uniform)")
    return finish_figure(fig, title, save)


def pointing_figure(summary: pd.DataFrame, *, title: str | None = None, save: str | Path | None = None) -> Figure:
    """Slice-level pointing game: how often the most attended slice cuts the lesion, with its 95 % interval,
    beside how often a random slice would (``summarize_pointing``'s slice rows)."""
    rows = summary[summary["level"] == "slice"].reset_index(drop=True)
    if rows.empty:
        raise ValueError("no slice-level rows: pass summarize_pointing(attention_pointing(model, data))")
    several = rows["method"].nunique() > 1
    labels = [
        ("all axes" if axis == "all" else axis) + (f"\n{method}" if several else "")
        for method, axis in zip(rows["method"], rows["axis"])
    ]
    x = np.arange(len(rows))
    fig = Figure(figsize=(1.4 * len(rows) + 2.2, 3.0), layout="constrained")
    ax = fig.subplots()
    err = np.vstack([rows["hit_rate"] - rows["hit_rate_ci_low"], rows["hit_rate_ci_high"] - rows["hit_rate"]])
    ax.bar(
        x - 0.2,
        rows["hit_rate"],
        width=0.4,
        yerr=err,
        capsize=3,
        color=PROFILE_COLOR,
        label="most attended slice (95 % interval)",
    )
    ax.bar(x + 0.2, rows["hit_chance"], width=0.4, color="0.7", label="a random slice (chance)")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("share of lesion volumes hit", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title:
        ax.set_title(title, fontsize=9)
    return finish_figure(fig, None, save)


def figure3_for(
    attention_model: nn.Module,
    volume: torch.Tensor | np.ndarray,
    model_3d: nn.Module | None = None,
    *,
    title: str | None = None,
    save: str | Path | None = None,
    heads_save: str | Path | None = None,
) -> tuple[Figure, Figure]:
    """Figure 3 and the per-head figure for one volume ``(C, D, H, W)``, computed from the models."""
    x = torch.as_tensor(np.asarray(volume), dtype=torch.float32)
    if x.dim() != 4:
        raise ValueError(f"expected one volume (C, D, H, W), got shape {tuple(x.shape)}")
    att = slice_attention(attention_model, x[None])
    cam = None if model_3d is None else hirescam(model_3d, x[None])[0]
    main = figure3(x, {k: v[0] for k, v in att.by_axis().items()}, cam, title=title, save=save)
    heads = head_figure({k: v[0] for k, v in att.by_axis(per_head=True).items()}, title=title, save=heads_save)
    return main, heads
