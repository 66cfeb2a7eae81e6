"""The book's figures from plain data (histories, tidy frames, volumes): learning curves, Figure 1 (the method
on a volume), Figure 2 (AUROC boxes). The explanation figures, Figure 3 among them, are the library's
(:mod:`lib25d.explain.figures`).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lib25d.models import AXIS_NAMES, METHODS

from .published import v2_method


def learning_curves(history: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Train/validation loss and validation AUROC/ACC per epoch; warm-up epochs shaded."""
    frame = pd.DataFrame(list(history))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), constrained_layout=True)
    for ax in (left, right):
        warm = frame.epoch[frame.phase == "warm-up"]
        if len(warm):
            ax.axvspan(warm.min() - 0.5, warm.max() + 0.5, color="0.92", label="warm-up (head only)")
        ax.set_xlabel("epoch")
    left.plot(frame.epoch, frame.train_loss, "o-", label="train loss")
    left.plot(frame.epoch, frame.val_loss, "s-", label="validation loss")
    left.set_ylabel("loss")
    right.plot(frame.epoch, frame.val_auc, "o-", label="validation AUROC")
    right.plot(frame.epoch, frame.val_acc, "s-", label="validation ACC")
    right.set_ylim(0, 1.02)
    for ax in (left, right):
        ax.legend(fontsize=8)
        ax.set_xticks(frame.epoch)
    if title:
        fig.suptitle(title)
    return fig


def auroc_boxes(
    frame: pd.DataFrame,
    methods: Sequence[str],
    paper: pd.DataFrame | None = None,
    metric: str = "auc",
    scratch: pd.DataFrame | None = None,
) -> Figure:
    """Figure 2: per dataset, a box of per-seed test AUROC per method; a missing run is written in ("missing"),
    the paper's mean is a red diamond, MedMNIST v2's from-scratch ResNet-18 (``scratch``) a grey cross."""
    datasets = list(dict.fromkeys(frame.dataset))
    cols = min(3, max(1, len(datasets)))
    rows = math.ceil(len(datasets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), squeeze=False, constrained_layout=True)
    published, v2 = (
        {} if t is None else t[t.metric == metric].set_index(["dataset", "method"])["value"].to_dict()
        for t in (paper, scratch)
    )
    for ax, dataset in zip(axes.flat, datasets):
        sub = frame[frame.dataset == dataset]
        ax.axhline(50, color="0.6", lw=0.8, ls="--", zorder=0)  # chance: the tables mark cells whose interval holds it
        for i, method in enumerate(methods, start=1):
            values = sub[(sub.method == method) & (sub.status == "ok")][metric].dropna().to_numpy() * 100
            if len(values):
                ax.boxplot([values], positions=[i], widths=0.55, showfliers=False)
                ax.plot(np.full(len(values), i), values, "o", color="C0", alpha=0.6, ms=4)
            else:
                ax.text(i, 50, "missing", rotation=90, ha="center", va="center", color="0.4", fontsize=8)
            if (dataset, method) in published:
                ax.plot(
                    [i],
                    [published[(dataset, method)] * 100],
                    "D",
                    color="C3",
                    ms=6,
                    label="paper (mean of 5)" if i == 1 else None,
                )
            reference = (dataset, v2_method(method))
            if reference in v2:
                ax.plot(
                    [i],
                    [v2[reference] * 100],
                    "x",
                    color="0.3",
                    ms=7,
                    mew=1.5,
                    label="MedMNIST v2, from scratch" if i == 1 else None,
                )
        ax.set_xticks(range(1, len(methods) + 1), [METHODS[m].label if m in METHODS else m for m in methods])
        ax.set_xlim(0.4, len(methods) + 0.6)
        ax.set_ylim(0, 100)
        ax.set_title(dataset)
        ax.set_ylabel("test AUROC (%)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="lower right")
    for ax in list(axes.flat)[len(datasets) :]:
        ax.set_visible(False)
    return fig


def method_figure(
    volume: np.ndarray,
    attention: Mapping[str, np.ndarray],
    pooled: np.ndarray | None = None,
    title: str = "",
    n_slices: int = 5,
) -> Figure:
    """Figure 1: (A) slices of a (D, H, W) volume along the three axes, (B) their attention (per-axis weights,
    together summing to 1), (C) the weighted sum, (D) the attention-pooled feature vector ``pooled``."""
    volume = np.asarray(volume, dtype=np.float32)
    rows = 4 if pooled is not None else 3
    fig = plt.figure(figsize=(12, 2.6 * rows), constrained_layout=True)
    grid = fig.add_gridspec(rows, 3, height_ratios=[1.3, 0.8, 1, 0.25][:rows])
    top = max(float(np.max(attention[a])) for a in AXIS_NAMES)
    for k, name in enumerate(AXIS_NAMES):
        w = np.asarray(attention[name])
        best = int(np.argmax(w))
        picks = sorted(
            set(np.linspace(len(w) // 6, len(w) - 1 - len(w) // 6, n_slices).round().astype(int).tolist()) | {best}
        )
        # the picked slices three to a row, a one-pixel NaN gap below and right of each
        cells = [
            np.pad(np.take(volume, i, axis=k).astype(np.float64), ((0, 1), (0, 1)), constant_values=np.nan)
            for i in picks
        ]
        cells += [np.full_like(cells[0], np.nan)] * (-len(cells) % 3)
        montage = np.concatenate([np.concatenate(cells[r : r + 3], axis=1) for r in range(0, len(cells), 3)])
        ax = fig.add_subplot(grid[0, k])
        ax.imshow(montage[:-1, :-1], cmap="gray", vmin=0, vmax=max(1e-6, float(volume.max())))
        ax.set_title(f"(A) {name} slices {', '.join(map(str, picks))}", fontsize=9)
        ax.axis("off")
        ax = fig.add_subplot(grid[1, k])
        ax.bar(np.arange(len(w)), w, color=["C3" if i == best else "C0" for i in range(len(w))])
        ax.set_ylim(0, top * 1.1)
        ax.set_xlabel(f"{name} slice")
        ax.set_ylabel("attention")
        ax.set_title(f"(B) {name}: {w.sum():.0%} of all attention, peak at slice {best}", fontsize=9)
        ax = fig.add_subplot(grid[2, k])
        mean = np.asarray(w, dtype=np.float64)  # what the model 'sums' in image space
        mean = mean / mean.sum() if mean.sum() > 0 else np.full_like(mean, 1 / len(mean))
        ax.imshow(np.tensordot(mean, np.moveaxis(volume, k, 0), axes=1), cmap="magma")
        ax.set_title(f"(C) attention-weighted sum of {name} slices", fontsize=9)
        ax.axis("off")
    if pooled is not None:
        ax = fig.add_subplot(grid[3, :])
        ax.imshow(np.asarray(pooled, dtype=np.float32).reshape(1, -1), aspect="auto", cmap="coolwarm")
        ax.set_yticks([])
        ax.set_title(f"(D) pooled feature vector ({np.size(pooled)} values) -> linear classifier", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def png(fig: Figure, dpi: int = 110):
    """A figure as an IPython PNG image for ``myst_nb.glue``, which glues ``Figure()`` figures (lib25d.explain)
    as their text repr."""
    from IPython.display import Image  # the notebooks' kernel has it; the study's scripts need not

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return Image(data=buffer.getvalue(), format="png")


def placeholder(text: str, size: tuple[float, float] = (8, 1.6)) -> Figure:
    """A figure that says why the real one is missing: the book shows the gap, it never hides it."""
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=10, color="0.3")
    ax.axis("off")
    return fig
