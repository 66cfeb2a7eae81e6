"""Per-slice attention of a 2.5D model, and how sparse it is.

The attention pooling weights (one per slice of every axis, summing to 1) are the paper's
explanation. This module reads them out of a :class:`~lib25d.models.Model25D` as numpy
arrays, splits them per axis, ranks slices, and measures the two things the paper reports by
eye (Figure 3): attention is sparse, and a noticeable part of it sits on empty background slices.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..models import AXIS_NAMES, Model25D, SliceLayout

EMPTY_THRESHOLD = 0.01  # |voxel - background| at or below this counts as background (about 2.5 grey levels of 255)


class SliceRef(NamedTuple):
    """One slice: its axis name, its index along that axis and its attention weight."""

    axis: str
    index: int
    weight: float


@dataclass(frozen=True)
class SliceAttention:
    """Attention of a batch of volumes: averaged over heads ``(B, N)`` and per head ``(B, heads, N)``.

    Tokens are ordered as in :class:`~lib25d.models.SliceLayout` (axis 0, then 1, then 2).
    """

    weights: np.ndarray
    head_weights: np.ndarray
    layout: SliceLayout
    logits: np.ndarray

    @property
    def num_heads(self) -> int:
        return int(self.head_weights.shape[1])

    def by_axis(self, per_head: bool = False) -> dict[str, np.ndarray]:
        """``{"axial": (B, D), "coronal": (B, H), "sagittal": (B, W)}`` (``(B, heads, n)`` per head)."""
        w = self.head_weights if per_head else self.weights
        return split_tokens(w, self.layout)

    def locate(self, token: int) -> tuple[str, int]:
        """Token index -> (axis name, slice index)."""
        axis, index = self.layout.locate(int(token))
        return AXIS_NAMES[axis], index


def split_tokens(per_token: np.ndarray, layout: SliceLayout) -> dict[str, np.ndarray]:
    """Split the last (token) dimension into one array per axis, keyed by axis name."""
    if per_token.shape[-1] != layout.num_tokens:
        raise ValueError(f"{per_token.shape[-1]} values per volume but the layout has {layout.num_tokens} slices; "
                         "pass weights computed for volumes of this shape")
    cuts = np.cumsum(layout.lengths)[:-1]
    parts = np.split(per_token, cuts, axis=-1)
    return {AXIS_NAMES[a]: p for a, p in zip(layout.axes, parts)}


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Explain in eval mode (BatchNorm running statistics), then give the model back as it was."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _no_attention(model: nn.Module) -> ValueError:
    if isinstance(model, Model25D):
        what = f"this 2.5D model's reducer ({type(model.reducer).__name__}) has no attention weights"
    else:
        what = f"a {type(model).__name__} has no slice attention"
    return ValueError(f"{what}: slice attention exists only for method 'attention'; explain this model with "
                      "HiResCAM instead (lib25d.explain.hirescam, for the 3d and acs baselines)")


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def slice_attention(model: nn.Module, volumes: torch.Tensor | np.ndarray) -> SliceAttention:
    """Attention of ``model`` for a volume batch ``(B, C, D, H, W)``; one forward pass in eval mode.

    Raises ValueError for models without attention (reducers mean/max/lstm/transformer, the
    3d/acs baselines) and, through the model's own input check, for volumes of the wrong shape.
    """
    if not isinstance(model, Model25D):
        raise _no_attention(model)
    x = torch.as_tensor(volumes, dtype=torch.float32).to(model_device(model))
    with eval_mode(model):
        out = model.forward_with_attention(x)
    if out.weights is None or out.head_weights is None:
        raise _no_attention(model)
    return SliceAttention(out.weights.float().cpu().numpy(), out.head_weights.float().cpu().numpy(),
                          out.layout, out.logits.float().cpu().numpy())


def top_k_tokens(weights: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(B, k)`` of the k largest weights per row, largest first (ties: lower index first)."""
    weights = np.asarray(weights)
    if not 1 <= k <= weights.shape[-1]:
        raise ValueError(f"k={k} is outside 1..{weights.shape[-1]} (the number of slices); choose a smaller k")
    order = np.argsort(-weights, axis=-1, kind="stable")
    return order[..., :k]


