"""The 2.5D model: slices of all axes -> 2D encoder -> reducer -> linear classifier."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .slicing import SliceLayout, check_volume, slice_axis


class Output25D(NamedTuple):
    """Logits plus the explanation the forward pass produced on the way."""

    logits: torch.Tensor  # (B, outputs)
    weights: torch.Tensor | None  # (B, N) attention over all slices, sums to 1
    head_weights: torch.Tensor | None  # (B, heads, N)
    layout: SliceLayout

    def by_axis(self, per_head: bool = False) -> dict[str, torch.Tensor]:
        """Attention split per axis: {"axial": (B, D), "coronal": (B, H), "sagittal": (B, W)}."""
        w = self.head_weights if per_head else self.weights
        if w is None:
            raise ValueError(
                "this reducer has no attention weights; use the 'attention' method, "
                "or HiResCAM (lib25d.explain) for models without attention"
            )
        return self.layout.split(w)


class Model25D(nn.Module):
    """Any torchvision classifier turned into a 3D classifier through its slices."""

    def __init__(self, encoder: nn.Module, reducer: nn.Module, num_outputs: int, axes: tuple[int, ...] = (0, 1, 2)):
        super().__init__()
        if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct values from (0, 1, 2), got {axes}")
        self.encoder, self.reducer = encoder, reducer
        self.head = nn.Linear(reducer.out_features, num_outputs)
        self.axes = tuple(axes)

    def new_modules(self) -> list[nn.Module]:
        """Randomly initialised parts, trained alone during warm-up."""
        return [self.reducer, self.head]

    def layout(self, x: torch.Tensor) -> SliceLayout:
        return SliceLayout.for_shape(tuple(x.shape[2:]), self.axes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> slice tokens (B, N, F), axis by axis (see :meth:`layout`)."""
        check_volume(x, self.encoder.in_channels)
        # one encoder call per axis, as in the authors' code: BatchNorm batch statistics are per axis
        # and its running statistics move once per axis and step
        feats = [self.encoder(slice_axis(x, a)) for a in self.axes]
        return torch.cat([f.reshape(x.shape[0], -1, f.shape[-1]) for f in feats], dim=1)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        """Slice tokens -> logits (the part a warm-up trains, on cached tokens or fresh ones)."""
        return self.head(self.reducer(tokens).vector)

    def forward_with_attention(self, x: torch.Tensor) -> Output25D:
        reduced = self.reducer(self.features(x))
        return Output25D(self.head(reduced.vector), reduced.weights, reduced.head_weights, self.layout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))
