"""``build_model``: the one entry point from a method name to a model."""
from __future__ import annotations

from torch import nn

from .baselines import build_baseline
from .encoder import SliceEncoder, Weights
from .model25d import Model25D
from .reducers import REDUCERS, build_reducer

BASELINES = ("3d", "acs")
METHODS = (*REDUCERS, *BASELINES)


def num_outputs(num_classes: int) -> int:
    """Binary tasks use one logit (BCE), multi-class one logit per class (cross-entropy)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    return 1 if num_classes == 2 else num_classes


def build_model(method: str, backbone: str = "resnet18", weights: Weights = None, in_channels: int = 1,
                num_classes: int = 2, chunk_size: int | None = None,
                axes: tuple[int, ...] = (0, 1, 2)) -> nn.Module:
    """A 2.5D model (method = reducer name) or a converted baseline (``3d``, ``acs``).

    ``weights``: ``"imagenet"``, a path to a torchvision state dict, or ``None`` (random).
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    outputs = num_outputs(num_classes)
    if method in BASELINES:
        return build_baseline(method, backbone, weights, in_channels, outputs)
    encoder = SliceEncoder(backbone, weights, in_channels, chunk_size)
    return Model25D(encoder, build_reducer(method, encoder.out_features), outputs, axes)


def set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze the pretrained part (warm-up trains only ``model.new_modules()``)."""
    model.encoder.requires_grad_(trainable)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)

