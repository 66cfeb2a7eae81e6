"""Speed switches: exact rewrites of the same function, applied once when a model is built.

``apply(model, config)`` (or keywords named as RunConfig's speed fields) swaps classes in place, so
parameters and ``state_dict`` keys stay. The kernels (:mod:`.kernels`) compute the functions of the modules
they replace up to float summation order; tests/test_perf.py checks the numbers, ``python -m study.bench``
what each buys.
"""

from __future__ import annotations

import torch
from torch import nn

from ..backbone import SliceEncoder
from .encoder import FastSliceEncoder, unique_slices
from .kernels import CountedBatchNorm2d, TinyConv2d, TinyConv3d

__all__ = [
    "CountedBatchNorm2d",
    "FastSliceEncoder",
    "TinyConv2d",
    "TinyConv3d",
    "apply",
    "unique_slices",
    "use_tiny_convs",
]


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
