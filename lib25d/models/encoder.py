"""A torchvision classification backbone as a per-slice (or per-volume) feature extractor.

Weights are ``"imagenet"`` (torchvision's weights API, cached under ``$TORCH_HOME``),
a path to a local state dict of the full torchvision classifier, or ``None`` (random).
A file that is not such a state dict (text, truncated, a pickled list, tensor or model, keys
of another network) fails with one ValueError naming the file and what is wrong with it.
"""
from __future__ import annotations

import contextlib
import math
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F
import torchvision
from torch.nn.modules.batchnorm import _BatchNorm
from torch.func import functional_call
from torch.utils.checkpoint import checkpoint

Weights = str | os.PathLike | None
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d",
             "wide_resnet50_2", "densenet121", "efficientnet_b0", "mobilenet_v3_small",
             "mobilenet_v3_large", "convnext_tiny", "regnet_y_400mf")


def check_backbone(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


_SAVE_HINT = "pass a file saved with torch.save(model.state_dict(), path), 'imagenet' or none"
_CORRUPT_TORCH, _CORRUPT_PICKLE = "it is a corrupt PyTorch file", "it is a truncated or corrupt pickle"


def _file_kind(path: Path) -> str:
    """What a file that torch.load refused looks like, from its first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head:
        return "it is empty"
    if head.startswith(b"PK\x03\x04"):  # torch.save writes a zip archive holding <name>/data.pkl
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return "it is a truncated or corrupt PyTorch file"
        if not any(n.endswith("/data.pkl") for n in names):
            return f"it is a zip archive of {', '.join(names[:3]) or 'nothing'}, not a PyTorch file"
        return _CORRUPT_TORCH
    if head[:1] == b"\x80":
        return _CORRUPT_PICKLE
    try:
        head.decode("utf-8")
        text = b"\0" not in head
    except UnicodeDecodeError as err:
        text = err.start > len(head) - 4  # a multi-byte character cut by the 4096-byte window
    return "it is a text file" if text else "it is a binary file of another kind"


def _not_state_dict(path: Path, what: str) -> ValueError:
    return ValueError(f"weights file {path} is not a PyTorch state dict ({what}): {_SAVE_HINT}")


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a local file; anything else is one ValueError naming the file and what it holds."""
    try:
        with warnings.catch_warnings():  # a plain pickle of protocol > 2 draws a multi-line note before failing
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises KeyError, IndexError, EOFError, RuntimeError, ... on junk
        kind = _file_kind(path)
        if kind in (_CORRUPT_TORCH, _CORRUPT_PICKLE) and isinstance(err, pickle.UnpicklingError) \
                and "Weights only load failed" in str(err):  # a real pickle, of more than tensors
            kind = "it holds Python objects besides tensors, e.g. a whole model saved with torch.save(model, path)"
        raise _not_state_dict(path, kind) from None  # torch's own text runs over many lines
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):  # a training checkpoint
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise _not_state_dict(path, f"it holds a {type(state).__name__}, not a dict of parameter names to tensors")
    odd = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        nested = next((k for k, v in state.items() if isinstance(v, Mapping) and v
                       and all(isinstance(t, torch.Tensor) for t in v.values())), None)
        if nested is not None:
            raise _not_state_dict(path, f"it looks like a training checkpoint whose {nested!r} entry holds the "
                                        f"state dict; save that alone: torch.save(checkpoint[{nested!r}], path)")
        keys = ", ".join(map(str, list(state)[:4])) + (", ..." if len(state) > 4 else "")
        raise _not_state_dict(path, f"it is a dict whose entry {odd!r} is not a tensor but "
                                    f"{type(state[odd]).__name__}; keys: {keys}")
    return dict(state)


