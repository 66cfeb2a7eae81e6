"""Per-slice attention of a 2.5D model as numpy arrays; how sparse it is (the paper says by eye, Figure 3,
that attention is sparse and partly on empty background slices); voxel maps from the per-axis profiles.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data import VolumeDataset
from ..models import AXIS_NAMES, METHODS, Model25D, SliceLayout
from ..models.spatial import SpatialModel25D

EMPTY_THRESHOLD = 0.01  # |voxel - background| at or below this counts as background (about 2.5 grey levels of 255)
MODES = ("sum", "product")


@dataclass(frozen=True)
class SliceAttention:
    """Attention of a batch of volumes, averaged over heads ``(B, N)`` and per head ``(B, heads, N)``;
    tokens in :class:`~lib25d.models.SliceLayout` order."""

    weights: np.ndarray
    head_weights: np.ndarray
    layout: SliceLayout
    logits: np.ndarray

    def by_axis(self, per_head: bool = False) -> dict[str, np.ndarray]:
        """``{"axial": (B, D), "coronal": (B, H), "sagittal": (B, W)}`` (``(B, heads, n)`` per head)."""
        return split_tokens(self.head_weights if per_head else self.weights, self.layout)


def split_tokens(per_token: np.ndarray, layout: SliceLayout) -> dict[str, np.ndarray]:
    """Split the last (token) dimension into one array per axis, keyed by axis name."""
    if per_token.shape[-1] != layout.num_tokens:
        raise ValueError(
            f"{per_token.shape[-1]} values per volume but the layout has {layout.num_tokens} slices; "
            "pass weights computed for volumes of this shape"
        )
    parts = np.split(per_token, layout.offsets[1:], axis=-1)
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


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def volume_batch(data: VolumeDataset, index: np.ndarray | slice) -> torch.Tensor:
    """Volumes ``(B, C, D, H, W)`` as float32; with ``labels_of`` and ``batches``, the benchmarks' loop."""
    return torch.as_tensor(np.asarray(data.volumes[index], dtype=np.float32))


def labels_of(data: VolumeDataset, index: np.ndarray | slice) -> np.ndarray:
    return np.asarray(data.labels)[index].reshape(-1)


def batches(indices: np.ndarray, batch_size: int) -> Iterable[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(indices), batch_size):
        yield indices[start : start + batch_size]


@torch.no_grad()
def slice_attention(model: nn.Module, volumes: torch.Tensor | np.ndarray) -> SliceAttention:
    """Attention of ``model`` for a volume batch ``(B, C, D, H, W)``: one forward pass in eval mode; ValueError
    for models without slice weights (reducers mean/max/lstm/transformer, 3d/acs baselines); gated has them."""
    out = None
    if isinstance(model, Model25D):
        x = torch.as_tensor(volumes, dtype=torch.float32).to(model_device(model))
        with eval_mode(model):
            out = model.forward_with_attention(x)
    if out is None or out.weights is None or out.head_weights is None:
        what = (
            f"this 2.5D model's reducer ({type(model.reducer).__name__}) has no attention weights"
            if isinstance(model, Model25D)
            else f"a {type(model).__name__} has no slice attention"
        )
        raise ValueError(
            f"{what}: slice weights exist only for the methods {', '.join(m for m, d in METHODS.items() if d.weighs)}; "
            "explain this model with HiResCAM instead (lib25d.explain.hirescam, for the 3d and acs baselines)"
        )
    weights, head_weights, logits = (t.float().cpu().numpy() for t in (out.weights, out.head_weights, out.logits))
    return SliceAttention(weights, head_weights, out.layout, logits)


