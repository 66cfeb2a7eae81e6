"""Spatial attention (beyond the paper, issue 27): attention pooling over (slice, cell) tokens of all three axes,
so the forward pass says *where in the slice* as well as *which slice*.

The paper's Discussion leaves pixel-level attribution open and prefers "spatial attention mechanisms" to
multiplying or adding slice profiles. Here the slice encoder keeps a spatial grid and the paper's attention
pooling (``nn.MultiheadAttention``, 8 heads, the mean token as the query) weighs every (slice, cell) token of all
three axes at once. Two ways to make the tokens (``tokens``):

- ``"layer2"`` (the default; or another ResNet stage): the torchvision ResNet stops after that stage and each
  position of its feature map is a token (4x4 at 28^3 for layer2: 1344 tokens of 128 features; 2x2 for layer3);
- ``"patch:G"``: the authors' dropped ``patchify`` option, one stage: each slice is cut into GxG patches and every
  patch is encoded by the whole network alone, so a token sees only its own box.

Measured on the synthetic planted-lesion set (cpu schedule, seed 0; voxel pointing within 2 voxels / test AUROC):
layer2 0.89 / 0.95, layer3 0.09 / 0.96 (its map peaked on slices at the body's edge, not the lesion), patch:4
0.00 / 0.61 (7x7 patches, each encoded alone, did not train in 3 + 3 epochs): hence layer2.

Every token stands for a box of voxels: one slice along its axis times one cell of a grid that partitions the slice
(:func:`cell_edges`, exact for sides the grid does not divide). Spreading each token's weight evenly over its box
gives the voxel map: it sums to 1 per volume, and each axis's part to that axis's share of the attention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .backbone import SliceEncoder, Weights
from .model25d import Model25D, Output25D
from .reducers import AttentionPool
from .slicing import SliceLayout, check_volume, slice_axis

STAGES = ("layer1", "layer2", "layer3", "layer4")
DEFAULT_TOKENS = "layer2"  # measured against layer3 and patch:4 on the synthetic set (issue 27)


def cell_edges(n: int, cells: int) -> tuple[int, ...]:
    """``cells + 1`` edges ``floor(i * n / cells)``: cells of sizes differing by at most one that cover 0..n once."""
    if not 1 <= cells <= n:
        raise ValueError(f"cannot cut {n} voxels into {cells} non-empty cells; use at most {n} cells")
    return tuple(i * n // cells for i in range(cells + 1))


@dataclass(frozen=True)
class TokenGrid:
    """Which voxels each token covers: tokens go axis by axis (``axes`` order), then slice, then cell row, then
    cell column; a slice of axis ``a`` is the plane of the two other axes, in volume order (rows first)."""

    shape: tuple[int, int, int]  # (D, H, W)
    axes: tuple[int, ...]
    cells: tuple[tuple[int, int], ...]  # per axis: (rows, columns) of the grid on its slices

    @property
    def slices(self) -> SliceLayout:
        return SliceLayout.for_shape(self.shape, self.axes)

    def plane(self, axis: int) -> tuple[int, int]:
        """The sides of a slice of ``axis``: (rows, columns) in voxels."""
        rows, cols = (self.shape[o] for o in range(3) if o != axis)
        return rows, cols

    def edges(self, pos: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Row and column edges of the grid on the slices of the ``pos``-th axis."""
        (rows, cols), (p, q) = self.cells[pos], self.plane(self.axes[pos])
        return cell_edges(p, rows), cell_edges(q, cols)

    @property
    def counts(self) -> tuple[int, ...]:
        """Tokens per axis."""
        return tuple(self.shape[a] * r * c for a, (r, c) in zip(self.axes, self.cells))

    @property
    def num_tokens(self) -> int:
        return sum(self.counts)

    def box(self, token: int) -> tuple[slice, slice, slice]:
        """The voxels of one token as index slices into a (D, H, W) volume."""
        if not 0 <= token < self.num_tokens:
            raise IndexError(f"token {token} out of range: this grid has {self.num_tokens} tokens")
        pos = 0
        while token >= self.counts[pos]:
            token, pos = token - self.counts[pos], pos + 1
        (rows, cols), (row_edges, col_edges) = self.cells[pos], self.edges(pos)
        index, cell = divmod(token, rows * cols)
        i, j = divmod(cell, cols)
        plane = iter((slice(row_edges[i], row_edges[i + 1]), slice(col_edges[j], col_edges[j + 1])))
        axis = self.axes[pos]
        return tuple(slice(index, index + 1) if o == axis else next(plane) for o in range(3))  # type: ignore

    def _parts(self, per_token: torch.Tensor) -> list[torch.Tensor]:
        """(..., T) -> one (..., n, rows, cols) tensor per axis."""
        if per_token.shape[-1] != self.num_tokens:
            raise ValueError(
                f"{per_token.shape[-1]} values per volume but the grid has {self.num_tokens} tokens; "
                "pass weights computed for volumes of this shape"
            )
        parts = torch.split(per_token, list(self.counts), dim=-1)
        return [p.reshape(*p.shape[:-1], self.shape[a], r, c) for p, a, (r, c) in zip(parts, self.axes, self.cells)]

    def slice_weights(self, per_token: torch.Tensor) -> torch.Tensor:
        """(..., T) -> (..., N): each slice's total over its cells, in :class:`SliceLayout` order."""
        return torch.cat([p.sum(dim=(-2, -1)) for p in self._parts(per_token)], dim=-1)

    def voxel_maps(self, per_token: torch.Tensor) -> list[torch.Tensor]:
        """(B, T) -> one (B, D, H, W) map per axis: each token's value spread evenly over its box."""
        maps = []
        for pos, part in enumerate(self._parts(per_token)):
            sizes = [torch.as_tensor(e, device=part.device).diff() for e in self.edges(pos)]
            density = part / (sizes[0][:, None] * sizes[1][None, :]).to(part.dtype)
            full = density.repeat_interleave(sizes[0], dim=-2).repeat_interleave(sizes[1], dim=-1)  # (B, n, p, q)
            maps.append(full.movedim(1, 1 + self.axes[pos]))
        return maps

    def voxel_map(self, per_token: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, D, H, W): the sum of :meth:`voxel_maps` (attention weights: sums to 1 per volume)."""
        return torch.stack(self.voxel_maps(per_token)).sum(dim=0)


class SpatialOutput(NamedTuple):
    """:class:`Output25D`'s fields (slice weights summed over cells, so every slice consumer works unchanged), plus
    the token weights, their grid and the voxel map."""

    logits: torch.Tensor  # (B, outputs)
    weights: torch.Tensor  # (B, N) per slice, sums to 1
    head_weights: torch.Tensor  # (B, heads, N)
    layout: SliceLayout
    token_weights: torch.Tensor  # (B, T) per (slice, cell) token, sums to 1
    grid: TokenGrid
    voxels: torch.Tensor  # (B, D, H, W) attention mass per voxel, sums to 1

    by_axis = Output25D.by_axis


class StageMap(nn.Module):
    """A torchvision ResNet up to ``stage``, giving its feature map; the kept layers keep their names, so state-dict
    keys (and pretrained weights) are those of the full network."""

    def __init__(self, resnet: nn.Module, stage: str):
        super().__init__()
        names = ["conv1", "bn1", "relu", "maxpool", *STAGES[: STAGES.index(stage) + 1]]
        for name in names:
            self.add_module(name, getattr(resnet, name))
        self.out_features = _channels(getattr(resnet, stage))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        return x


def _channels(stage: nn.Module) -> int:
    last = stage[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features  # Bottleneck or BasicBlock


def parse_tokens(tokens: str) -> tuple[str | None, int | None]:
    """``"layer3"`` -> (stage, None); ``"patch:4"`` -> (None, 4); anything else one ValueError."""
    if tokens in STAGES:
        return tokens, None
    if tokens.startswith("patch:") and tokens[6:].isdigit() and int(tokens[6:]) >= 1:
        return None, int(tokens[6:])
    raise ValueError(
        f"unknown spatial tokens {tokens!r}; valid: {', '.join(STAGES)} (a ResNet stage's map) or "
        "patch:G (GxG patches per slice, each encoded alone)"
    )


class SpatialModel25D(Model25D):
    """A 2.5D model whose tokens are (slice, cell) pairs (see the module docstring); ``patches`` G cuts each slice
    into GxG patches for the encoder, None takes the cells of the encoder's feature map."""

    def __init__(
        self,
        encoder: nn.Module,
        reducer: nn.Module,
        num_outputs: int,
        axes: tuple[int, ...] = (0, 1, 2),
        patches: int | None = None,
    ):
        super().__init__(encoder, reducer, num_outputs, axes)
        self.patches = patches

    def tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, TokenGrid]:
        """(B, C, D, H, W) -> tokens (B, T, F) in :class:`TokenGrid` order, and that grid."""
        check_volume(x, self.encoder.in_channels)
        feats, cells = [], []
        for a in self.axes:  # one encoder call per axis, as Model25D (BatchNorm statistics per axis)
            slices = slice_axis(x, a)
            if self.patches is None:
                f = self.encoder(slices)  # (B*n, F, rows, cols)
                cells.append(tuple(f.shape[2:]))
                f = f.permute(0, 2, 3, 1)
            else:
                patches, grid = cut_patches(slices, self.patches)
                f = self.encoder(patches)  # (B*n*rows*cols, F)
                cells.append(grid)
            feats.append(f.reshape(x.shape[0], -1, f.shape[-1]))
        grid = TokenGrid(tuple(x.shape[2:]), self.axes, tuple(cells))
        return torch.cat(feats, dim=1), grid

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.tokens(x)[0]

    def forward_with_attention(self, x: torch.Tensor) -> SpatialOutput:
        tokens, grid = self.tokens(x)
        reduced = self.reducer(tokens)
        return SpatialOutput(
            self.head(reduced.vector),
            grid.slice_weights(reduced.weights),
            grid.slice_weights(reduced.head_weights),
            grid.slices,
            reduced.weights,
            grid,
            grid.voxel_map(reduced.weights),
        )