def load_state_dict(name: str, weights: Weights) -> dict[str, torch.Tensor] | None:
    """Resolve a weights spec to a state dict of torchvision's ``name`` classifier."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        spec = torchvision.models.get_model_weights(name).DEFAULT
        cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.url).name
        try:
            return spec.get_state_dict(progress=False)
        except Exception as err:  # offline: URLError, OSError, ...; a damaged cached file: torch.load's errors
            if cache.is_file():
                raise RuntimeError(f"cached ImageNet weights {cache} cannot be read ({_file_kind(cache)}): delete "
                                   f"the file and run again with internet, or fetch {spec.url} into "
                                   f"{cache.parent}") from err
            raise RuntimeError(
                f"ImageNet weights for {name} are not in the cache ({cache}) and could not be downloaded "
                f"({type(err).__name__}); fetch {spec.url} into that folder on a machine with internet, "
                "or pass weights=<path to a state dict file>") from err
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass 'imagenet', None or the path "
                                "to a torchvision state dict (torch.save(model.state_dict(), path))")
    return _load_file(path)


def _fit_problems(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Which keys of ``state`` do not fit ``model``: missing, unexpected, other shapes (a few of each)."""
    expected = model.state_dict()

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")

    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} is {list(state[k].shape)} in the file, {list(v.shape)} in the network"
              for k, v in expected.items() if k in state and state[k].shape != v.shape]
    parts = ([f"missing keys {few(missing)}"] if missing else []) + \
            ([f"unexpected keys {few(unexpected)}"] if unexpected else []) + shapes[:2]
    if len(shapes) > 2:
        parts.append(f"... ({len(shapes)} shape mismatches in all)")
    return "; ".join(parts)


def _classifier_slot(model: nn.Module) -> tuple[nn.Module, str]:
    """Where the final Linear layer of a torchvision classifier lives: (parent, attribute)."""
    for attr in ("fc", "classifier", "head", "heads"):
        child = getattr(model, attr, None)
        if isinstance(child, nn.Linear):
            return model, attr
        if isinstance(child, nn.Sequential):
            idx = max(i for i, m in enumerate(child) if isinstance(m, nn.Linear))
            return child, str(idx)
    raise ValueError(f"cannot find the classifier of {type(model).__name__}")


def backbone_network(name: str, weights: Weights = None) -> tuple[nn.Module, int]:
    """torchvision ``name`` with ``weights`` loaded and its last Linear replaced by Identity.

    Returns the network and its feature width. Weights load into the full classifier
    (strict) before the head is dropped, so a wrong file fails loudly.
    """
    check_backbone(name)
    model = torchvision.models.get_model(name, weights=None)
    state = load_state_dict(name, weights)
    if state is not None:
        source = "ImageNet weights" if isinstance(weights, str) and weights.lower() == "imagenet" \
            else f"weights in {Path(weights)}"
        problems = _fit_problems(model, state)
        if not problems:
            try:
                model.load_state_dict(state)
            except RuntimeError as err:  # whatever _fit_problems does not foresee, as one line
                problems = " ".join(str(err).split())
        if problems:
            raise ValueError(f"{source} do not fit torchvision's {name}: {problems} "
                             "(was the file saved from a different architecture?)")
    parent, attr = _classifier_slot(model)
    features = getattr(parent, attr).in_features
    setattr(parent, attr, nn.Identity())
    return model, features


class ChannelAdapter(nn.Module):
    """Maps C input channels to the 3 an ImageNet network expects: a 1x1 convolution.

    Initialised to 1/C, so every RGB channel starts as the mean of the input channels; for
    C=1 this is the authors' ones-initialisation (the grey image repeated). It trains with
    the backbone. ``dims`` is 2 for slices, 3 for volumes.
    """

    def __init__(self, in_channels: int, dims: int = 2, out_channels: int = 3):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(in_channels, out_channels, kernel_size=1, bias=False)
        nn.init.constant_(self.conv.weight, 1.0 / in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def channel_adapter(in_channels: int, dims: int) -> nn.Module:
    return nn.Identity() if in_channels == 3 else ChannelAdapter(in_channels, dims)


# ---------------------------------------------------------------------------------------------
# Performance switches (all exact rewrites of the same function; see lib25d/bench.py for numbers)


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
    state_dict): see :func:`use_tiny_conv_matmul`.
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


