"""``FastSliceEncoder``: the slice encoder with the slice-level switches (deduplicated slices, channels_last, the
adapter folded into the first convolution, activation checkpointing per chunk)."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..backbone import ChannelAdapter, SliceEncoder
from .kernels import CountedBatchNorm2d, TinyConv2d


@contextlib.contextmanager
def _no_running_stats_update(module: nn.Module):
    """A checkpoint's recomputation must not move BatchNorm's running statistics twice: momentum 0
    keeps them (the same kernels run), and the batch counter is put back."""
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training and m.track_running_stats]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def _draws(m: nn.Module) -> bool:
    """A module that draws random numbers in train mode: dropout, timm's DropPath (drop_prob) or drop_rate."""
    rates = (
        [m.p]
        if isinstance(m, nn.modules.dropout._DropoutNd)
        else [getattr(m, "drop_prob", 0), getattr(m, "drop_rate", 0)]
    )
    return m.training and any(isinstance(r, (int, float)) and r > 0 for r in rates)


def unique_slices(slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(unique slices, inverse index) when some slices repeat voxel for voxel, else None."""
    n = slices.shape[0]
    if n < 2:
        return None
    uniq, inverse = torch.unique(slices.reshape(n, -1), dim=0, return_inverse=True)
    if uniq.shape[0] == n:
        return None
    return uniq.view(uniq.shape[0], *slices.shape[1:]), inverse


class FastSliceEncoder(SliceEncoder):
    """:class:`SliceEncoder` with the slice switches; swapped in by :func:`apply` (same state_dict).
    ``dedupe_slices`` encodes identical slices (empty background) once, BatchNorm counting each by its
    multiplicity; not with chunks or checkpointing on batch statistics (they change the batch a
    BatchNorm sees), nor when the input needs a gradient, a hook watches the layers or a dropout layer draws.
    Backbone-agnostic (timm's too): BatchNorm2d becomes counted; another batch norm in train mode turns it off.
    """

    dedupe = channels_last = checkpointing = False
    fold_stem: str | None = None  # the convolution the adapter is folded into
    last_dedupe: tuple[int, int] | None = None  # (unique, total) slices of the last deduplicated call

    def _stem(self) -> str | None:
        """Name of the first convolution when the channel adapter can be folded into it."""
        if not isinstance(self.adapter, ChannelAdapter):
            return None
        name, conv = next(((n, m) for n, m in self.network.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
        # a plain convolution only: a subclass may transform its weight (timm's StdConv2d standardises it)
        ok = (
            type(conv) in (nn.Conv2d, TinyConv2d)
            and conv.in_channels == 3
            and conv.groups == 1
            and conv.padding_mode == "zeros"
        )
        return name if ok else None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.fold_stem is None:
            net = lambda x: self.network(self.adapter(x))  # noqa: E731
        else:  # conv(adapter(x)) as one convolution reading the C input channels (zero padding commutes)
            w = self.network.get_submodule(self.fold_stem).weight
            folded = torch.einsum("oikl,ic->ockl", w, self.adapter.conv.weight.flatten(1))
            folded = folded.contiguous(memory_format=torch.channels_last) if self.channels_last else folded
            net = lambda x: functional_call(self.network, {f"{self.fold_stem}.weight": folded}, (x,))  # noqa: E731
        if self.checkpointing and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return checkpoint(
                net,
                x,
                use_reentrant=False,
                context_fn=lambda: (contextlib.nullcontext(), _no_running_stats_update(self)),
            )
        return net(x)

    def _dedupe_applies(self, slices: torch.Tensor) -> bool:
        if (
            not self.dedupe
            or slices.requires_grad
            or any(m._forward_hooks or m._forward_pre_hooks for m in self.modules() if m is not self)
        ):
            return False
        if any(_draws(m) for m in self.modules()):
            return False  # copies of a slice would share one random draw
        if not any(isinstance(m, _BatchNorm) and (m.training or m.running_mean is None) for m in self.modules()):
            return True  # running statistics: the encoder is a per-slice function
        whole = self.chunk_size is None or slices.shape[0] <= self.chunk_size  # one BatchNorm batch, no recompute
        return (
            whole
            and not self.checkpointing
            and all(isinstance(m, CountedBatchNorm2d) for m in self.modules() if isinstance(m, _BatchNorm))
        )

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if not self._dedupe_applies(slices):
            return super().forward(slices)
        found = unique_slices(slices)
        self.last_dedupe = (slices.shape[0] if found is None else found[0].shape[0], slices.shape[0])
        if found is None:
            return super().forward(slices)
        uniq, inverse = found
        norms = [m for m in self.modules() if isinstance(m, CountedBatchNorm2d)]
        counts = torch.bincount(inverse, minlength=uniq.shape[0])
        for m in norms:
            m.counts = counts
        try:
            return super().forward(uniq).index_select(0, inverse)
        finally:
            for m in norms:
                m.counts = None
