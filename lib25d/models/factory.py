"""``build_model``: the one entry point from a method name to a model (timm's ``create_model`` in spirit)."""

from __future__ import annotations

from torch import nn

from . import baselines
from .backbone import SliceEncoder, Weights
from .fast import apply as apply_speed
from .model25d import Model25D
from .registry import check_method


def build_model(
    method: str,
    backbone: str = "resnet18",
    weights: Weights = None,
    in_channels: int = 1,
    num_classes: int = 2,
    chunk_size: int | None = None,
    axes: tuple[int, ...] = (0, 1, 2),
    speed=None,
) -> nn.Module:
    """A model by method name. ``backbone``: a torchvision name or ``timm:<name>``; ``weights``: "imagenet"
    (torchvision only), a state-dict file (timm: also .safetensors), or None (random);
    ``speed``: a RunConfig whose speed switches to apply (:mod:`.fast`), or None."""
    m = check_method(method)
    if in_channels < 1:
        raise ValueError(f"in_channels must be positive, got {in_channels}")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    outputs = 1 if num_classes == 2 else num_classes  # binary: one logit (BCE); else one per class
    if m.family == "volume":
        model = baselines.build(m.build, backbone, weights, in_channels, outputs)
    elif m.model is not None:
        model = m.model(backbone, weights, in_channels, outputs, axes, chunk_size)
    else:
        encoder = SliceEncoder(backbone, weights, in_channels, chunk_size)
        model = Model25D(encoder, m.build(encoder.out_features), outputs, axes)
    return model if speed is None else apply_speed(model, speed)


def set_encoder_trainable(model: nn.Module, trainable: bool) -> None:
    """Freeze or unfreeze the pretrained part (warm-up trains only ``model.new_modules()``)."""
    model.encoder.requires_grad_(trainable)


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """How many (trainable) parameter values the model has."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