def model_volumes(model: nn.Module, volumes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Volumes on the model's device, in its floating type (a float64 model is compared exactly)."""
    p = next(model.parameters())
    return torch.as_tensor(np.asarray(volumes)).to(device=p.device, dtype=p.dtype)


def spatial_model(model: nn.Module) -> SpatialModel25D:
    """``model`` if it has (slice, cell) tokens, else one ValueError saying how to build one."""
    if not isinstance(model, SpatialModel25D):
        raise ValueError(f"a {type(model).__name__} has no (slice, cell) tokens; build it with method 'spatial'")
    return model


@torch.no_grad()
def spatial_map(model: nn.Module, volumes: torch.Tensor | np.ndarray) -> np.ndarray:
    """A spatial model's own voxel map ``(B, D, H, W)``: the attention mass per voxel, summing to 1 per volume."""
    with eval_mode(spatial_model(model)):
        return model.forward_with_attention(model_volumes(model, volumes)).voxels.double().cpu().numpy()


def top_k_tokens(weights: np.ndarray, k: int) -> np.ndarray:
    """Indices ``(B, k)`` of the k largest weights per row, largest first (ties: lower index first)."""
    weights = np.asarray(weights)
    if not 1 <= k <= weights.shape[-1]:
        raise ValueError(f"k={k} is outside 1..{weights.shape[-1]} (the number of slices); choose a smaller k")
    return np.argsort(-weights, axis=-1, kind="stable")[..., :k]


def attention_entropy(weights: np.ndarray) -> np.ndarray:
    """Entropy in nats of each volume's attention over all slices: 0 for one slice, log N for uniform."""
    w = np.asarray(weights, dtype=np.float64)
    if (w < -1e-3).any() or not np.allclose(w.sum(-1), 1.0, atol=1e-3):
        raise ValueError(
            "attention weights must be non-negative and sum to 1 over all slices of a volume; "
            "pass SliceAttention.weights (all axes together), not one axis or one head's split"
        )
    w = np.clip(w, 0.0, None)
    return -(w * np.log(np.where(w > 0, w, 1.0))).sum(-1)


def effective_slices(weights: np.ndarray) -> np.ndarray:
    """exp(entropy): the number of equally weighted slices with the same entropy (1 = one slice, N = uniform)."""
    return np.exp(attention_entropy(weights))


def slice_any(voxels: np.ndarray, layout: SliceLayout) -> np.ndarray:
    """``(B, D, H, W)`` bool -> ``(B, N)``: does each slice (token order) contain a True voxel?"""
    voxels = np.asarray(voxels, dtype=bool)
    if voxels.ndim != 4:
        raise ValueError(f"expected a (B, D, H, W) boolean array, got shape {voxels.shape}")
    if tuple(voxels.shape[1 + a] for a in layout.axes) != layout.lengths:
        raise ValueError(
            f"array of shape {voxels.shape[1:]} does not match the attention layout "
            f"{dict(zip((AXIS_NAMES[a] for a in layout.axes), layout.lengths))}"
        )
    parts = [voxels.any(axis=tuple(1 + o for o in range(3) if o != a)) for a in layout.axes]
    return np.concatenate(parts, axis=1)


def empty_slices(
    volumes: torch.Tensor | np.ndarray, layout: SliceLayout, background: float = 0.0, threshold: float = EMPTY_THRESHOLD
) -> np.ndarray:
    """``(B, N)`` bool: slices whose every voxel (all channels) is within ``threshold`` of ``background``."""
    x = volumes.detach().cpu().numpy() if isinstance(volumes, torch.Tensor) else np.asarray(volumes)
    if x.ndim != 5:
        raise ValueError(f"expected volumes (B, C, D, H, W), got shape {x.shape}")
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return ~slice_any((np.abs(x - background) > threshold).any(axis=1), layout)


def background_share(weights: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Share of each volume's attention that lies on empty slices, ``(B,)``."""
    return (np.asarray(weights) * np.asarray(empty, dtype=bool)).sum(-1)


def sparsity_table(
    att: SliceAttention, volumes: torch.Tensor | np.ndarray, background: float = 0.0, threshold: float = EMPTY_THRESHOLD
) -> pd.DataFrame:
    """One row per volume: entropy, effective slices, largest weight and attention on background, beside
    ``empty_slice_share``, what uniform attention would put on the background."""
    empty = empty_slices(volumes, att.layout, background, threshold)
    return pd.DataFrame(
        {
            "num_slices": att.layout.num_tokens,
            "entropy": attention_entropy(att.weights),
            "effective_slices": effective_slices(att.weights),
            "max_weight": att.weights.max(-1),
            "background_share": background_share(att.weights, empty),
            "empty_slice_share": empty.mean(-1),
        }
    )


def voxel_map(profiles: Mapping[str, np.ndarray], mode: str = "sum") -> np.ndarray:
    """Per-axis profiles ``{"axial": (B, D), "coronal": (B, H), "sagittal": (B, W)}`` -> maps ``(B, D, H, W)``
    summing to 1 per volume (unbatched: ``(D, H, W)``), the refinement the paper's Discussion proposes.

    ``sum``: a[d] + b[h] + c[w], high on each attended plane (a union); ``product``: a[d] * b[h] * c[w], high only
    where attended planes cross (an intersection). Profiles keep each axis's share of the total attention, so an
    ignored axis adds little to ``sum``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown voxel map mode {mode!r}; valid: {', '.join(MODES)}")
    missing = [name for name in AXIS_NAMES if name not in profiles]
    if missing:
        raise ValueError(
            f"a voxel map needs attention along all three axes; missing {', '.join(missing)} "
            "(was the model built with fewer axes?)"
        )
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
        raise ValueError(
            f"the {mode} of the attention profiles is zero everywhere for some volume; "
            "cannot normalise it to a map (are the profiles all zero?)"
        )
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