def cut_patches(slices: torch.Tensor, g: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(M, C, p, q) -> (M * g * g, C, ph, pw) patches in row-major order: the cells of :func:`cell_edges`, the
    smaller ones zero-padded at their far side to the largest (zero: the background of MedMNIST and synthetic)."""
    m, c, p, q = slices.shape
    rows, cols = cell_edges(p, g), cell_edges(q, g)
    if p % g == 0 and q % g == 0:
        out = slices.reshape(m, c, g, p // g, g, q // g).permute(0, 2, 4, 1, 3, 5)
        return out.reshape(m * g * g, c, p // g, q // g), (g, g)
    ph, pw = -(-p // g), -(-q // g)
    cut = [
        F.pad(
            slices[:, :, rows[i] : rows[i + 1], cols[j] : cols[j + 1]],
            (0, pw - (cols[j + 1] - cols[j]), 0, ph - (rows[i + 1] - rows[i])),
        )
        for i in range(g)
        for j in range(g)
    ]
    return torch.stack(cut, dim=1).reshape(m * g * g, c, ph, pw), (g, g)


def build(
    backbone: str,
    weights: Weights,
    in_channels: int,
    num_outputs: int,
    axes: tuple[int, ...] = (0, 1, 2),
    chunk_size: int | None = None,
    tokens: str = DEFAULT_TOKENS,
) -> SpatialModel25D:
    """The spatial model; ``tokens`` as :func:`parse_tokens`. The paper's pooling reads the tokens as they are."""
    stage, patches = parse_tokens(tokens)
    encoder = SliceEncoder(backbone, weights, in_channels, chunk_size)
    if stage is not None:
        if not all(hasattr(encoder.network, name) for name in ("conv1", "maxpool", *STAGES)):
            raise ValueError(
                f"spatial tokens from a feature map ({stage}) need a torchvision ResNet backbone, got "
                f"{backbone!r}; use resnet18 (or resnet34/50, ...) or tokens='patch:G' for any backbone"
            )
        encoder.network = StageMap(encoder.network, stage)
        encoder.out_features = encoder.network.out_features
    return SpatialModel25D(encoder, AttentionPool(encoder.out_features), num_outputs, axes, patches)