_TINY = {nn.Conv2d: TinyConv2d, nn.Conv3d: TinyConv3d}
_PLAIN = {v: k for k, v in _TINY.items()}


def use_tiny_conv_matmul(module: nn.Module, enabled: bool = True) -> int:
    """Switch every plain Conv2d/Conv3d in ``module`` to (or back from) :class:`TinyConv2d`/``3d``.

    Parameters, buffers, hooks and state_dict keys stay as they are. Returns how many changed.
    """
    table = _TINY if enabled else _PLAIN
    changed = 0
    for m in module.modules():
        new = table.get(type(m))
        if new is not None:
            m.__class__ = new
            changed += 1
    return changed


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

    With ``counts`` set (one multiplicity per row, see :meth:`SliceEncoder.forward`) and batch
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


def use_counted_batch_norm(module: nn.Module, enabled: bool = True) -> int:
    """Switch every BatchNorm2d in ``module`` to (or back from) :class:`CountedBatchNorm2d`."""
    old, new = (nn.BatchNorm2d, CountedBatchNorm2d) if enabled else (CountedBatchNorm2d, nn.BatchNorm2d)
    changed = 0
    for m in module.modules():
        if type(m) is old:
            m.__class__ = new
            changed += 1
    return changed


@contextlib.contextmanager
def _row_counts(module: nn.Module, counts: torch.Tensor):
    norms = [m for m in module.modules() if isinstance(m, CountedBatchNorm2d)]
    for m in norms:
        m.counts = counts
    try:
        yield
    finally:
        for m in norms:
            m.counts = None


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


def batch_statistics_in_use(module: nn.Module) -> bool:
    """True if some BatchNorm in ``module`` normalises by the statistics of the current batch."""
    return any(isinstance(m, _BatchNorm) and (m.training or m.running_mean is None) for m in module.modules())


def _hooked(module: nn.Module) -> bool:
    """Forward hooks inside ``module`` (Grad-CAM and the like) expect one activation row per slice."""
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules() if m is not module)


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


