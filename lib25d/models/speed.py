"""Speed switches: exact rewrites of the same function, applied once when a model is built.

``apply(model, config)`` (or keyword switches named as :class:`~lib25d.config.RunConfig`'s
speed fields) swaps classes in place, so parameters, buffers and ``state_dict`` keys stay as
they are and a checkpoint loads either way. What each switch does to the numbers (float
summation order at most) is tested in tests/test_perf.py; what it buys is ``lib25d bench``.

- ``dedupe_slices``: identical slices (the empty background of a shape mask) are encoded once;
  with batch statistics every BatchNorm weighs a distinct slice by its count
  (:class:`CountedBatchNorm2d`), so outputs, gradients and running statistics are those of the
  full batch. Not with chunking or checkpointing in train mode (they change the batch a
  BatchNorm sees), not when the input needs a gradient or a hook watches the layers.
- ``channels_last``: NHWC memory format for the slice encoder and its input.
- ``checkpointing``: each chunk's activations are recomputed in the backward pass.
- ``tiny_convs``: convolutions on maps no bigger than their kernel run as one matrix product.
- ``fold_adapter``: the 1x1 channel adapter is folded into the first convolution.
- ``compile``: ``torch.compile`` of the backbone, in place (same parameter names).
"""
from __future__ import annotations

import contextlib
import math

import torch
from torch import nn
import torch.nn.functional as F
from torch.func import functional_call
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from .backbone import ChannelAdapter, SliceEncoder


def _small_map_plan(conv: nn.Module, spatial: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """(input extent read, output extent) per axis when ``conv`` is cheaper as one matrix product.

    A convolution is a matrix product between the input positions it reads and its output
    positions. On a map no bigger than the kernel (``layer3``'s 2x2 and ``layer4``'s 1x1 maps of
    ResNet-18 at 28x28 slices) that dense product has no more multiply-adds than the kernel's
    taps (most of which oneDNN spends on zero padding), and it runs as one well-shaped GEMM.
    ``None`` when the convolution does not qualify (groups, dilation, non-zero padding modes,
    string padding, padding as wide as the kernel, or a map larger than the kernel).
    """
    if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        return None
    if any(d != 1 for d in conv.dilation):
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
    """The weight as (O, C, read_0, out_0, read_1, out_1, ...): entry = the tap joining them, or 0.

    Built from zero-padded slices of the weight (no scatter), so its gradient is exact and
    deterministic: input position ``q`` meets output ``i`` through tap ``q - i*stride + padding``.
    """
    w = conv.weight
    for axis, (r, n, k, s, p) in enumerate(zip(read, out, conv.kernel_size, conv.stride, conv.padding)):
        dim = 2 + 2 * axis
        before, after = max(0, (n - 1) * s - p), max(0, p + r - k)  # zero taps, where some are needed
        if before or after:
            w = F.pad(w, [0, 0] * (w.dim() - dim - 1) + [before, after])
        w = torch.stack([w.narrow(dim, p - i * s + before, r) for i in range(n)], dim=dim + 1)
    return w


class _TinyConvMixin:
    """A convolution on a map no bigger than its kernel runs as one matrix product (same function).

    At 28x28 slices ResNet-18's ``layer3`` works on 2x2 maps and ``layer4`` on 1x1 maps: their
    3x3 kernels mostly multiply zero padding, which oneDNN computes (and, slowly,
    back-propagates). The dense product over the positions read is the same function and has
    the same gradients (up to float summation order; zero for taps that never meet input).
    Other shapes use the ordinary convolution. Swapped in by class (same parameters, same
    state_dict): see :func:`apply`.
    """

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
    pass


class TinyConv3d(_TinyConvMixin, nn.Conv3d):
    pass


_bn_backward = torch.ops.aten.native_batch_norm_backward


class _CountedNorm(torch.autograd.Function):
    """Batch normalisation of rows that stand for ``counts`` identical rows each, and its backward.

    Built on BatchNorm's own fused kernels, because autograd through the formula's dozen
    elementwise ops (each a fresh full-size tensor) cost a third of a deduplicated step. The
    per-channel sums of squares come from one kernel pass over the centred rows, unweighted, plus
    ``count - 1`` times the few repeated rows' own sums (centred first, so a large mean costs no
    precision). Backward (``n`` values per channel in the full batch, ``w`` a
    row's count, ``dy`` already summed over its copies, ``xhat = (x - mean) * invstd``):
    ``dx = weight*invstd*(dy - w/n*sum(dy) - w/n*xhat*sum(dy*xhat))``, two passes.
    """

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
        # sum of centred^2 over all rows (the kernel's sum of dy * (x - mean) * invstd), then the
        # repeated rows ``count - 1`` times more: no cancellation, whatever the mean
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
    """BatchNorm2d whose batch rows may each stand for several identical slices.

    With ``counts`` set (one multiplicity per row, see :class:`FastSliceEncoder`) and batch
    statistics in use, the mean, the variance and the running-statistics update are those of
    the batch with every row repeated ``counts[i]`` times: the same function, gradients and
    running statistics as the full batch (up to float summation order), for about the cost of
    the distinct rows. Without ``counts`` it is plain BatchNorm2d (same parameters and state_dict).
    """

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
                self.running_mean.lerp_(mean, m)
                self.running_var.lerp_(var * n / (n - 1), m)  # unbiased, as BatchNorm stores it
        return out.to(dtype)


class _NoRunningStatsUpdate:
    """During a checkpoint recomputation BatchNorm must not update its running statistics twice.

    Momentum 0 makes the update ``1 * running + 0 * batch``, exactly the old value, while the
    recomputation runs the same kernels (and saves the same tensors) as the first pass; the
    batch counter is put back afterwards.
    """

    def __init__(self, module: nn.Module):
        self.norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.training
                      and m.track_running_stats]
        self.saved: list[tuple[float | None, torch.Tensor | None]] = []

    def __enter__(self):
        self.saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
                      for m in self.norms]
        for m in self.norms:
            m.momentum = 0.0

    def __exit__(self, *exc):
        for m, (momentum, count) in zip(self.norms, self.saved):
            m.momentum = momentum
            if count is not None:
                m.num_batches_tracked.copy_(count)