def top_k_slices(att: SliceAttention, k: int) -> list[list[SliceRef]]:
    """Per volume, the k slices with the highest attention over all axes, highest first."""
    tokens = top_k_tokens(att.weights, k)
    return [[SliceRef(*att.locate(t), float(att.weights[b, t])) for t in row] for b, row in enumerate(tokens)]


def top_k_per_axis(att: SliceAttention, k: int) -> dict[str, np.ndarray]:
    """Per axis, slice indices ``(B, k)`` with the highest attention within that axis, highest first."""
    return {name: top_k_tokens(w, k) for name, w in att.by_axis().items()}


def _check_distribution(weights: np.ndarray, atol: float = 1e-3) -> np.ndarray:
    weights = np.asarray(weights, dtype=np.float64)
    if (weights < -atol).any() or not np.allclose(weights.sum(-1), 1.0, atol=atol):
        raise ValueError("attention weights must be non-negative and sum to 1 over all slices of a volume; "
                         "pass SliceAttention.weights (all axes together), not one axis or one head's split")
    return np.clip(weights, 0.0, None)


def attention_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy in nats of each volume's attention over all slices: 0 for one slice, log N for uniform."""
    w = _check_distribution(weights)
    logs = np.log(np.where(w > 0, w, 1.0))
    return -(w * logs).sum(-1)


def effective_slices(weights: np.ndarray) -> np.ndarray:
    """exp(entropy): the number of equally weighted slices with the same entropy (1 = one slice, N = uniform)."""
    return np.exp(attention_entropy(weights))


def slice_any(voxels: np.ndarray, layout: SliceLayout) -> np.ndarray:
    """``(B, D, H, W)`` bool -> ``(B, N)``: does each slice (token order) contain a True voxel?"""
    voxels = np.asarray(voxels, dtype=bool)
    if voxels.ndim != 4:
        raise ValueError(f"expected a (B, D, H, W) boolean array, got shape {voxels.shape}")
    if tuple(voxels.shape[1 + a] for a in layout.axes) != layout.lengths:
        raise ValueError(f"array of shape {voxels.shape[1:]} does not match the attention layout "
                         f"{dict(zip((AXIS_NAMES[a] for a in layout.axes), layout.lengths))}")
    parts = [voxels.any(axis=tuple(1 + o for o in range(3) if o != a)) for a in layout.axes]
    return np.concatenate(parts, axis=1)


def empty_slices(volumes: torch.Tensor | np.ndarray, layout: SliceLayout, background: float = 0.0,
                 threshold: float = EMPTY_THRESHOLD) -> np.ndarray:
    """``(B, N)`` bool: slices whose every voxel (all channels) is within ``threshold`` of ``background``."""
    x = volumes.detach().cpu().numpy() if isinstance(volumes, torch.Tensor) else np.asarray(volumes)
    if x.ndim != 5:
        raise ValueError(f"expected volumes (B, C, D, H, W), got shape {x.shape}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    foreground = (np.abs(x - background) > threshold).any(axis=1)
    return ~slice_any(foreground, layout)


def background_share(weights: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Share of each volume's attention that lies on empty slices, ``(B,)``."""
    return (np.asarray(weights) * np.asarray(empty, dtype=bool)).sum(-1)


def sparsity_table(att: SliceAttention, volumes: torch.Tensor | np.ndarray, background: float = 0.0,
                   threshold: float = EMPTY_THRESHOLD) -> pd.DataFrame:
    """One row per volume: entropy, effective slices, largest weight, and attention on background.

    ``empty_slice_share`` (the share of slices that are empty) is what uniform attention would
    put on the background: compare ``background_share`` with it.
    """
    empty = empty_slices(volumes, att.layout, background, threshold)
    return pd.DataFrame({
        "num_slices": att.layout.num_tokens,
        "entropy": attention_entropy(att.weights),
        "effective_slices": effective_slices(att.weights),
        "max_weight": att.weights.max(-1),
        "background_share": background_share(att.weights, empty),
        "empty_slice_share": empty.mean(-1),
    })
