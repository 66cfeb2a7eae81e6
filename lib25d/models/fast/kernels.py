"""The exact kernels behind two speed switches: convolutions on maps no bigger than their kernel as one matrix
product (``tiny_convs``), and batch normalisation of rows that stand for several identical slices
(``dedupe_slices``), on BatchNorm's own fused kernels. Same functions as the modules they replace, up to float
summation order (tests/test_perf.py checks it in float64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

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
        last = (
            x.dim() > 3
            and x.is_contiguous(memory_format=torch.channels_last if dims == 2 else torch.channels_last_3d)
            and not x.is_contiguous()
        )
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
        _, sum_dy_xhat, sum_dy = _bn_backward(dy, x, weight, None, None, mean, invstd, True, 0.0, [False, True, True])
        scale = weight * invstd
        coef = -share.view(-1, 1) * scale  # (rows, channels)
        b = coef * (invstd * sum_dy_xhat)
        a = coef * sum_dy - b * mean
        dx = torch.addcmul(a[:, :, None, None], x, b[:, :, None, None]).addcmul_(dy, scale.view(1, -1, 1, 1))
        return (
            dx,
            None,
            sum_dy_xhat if ctx.needs_input_grad[2] else None,
            sum_dy if ctx.needs_input_grad[3] else None,
            None,
        )


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
