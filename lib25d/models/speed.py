"""Speed switches: exact rewrites of the same function, applied once when a model is built.

``apply(model, config)`` (or keywords named as RunConfig's speed fields) swaps classes in place, so
parameters and ``state_dict`` keys stay. The kernels below compute the functions of the modules they
replace up to float summation order; tests/test_perf.py checks the numbers, ``lib25d bench`` what each buys.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .backbone import ChannelAdapter, SliceEncoder

_bn_backward = torch.ops.aten.native_batch_norm_backward


def _small_map_plan(conv: nn.Module, spatial: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(input extent read, output extent) per axis when the map is no bigger than the kernel, else None."""
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str) or max(conv.dilation) > 1:
        return None
    read, out = [], []
    for size, k, s, p in zip(spatial, conv.kernel_size, conv.stride, conv.padding):
        n = (size + 2 * p - k) // s + 1
        if n < 1 or p >= k:
            return None
        out.append(n)
        read.append(min(size, (n - 1) * s - p + k))  # positions beyond never meet a tap
    if math.prod(read) > math.prod(conv.kernel_size):
        return None
    return tuple(read), tuple(out)


def _dense_weight(conv: nn.Module, read: tuple[int, ...], out: tuple[int, ...]) -> torch.Tensor:
    """The weight as (O, C, read_0, out_0, read_1, out_1, ...): input ``q`` meets output ``i`` through
    tap ``q - i*stride + padding``, or 0. Built from padded slices (no scatter): exact gradients."""
    w = conv.weight
    for axis, (r, n, k, s, p) in enumerate(zip(read, out, conv.kernel_size, conv.stride, conv.padding)):
        dim = 2 + 2 * axis
        before, after = max(0, (n - 1) * s - p), max(0, p + r - k)  # zero taps, where some are needed
        if before or after:
            w = F.pad(w, [0, 0] * (w.dim() - dim - 1) + [before, after])
        w = torch.stack([w.narrow(dim, p - i * s + before, r) for i in range(n)], dim=dim + 1)
    return w


class _TinyConvMixin:
    """``tiny_convs``: on a map no bigger than its kernel, one matrix product (other maps convolve). At
    28x28 ResNet-18's layer3/4 see 2x2/1x1 maps, where oneDNN mostly multiplies (and back-propagates) padding."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        plan = _small_map_plan(self, tuple(x.shape[2:]))
        if plan is None:
            return super().forward(x)
        read, out = plan
        dims = len(read)
        x = x[(slice(None), slice(None), *(slice(0, r) for r in read))]
        w = _dense_weight(self, read, out)  # (O, C, r0, n0, r1, n1, ...)
        last = x.dim() > 3 and x.is_contiguous(memory_format=torch.channels_last if dims == 2
                                                else torch.channels_last_3d) and not x.is_contiguous()
        reads, outs = [2 + 2 * a for a in range(dims)], [3 + 2 * a for a in range(dims)]
        if last:  # positions outermost, channels innermost: the input is read without a copy
            rows, cols, flat = [*reads, 1], [*outs, 0], x.movedim(1, -1)
        else:
            rows, cols, flat = [1, *reads], [0, *outs], x
        matrix = w.permute(*rows, *cols).reshape(math.prod(w.shape[d] for d in rows), -1)
        flat = flat.reshape(x.shape[0], -1)
        if self.bias is None:
            y = flat @ matrix
        else:
            bias = self.bias.repeat(math.prod(out)) if last else self.bias.repeat_interleave(math.prod(out))
            y = torch.addmm(bias, flat, matrix)
        if last:
            return y.view(x.shape[0], *out, -1).movedim(-1, 1)
        return y.view(x.shape[0], -1, *out)


class TinyConv2d(_TinyConvMixin, nn.Conv2d):
    """Conv2d with the ``tiny_convs`` matrix product."""


class TinyConv3d(_TinyConvMixin, nn.Conv3d):
    """Conv3d with the ``tiny_convs`` matrix product."""


class _CountedNorm(torch.autograd.Function):
    """Batch normalisation of rows standing for ``counts`` identical rows each, on BatchNorm's fused
    kernels (autograd through the formula cost a third of a deduplicated step). Sums of squares: one
    kernel pass over the centred rows plus ``count - 1`` times the repeated rows' own (centred first: no
    cancellation). Backward, with ``w/n`` a row's share of the batch and ``dy`` summed over its copies:
    ``dx = weight*invstd*(dy - w/n*sum(dy) - w/n*xhat*sum(dy*xhat))``."""

    @staticmethod
    def forward(ctx, x, counts, weight, bias, eps):
        w = counts.to(x.dtype)
        n = w.sum() * x[0, 0].numel()  # values per channel in the full batch
        mean = (w @ x.sum((2, 3))) / n
        centred = x - mean.view(1, -1, 1, 1)  # becomes the output, in place
        residual = (w @ centred.sum((2, 3))) / n  # the float32 mean's own rounding, taken out again
        mean += residual
        centred -= residual.view(1, -1, 1, 1)
        zeros, ones = torch.zeros_like(mean), torch.ones_like(mean)
        # the kernel's sum of dy * (x - mean) * invstd with dy = centred: the sum of squares
        sq = _bn_backward(centred, centred, None, None, None, zeros, ones, True, eps, [False, True, False])[1]
        extra = (counts > 1).nonzero().squeeze(1)
        if extra.numel():
            sq = sq + (w[extra] - 1) @ centred[extra].square().sum((2, 3))
        var = sq / n
        invstd = torch.rsqrt(var + eps)
        weight = ones if weight is None else weight
        out = centred.mul_((weight * invstd).view(1, -1, 1, 1))
        if bias is not None:
            out.add_(bias.view(1, -1, 1, 1))
        ctx.save_for_backward(x, w / n, mean, invstd, weight)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @torch.autocast("cpu", enabled=False)
    @torch.autocast("cuda", enabled=False)
    def backward(ctx, dy, _mean, _var):
        x, share, mean, invstd, weight = ctx.saved_tensors
        _, sum_dy_xhat, sum_dy = _bn_backward(dy, x, weight, None, None, mean, invstd, True, 0.0,
                                              [False, True, True])
        scale = weight * invstd
        coef = -share.view(-1, 1) * scale  # (rows, channels)
        b = coef * (invstd * sum_dy_xhat)
        a = coef * sum_dy - b * mean
        dx = torch.addcmul(a[:, :, None, None], x, b[:, :, None, None]).addcmul_(dy, scale.view(1, -1, 1, 1))
        return dx, None, sum_dy_xhat if ctx.needs_input_grad[2] else None, \
            sum_dy if ctx.needs_input_grad[3] else None, None


class CountedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch rows may each stand for ``counts[i]`` identical slices: the statistics,
    gradients and running-statistics update of the repeated batch. Without ``counts``, BatchNorm2d."""

    counts: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.counts is None or not (self.training or self.running_mean is None):
            return super().forward(x)
        dtype = x.dtype  # bf16 under CPU autocast: statistics in float32, as native BatchNorm keeps them
        x = x.to(torch.promote_types(dtype, self.running_mean.dtype if self.running_mean is not None else dtype))
        weight, bias = (None if p is None else p.to(x.dtype) for p in (self.weight, self.bias))
        with torch.autocast(x.device.type, enabled=False):  # its sums stay in float32 under autocast
            out, mean, var = _CountedNorm.apply(x, self.counts, weight, bias, self.eps)
        if self.training and self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                n = self.counts.sum() * x[0, 0].numel()
                # through .data, as BatchNorm's own kernel updates them: a native call on another axis of the
                # same step saved these buffers for its backward, and a visible in-place change would void it
                self.running_mean.data.lerp_(mean, m)
                self.running_var.data.lerp_(var * n / (n - 1), m)  # unbiased, as BatchNorm stores it
        return out.to(dtype)



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
    rates = [m.p] if isinstance(m, nn.modules.dropout._DropoutNd) else \
        [getattr(m, "drop_prob", 0), getattr(m, "drop_rate", 0)]
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
        ok = type(conv) in (nn.Conv2d, TinyConv2d) and conv.in_channels == 3 and conv.groups == 1 \
            and conv.padding_mode == "zeros"
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
            return checkpoint(net, x, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), _no_running_stats_update(self)))
        return net(x)

    def _dedupe_applies(self, slices: torch.Tensor) -> bool:
        if not self.dedupe or slices.requires_grad or any(m._forward_hooks or m._forward_pre_hooks
                                                          for m in self.modules() if m is not self):
            return False
        if any(_draws(m) for m in self.modules()):
            return False  # copies of a slice would share one random draw
        if not any(isinstance(m, _BatchNorm) and (m.training or m.running_mean is None) for m in self.modules()):
            return True  # running statistics: the encoder is a per-slice function
        whole = self.chunk_size is None or slices.shape[0] <= self.chunk_size  # one BatchNorm batch, no recompute
        return whole and not self.checkpointing and all(
            isinstance(m, CountedBatchNorm2d) for m in self.modules() if isinstance(m, _BatchNorm))

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


