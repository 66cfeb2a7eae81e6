"""Cut a volume ``(B, C, D, H, W)`` into the 2D slices of its axes, and map tokens back to slices.

Axis 0 is D, head-foot (axial slices), 1 is H, anterior-posterior (coronal), 2 is W, left-right (sagittal):
the names are true by construction for scans, which :mod:`lib25d.data.preprocess` turns to an orientation code
before anything else, and for the synthetic set; MedMNIST's volumes are taken as stored. Each axis is its own
batch of 2D images (shapes differ when the volume is not a cube); tokens are concatenated axis by axis in
``axes`` order (the authors': 0, 1, 2).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

import torch

AXIS_NAMES = ("axial", "coronal", "sagittal")


@dataclass(frozen=True)
class SliceLayout:
    """Which axes were sliced and how many slices each gave: the token <-> slice map."""

    axes: tuple[int, ...]
    lengths: tuple[int, ...]

    @classmethod
    def for_shape(cls, spatial: tuple[int, int, int], axes: tuple[int, ...] = (0, 1, 2)) -> SliceLayout:
        return cls(tuple(axes), tuple(spatial[a] for a in axes))

    @property
    def num_tokens(self) -> int:
        return sum(self.lengths)

    @property
    def offsets(self) -> tuple[int, ...]:
        return tuple(itertools.accumulate(self.lengths[:-1], initial=0))

    def locate(self, token: int) -> tuple[int, int]:
        """Token index -> (volume axis, slice index along that axis)."""
        if not 0 <= token < self.num_tokens:
            raise IndexError(f"token {token} out of range: this layout has {self.num_tokens} tokens")
        pos = bisect.bisect_right(self.offsets, token) - 1
        return self.axes[pos], token - self.offsets[pos]

    def token(self, axis: int, index: int) -> int:
        """(volume axis, slice index) -> token index; the inverse of :meth:`locate`."""
        pos = self.axes.index(axis)
        if not 0 <= index < self.lengths[pos]:
            raise IndexError(f"slice {index} out of range for axis {axis} with {self.lengths[pos]} slices")
        return self.offsets[pos] + index

    def split(self, per_token: torch.Tensor) -> dict[str, torch.Tensor]:
        """The last dimension (tokens) as one tensor per axis, keyed by axis name."""
        return {AXIS_NAMES[a]: p for a, p in zip(self.axes, torch.split(per_token, list(self.lengths), dim=-1))}


def slice_axis(x: torch.Tensor, axis: int) -> torch.Tensor:
    """All slices of one axis as a batch of images: (B, C, D, H, W) -> (B * n, C, h, w)."""
    moved = x.movedim(2 + axis, 1)  # (B, n, C, h, w)
    return moved.reshape(x.shape[0] * moved.shape[1], *moved.shape[2:])


def check_volume(x: torch.Tensor, in_channels: int) -> None:
    """Refuse input the models cannot use, with a message naming the problem."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor volume, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(
            f"expected a volume batch of shape (B, C, D, H, W), got {x.dim()} dimensions {tuple(x.shape)}; "
            "add the batch/channel axes with x[None] or x[:, None]"
        )
    if x.shape[1] != in_channels:
        raise ValueError(
            f"the model expects {in_channels} channel(s) but the volume has {x.shape[1]} "
            f"(shape {tuple(x.shape)}); build the model with in_channels={x.shape[1]}"
        )
    if min(x.shape[2:]) < 8:  # below this, stride-32 backbones leave BatchNorm too few values to train on
        raise ValueError(
            f"volume {tuple(x.shape[2:])} is too small for the backbone: every side needs at "
            "least 8 voxels; resample or pad the volume"
        )
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten().tolist()
        raise ValueError(
            f"volume batch contains NaN or inf voxels (batch items {bad}); clean or re-preprocess the input"
        )