class SliceEncoder(nn.Module):
    """2D backbone applied to a batch of slices, optionally in chunks to bound peak memory.

    Chunking is exact in eval mode; in train mode BatchNorm sees per-chunk statistics.

    Performance switches (off by default; :meth:`configure` turns them on, the trainer does
    from its :class:`~lib25d.config.RunConfig`):

    - ``dedupe``: identical slices (the empty background of a shape mask, typically) are
      encoded once and their features copied, when the input needs no gradient and no forward
      hook watches the encoder's layers. With running statistics (eval mode) the encoder is a
      per-slice function; with batch statistics (train mode) every BatchNorm weighs each
      distinct slice by its multiplicity (:class:`CountedBatchNorm2d`), so outputs, gradients
      and running statistics are those of the full batch. Not combined with chunking or
      checkpointing in train mode (those change the batch a BatchNorm sees).
    - ``channels_last``: NHWC memory format for the network and its input.
    - ``checkpointing``: each chunk's activations are recomputed in the backward pass instead
      of being kept (with ``chunk_size``: memory of one chunk instead of the whole batch, for
      about one extra forward pass). Running statistics are updated once per chunk, as without.
    - ``tiny_convs``: convolutions on maps no bigger than their kernel run as matrix products
      (exact rewrite; see :class:`TinyConv2d`).
    - ``fold_adapter``: the 1x1 channel adapter is folded into the network's first convolution,
      which then reads the C input channels directly (exact rewrite).
    """

    def __init__(self, backbone: str = "resnet18", weights: Weights = None, in_channels: int = 1,
                 chunk_size: int | None = None):
        super().__init__()
        self.adapter = channel_adapter(in_channels, dims=2)
        self.network, self.out_features = backbone_network(backbone, weights)
        self.backbone = backbone
        self.in_channels = in_channels
        self.chunk_size = chunk_size
        self.dedupe = False
        self.channels_last = False
        self.checkpointing = False
        self.fold_stem: str | None = None  # the convolution the adapter is folded into (fold_adapter)
        self.last_dedupe: tuple[int, int] | None = None  # (unique, total) slices of the last deduplicated call

    def configure(self, *, channels_last: bool | None = None, dedupe: bool | None = None,
                  checkpointing: bool | None = None, tiny_convs: bool | None = None,
                  fold_adapter: bool | None = None, chunk_size: int | None | str = "keep") -> "SliceEncoder":
        """Set performance switches (``None`` / ``"keep"`` leaves one as it is); returns self."""
        if channels_last is not None:
            self.channels_last = bool(channels_last)
            fmt = torch.channels_last if self.channels_last else torch.contiguous_format
            self.to(memory_format=fmt)
        if dedupe is not None:
            self.dedupe = bool(dedupe)
            use_counted_batch_norm(self, self.dedupe)
        if checkpointing is not None:
            self.checkpointing = bool(checkpointing)
        if tiny_convs is not None:
            use_tiny_conv_matmul(self, tiny_convs)
        if fold_adapter is not None:
            self.fold_stem = self._stem() if fold_adapter else None
        if chunk_size != "keep":
            self.chunk_size = chunk_size
        return self

    def _stem(self) -> str | None:
        """Name of the first convolution when the channel adapter can be folded into it."""
        if not isinstance(self.adapter, ChannelAdapter):
            return None
        name, conv = next(((n, m) for n, m in self.network.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
        ok = conv is not None and conv.in_channels == 3 and conv.groups == 1 and conv.padding_mode == "zeros"
        return name if ok else None

    def _net(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.fold_stem
        if stem is None:
            return self.network(self.adapter(x))
        # conv(adapter(x)) with the 1x1 adapter folded into the stem's weight: one input channel
        # instead of three, and no gradient of the stem's input (the same function; zero padding
        # commutes with the bias-free adapter)
        w = self.network.get_submodule(stem).weight
        folded = torch.einsum("oikl,ic->ockl", w, self.adapter.conv.weight.flatten(1))
        if self.channels_last:
            folded = folded.contiguous(memory_format=torch.channels_last)
        return functional_call(self.network, {f"{stem}.weight": folded}, (x,))

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return checkpoint(self._net, x, use_reentrant=False,
                              context_fn=lambda: (contextlib.nullcontext(), _NoRunningStatsUpdate(self)))
        return self._net(x)

    def _encode(self, slices: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            slices = slices.contiguous(memory_format=torch.channels_last)
        if self.chunk_size is None or slices.shape[0] <= self.chunk_size:
            return self._run(slices)
        return torch.cat([self._run(c) for c in slices.split(self.chunk_size)])

    def _dedupe_applies(self, slices: torch.Tensor) -> bool:
        if not self.dedupe or slices.requires_grad or _hooked(self):
            return False
        if not batch_statistics_in_use(self):
            return True  # running statistics: the encoder is a per-slice function
        # batch statistics: exact through CountedBatchNorm2d, for one un-chunked call without recomputation
        whole = self.chunk_size is None or slices.shape[0] <= self.chunk_size
        return whole and not self.checkpointing and all(
            isinstance(m, CountedBatchNorm2d) for m in self.modules() if isinstance(m, _BatchNorm))

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, F)."""
        if not self._dedupe_applies(slices):
            return self._encode(slices)
        found = unique_slices(slices)
        n = slices.shape[0]
        self.last_dedupe = (n, n) if found is None else (found[0].shape[0], n)
        if found is None:
            return self._encode(slices)
        uniq, inverse = found
        counts = torch.bincount(inverse, minlength=uniq.shape[0])
        with _row_counts(self, counts):
            return self._encode(uniq).index_select(0, inverse)