def unique_slices(slices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(unique slices, inverse index) if some slices are exact duplicates of others, else None.

    Exact: slices are compared voxel by voxel (``torch.unique`` over flattened slices), so
    ``unique[inverse]`` reproduces ``slices`` bit for bit.
    """
    n = slices.shape[0]
    if n < 2:
        return None
    uniq, inverse = torch.unique(slices.reshape(n, -1), dim=0, return_inverse=True)
    if uniq.shape[0] == n:
        return None
    return uniq.view(uniq.shape[0], *slices.shape[1:]), inverse


class FastSliceEncoder(SliceEncoder):
    """:class:`SliceEncoder` with the slice switches; swapped in by :func:`apply` (same state_dict)."""

    dedupe = channels_last = checkpointing = False
    fold_stem: str | None = None  # the convolution the adapter is folded into
    last_dedupe: tuple[int, int] | None = None  # (unique, total) slices of the last deduplicated call

    def _stem(self) -> str | None:
        """Name of the first convolution when the channel adapter can be folded into it."""
        if not isinstance(self.adapter, ChannelAdapter):
            return None
        name, conv = next(((n, m) for n, m in self.network.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
        ok = conv is not None and conv.in_channels == 3 and conv.groups == 1 and conv.padding_mode == "zeros"
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
                              context_fn=lambda: (contextlib.nullcontext(), _NoRunningStatsUpdate(self)))
        return net(x)

    def _dedupe_applies(self, slices: torch.Tensor) -> bool:
        if not self.dedupe or slices.requires_grad or any(m._forward_hooks or m._forward_pre_hooks
                                                          for m in self.modules() if m is not self):
            return False
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
    """Set the speed switches of a freshly built model (``config``'s, or keywords); returns it."""
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
    if "tiny_convs" in s:  # also the 3D baseline's layer3/4 at 28^3 (ACS convolutions are not touched)
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
