"""The 2.5D model: slices of all axes -> 2D encoder -> reducer -> linear classifier."""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .encoder import SliceEncoder
from .reducers import Reduced
from .slicing import SliceLayout, check_volume, slice_axis


class Output25D(NamedTuple):
    """Logits plus the explanation the forward pass produced on the way."""

    logits: torch.Tensor                      # (B, outputs)
    weights: torch.Tensor | None              # (B, N) attention over all slices, sums to 1
    head_weights: torch.Tensor | None         # (B, heads, N)
    layout: SliceLayout

    def by_axis(self, per_head: bool = False) -> dict[str, torch.Tensor]:
        """Attention split per axis: {"axial": (B, D), "coronal": (B, H), "sagittal": (B, W)}."""
        w = self.head_weights if per_head else self.weights
        if w is None:
            raise ValueError("this reducer has no attention weights; use the 'attention' method, "
                             "or HiResCAM (lib25d.explain) for models without attention")
        return self.layout.split(w)


class Model25D(nn.Module):
    """Any torchvision classifier turned into a 3D classifier through its slices."""

    def __init__(self, encoder: SliceEncoder, reducer: nn.Module, num_outputs: int,
                 axes: tuple[int, ...] = (0, 1, 2)):
        super().__init__()
        if not axes or any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be distinct values from (0, 1, 2), got {axes}")
        self.encoder = encoder
        self.reducer = reducer
        self.head = nn.Linear(reducer.out_features, num_outputs)
        self.axes = tuple(axes)

    def new_modules(self) -> list[nn.Module]:
        """Randomly initialised parts, trained alone during warm-up."""
        return [self.reducer, self.head]

    def configure(self, *, channels_last: bool | None = None, dedupe: bool | None = None,
                  checkpointing: bool | None = None, tiny_convs: bool | None = None,
                  fold_adapter: bool | None = None, chunk_size: int | None | str = "keep") -> "Model25D":
        """Performance switches of the slice encoder (see :class:`SliceEncoder`); returns self."""
        self.encoder.configure(channels_last=channels_last, dedupe=dedupe, checkpointing=checkpointing,
                               tiny_convs=tiny_convs, fold_adapter=fold_adapter, chunk_size=chunk_size)
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, SliceLayout]:
        """(B, C, D, H, W) -> slice tokens (B, N, F) and their layout."""
        check_volume(x, self.encoder.in_channels)
        b = x.shape[0]
        layout = SliceLayout.for_shape(tuple(x.shape[2:]), self.axes)
        # one encoder call per axis, as in the authors' code: BatchNorm batch statistics are per axis
        # and its running statistics move once per axis and step
        feats = [self.encoder(slice_axis(x, a)) for a in self.axes]
        tokens = torch.cat([f.reshape(b, -1, f.shape[-1]) for f in feats], dim=1)
        return tokens, layout

    def classify(self, tokens: torch.Tensor) -> tuple[torch.Tensor, Reduced]:
        reduced = self.reducer(tokens)
        return self.head(reduced.vector), reduced

    def forward_with_attention(self, x: torch.Tensor) -> Output25D:
        tokens, layout = self.encode(x)
        logits, reduced = self.classify(tokens)
        return Output25D(logits, reduced.weights, reduced.head_weights, layout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_attention(x).logits
