"""Models: the one registry of methods, and ``build_model``, the one entry point to them.

A 2.5D method is a reducer over slice tokens (:mod:`.reducers`, :class:`.model25d.Model25D`), or over (slice,
cell) tokens (:mod:`.spatial`, beyond the paper: a voxel map out of the forward pass); a volume method is the
same 2D network converted to 3D or ACS convolutions (:mod:`.baselines`). Both expose ``features(x)`` (what a
frozen encoder gives) and ``classify(features)`` (logits).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from torch import nn

from . import baselines, reducers, spatial
from .backbone import SliceEncoder, Weights
from .baselines import VolumeClassifier
from .fast import apply as apply_speed
from .model25d import Model25D, Output25D
from .slicing import AXIS_NAMES, SliceLayout


class Method(NamedTuple):
    label: str  # how tables and figures name it
    family: str  # "2.5d": a reducer over slice tokens; "volume": a converted 3D network
    build: Callable  # reducer class (feature width -> module), or converter (2D network -> 3D network)
    weighs: bool = False  # its reducer returns one weight per slice: the explanation lib25d.explain reads
    eval_first_epoch: bool = True  # the authors' warm-up runs epoch 1 in eval mode (their LSTM: train mode)
    model: Callable | None = None  # assembles a 2.5D model other than Model25D(encoder, reducer, head)


METHODS: dict[str, Method] = {
    "attention": Method("Attention", "2.5d", reducers.AttentionPool, True),
    "mean": Method("Mean", "2.5d", reducers.MeanPool),
    "max": Method("Max", "2.5d", reducers.MaxPool),
    "lstm": Method("LSTM", "2.5d", reducers.LSTMReducer, eval_first_epoch=False),
    "transformer": Method("Transformer", "2.5d", reducers.TransformerReducer),
    "gated": Method("Gated attention-MIL (beyond the paper)", "2.5d", reducers.GatedAttentionMIL, True),
    "3d": Method("3D", "volume", baselines.convert_to_3d),
    "acs": Method("ACS", "volume", baselines.convert_to_acs),
    "spatial": Method(
        "Spatial attention (beyond the paper)", "2.5d", reducers.AttentionPool, True, model=spatial.build
    ),
}


def check_method(name: str) -> Method:
    """The registry entry of ``name``, or a ValueError listing the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]


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


__all__ = [
    "METHODS",
    "Method",
    "build_model",
    "check_method",
    "count_parameters",
    "set_encoder_trainable",
    "Model25D",
    "Output25D",
    "VolumeClassifier",
    "AXIS_NAMES",
    "SliceLayout",
]
