"""Cut a volume into the 2D slices of its three axes, and map token indices back.

Volumes are ``(B, C, D, H, W)``. Axis 0 is D (axial for scans stored z, y, x), axis 1 is H
(coronal), axis 2 is W (sagittal). Slices of different axes have different shapes when the
volume is not a cube, so each axis is returned as its own batch of 2D images; tokens are
concatenated axis by axis in ``axes`` order (the authors' order: 0, then 1, then 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

AXIS_NAMES = ("axial", "coronal", "sagittal")
MIN_SIDE = 8  # below this, stride-32 backbones leave BatchNorm too few values to train on


@dataclass(frozen=True)
class SliceLayout:
    """Which axes were sliced and how many slices each gave: the token -> slice map."""

    axes: tuple[int, ...]
    lengths: tuple[int, ...]

    @classmethod
    def for_shape(cls, spatial: tuple[int, int, int], axes: tuple[int, ...] = (0, 1, 2)) -> "SliceLayout":
        return cls(tuple(axes), tuple(spatial[a] for a in axes))

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def offsets(self) -> tuple[int, ...]:
        out, total = [], 0
        for n in self.lengths:
            out.append(total)
            total += n
        return tuple(out)

    def locate(self, token: int) -> tuple[int, int]:
        """Token index -> (volume axis, slice index along that axis)."""
        if not 0 <= token < self.num_tokens:
            raise IndexError(f"token {token} out of range: this layout has {self.num_tokens} tokens")
        for axis, start, n in zip(self.axes, self.offsets, self.lengths):
            if token < start + n:
                return axis, token - start
        raise AssertionError("unreachable")

    def token(self, axis: int, index: int) -> int:
        """(volume axis, slice index) -> token index; the inverse of :meth:`locate`."""
        pos = self.axes.index(axis)
        if not 0 <= index < self.lengths[pos]:
            raise IndexError(f"slice {index} out of range for axis {axis} with {self.lengths[pos]} slices")
        return self.offsets[pos] + index

    def split(self, per_token: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split the last dimension (tokens) into one tensor per axis, keyed by axis name."""
        parts = torch.split(per_token, list(self.lengths), dim=-1)
        return {AXIS_NAMES[a]: p for a, p in zip(self.axes, parts)}


def slice_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    """All slices of one axis as a batch of images: (B, C, D, H, W) -> (B * n, C, h, w)."""
    b, c = x.shape[:2]
    moved = x.movedim(2 + axis, 1)  # (B, n, C, h, w)
    return moved.reshape(b * moved.shape[1], c, *moved.shape[3:])


def check_volume(x: torch.Tensor, in_channels: int, min_side: int = MIN_SIDE) -> None:
    """Refuse input the models cannot use, with a message naming the problem."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor volume, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(
            f"expected a volume batch of shape (B, C, D, H, W), got {x.dim()} dimensions {tuple(x.shape)}; "
            "add the batch/channel axes with x[None] or x[:, None]")
    if x.shape[1] != in_channels:
        raise ValueError(f"the model expects {in_channels} channel(s) but the volume has {x.shape[1]} "
                         f"(shape {tuple(x.shape)}); build the model with in_channels={x.shape[1]}")
    if min(x.shape[2:]) < min_side:
        raise ValueError(f"volume {tuple(x.shape[2:])} is too small for the backbone: every side needs at "
                         f"least {min_side} voxels; resample or pad the volume")
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(f"volume batch contains NaN or inf voxels (batch items {bad}); clean or "
                         "re-preprocess the input")