def apply(model: nn.Module, config=None, **switches) -> nn.Module:
    """Set the speed switches of a freshly built model (``config``'s, or keywords); returns it.

    ``channels_last``: NHWC slices; ``checkpointing``: each chunk recomputed in the backward pass;
    ``fold_adapter``: the 1x1 adapter folded into the first convolution; ``tiny_convs``: see
    :class:`TinyConv2d` (also the 3D baseline's, not ACS's); ``compile``: torch.compile of the backbone.
    """
    s = config.speed() if config is not None else switches
    enc = model.encoder
    if isinstance(enc, SliceEncoder):
        enc.__class__ = FastSliceEncoder
        if "channels_last" in s:
            enc.channels_last = bool(s["channels_last"])
            enc.to(memory_format=torch.channels_last if enc.channels_last else torch.contiguous_format)
        if "dedupe_slices" in s:
            enc.dedupe = bool(s["dedupe_slices"])
            _swap(enc, {nn.BatchNorm2d: CountedBatchNorm2d} if enc.dedupe else {CountedBatchNorm2d: nn.BatchNorm2d})
        enc.checkpointing = bool(s.get("checkpointing", enc.checkpointing))
        if "fold_adapter" in s:
            enc.fold_stem = enc._stem() if s["fold_adapter"] else None
    if "tiny_convs" in s:
        use_tiny_convs(enc, s["tiny_convs"])
    if s.get("compile"):
        (enc.network if isinstance(enc, SliceEncoder) else enc).compile()
    return model


def use_tiny_convs(module: nn.Module, enabled: bool = True) -> int:
    """Every plain Conv2d/Conv3d of ``module`` to (or back from) :class:`TinyConv2d`/``3d``; how many."""
    pairs = {nn.Conv2d: TinyConv2d, nn.Conv3d: TinyConv3d}
    return _swap(module, pairs if enabled else {v: k for k, v in pairs.items()})


def _swap(module: nn.Module, table: dict[type, type]) -> int:
    """Change the class of every submodule whose exact type is a key of ``table``; how many changed."""
    changed = 0
    for m in module.modules():
        if type(m) in table:
            m.__class__ = table[type(m)]
            changed += 1
    return changed
