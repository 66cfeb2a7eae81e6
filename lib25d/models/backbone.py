"""The 2D network (a torchvision classifier by name, or any timm model as ``timm:<name>``), its weights,
its channel adapter, and the slice encoder.

Weights: ``"imagenet"`` (torchvision only, cached under ``$TORCH_HOME``), a local state dict file (timm: in
timm's naming, also ``.safetensors``, loaded by timm so its checkpoint filter runs; timm never downloads
here) or ``None`` (random). A file that is no such state dict fails with one ValueError naming the file
and what is wrong with it. timm slices: ViT-family models run at the slice's size (timm interpolates the
position embeddings and pads to the patch), fixed-size models get slices resized to it, convolutional ones
get slices shorter than their total stride scaled up (ConvNeXt's 28x28 would reach a 0x0 map).
"""

from __future__ import annotations

import difflib
import inspect
import math
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from .weights import (
    Weights,
    few,
    fit_problems,
    imagenet_weights,
    is_imagenet,
    load_file,
    load_state_dict,
    timm_no_imagenet,
)

BACKBONES = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnext50_32x4d",
    "wide_resnet50_2",
    "densenet121",
    "efficientnet_b0",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "convnext_tiny",
    "regnet_y_400mf",
)
TIMM = "timm:"


def _timm_name(backbone: str) -> str | None:
    """The timm model of ``timm:<name>``, else None."""
    return backbone[len(TIMM) :] if isinstance(backbone, str) and backbone.startswith(TIMM) else None


def check_backbone(name: str) -> None:
    """Refuse an unknown backbone, naming the valid ones (timm: the close matches; ``.tag`` allowed)."""
    timm_name = _timm_name(name)
    if timm_name is None:
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)} or timm:<any timm model>")
        return
    import timm  # heavy optional import: only for timm:<name> backbones

    known = timm.list_models()
    if timm_name.split(".")[0] not in known:
        starting = [m for m in known if m.startswith(timm_name)]  # vit_tiny -> vit_tiny_patch16_224, ...
        close = starting[:5] or difflib.get_close_matches(timm_name, known, n=5, cutoff=0.6)
        raise ValueError(
            f"unknown timm model {timm_name!r}; close matches: {', '.join(close) or 'none'} "
            "(all: python -c 'import timm; print(timm.list_models())')"
        )


def imagenet_file(name: str, download: bool = True) -> Path:
    """The cached ImageNet weights of ``name``, downloaded once when allowed (the workflow's fetch)."""
    check_backbone(name)
    if _timm_name(name) is not None:
        raise timm_no_imagenet(_timm_name(name))
    spec, cache = imagenet_weights(name)
    if not cache.is_file():
        if not download:
            raise FileNotFoundError(
                f"ImageNet weights {cache} not found and download is off: put {spec.url} there or set TORCH_HOME"
            )
        load_state_dict(name, "imagenet")  # downloads it, or one error saying how to fetch it
    return cache


def backbone_network(name: str, weights: Weights = None) -> tuple[nn.Module, int]:
    """The 2D network without its classifier, and its feature width. torchvision's gets ``weights``
    strictly, into the full classifier (a wrong file fails loudly), then its last Linear becomes Identity."""
    check_backbone(name)
    if _timm_name(name) is not None:
        net = TimmNetwork(_timm_name(name), weights)
        return net, net.out_features
    model = torchvision.models.get_model(name, weights=None)
    state = load_state_dict(name, weights)
    if state is not None:
        problems = fit_problems(model, state)
        if problems:
            source = "ImageNet weights" if is_imagenet(weights) else f"weights in {Path(weights)}"
            raise ValueError(
                f"{source} do not fit torchvision's {name}: {problems} "
                "(was the file saved from a different architecture?)"
            )
        model.load_state_dict(state)
    if hasattr(model, "fc"):  # ResNets, RegNet
        features, model.fc = model.fc.in_features, nn.Identity()
    elif isinstance(model.classifier, nn.Linear):  # DenseNet
        features, model.classifier = model.classifier.in_features, nn.Identity()
    else:  # a Sequential ending in its Linear: EfficientNet, MobileNet, ConvNeXt
        features, model.classifier[-1] = model.classifier[-1].in_features, nn.Identity()
    return model, features


def _timm_model(name: str, weights: Weights, options: dict) -> nn.Module:
    """timm's ``name`` without classifier, random or from a local file checked first (one-line errors)."""
    import timm  # heavy optional import: only for timm:<name> backbones

    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=0, **options)
    if is_imagenet(weights):
        raise timm_no_imagenet(name)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass None or the path to a state dict "
            "(.pt or .safetensors) of the timm model"
        )
    if path.suffix != ".safetensors":
        state = load_file(path)
    else:
        from safetensors.torch import load_file as load_safetensors  # timm's dependency, only for this format

        try:
            state = load_safetensors(path)
        except Exception as err:  # SafetensorError, OSError, ...
            raise ValueError(
                f"weights file {path} is not a readable safetensors file ({' '.join(str(err).split())})"
                ": pass a file saved with safetensors.torch.save_file(model.state_dict(), path)"
            ) from None
    try:
        model = timm.create_model(
            name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), num_classes=0, **options
        )
    except Exception as err:  # load_state_dict's RuntimeError (shapes), a checkpoint filter's KeyError, ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        first = lines[1] if isinstance(err, RuntimeError) and len(lines) > 1 else f"{type(err).__name__} {lines[0]}"
        raise ValueError(
            f"weights in {path} do not fit timm's {name}: {first} (was the file saved from a different architecture?)"
        ) from None
    missing = [k for k in model.state_dict() if k not in state]  # timm loads with strict=False without a head
    if missing:
        raise ValueError(
            f"weights in {path} do not fit timm's {name}: missing keys {few(missing)} "
            "(was the file saved from a different architecture, or not in timm's naming?)"
        )
    return model


class TimmNetwork(nn.Module):
    """A timm model without its classifier: slices (N, 3, h, w) -> ``forward_head(..., pre_logits=True)``."""

    def __init__(self, name: str, weights: Weights = None):
        super().__init__()
        import timm  # heavy optional import: only for timm:<name> backbones

        with torch.device("meta"):  # a probe of the class: does it take dynamic_img_size (and padding)?
            probe = timm.create_model(name, pretrained=False, num_classes=0)
        params = inspect.signature(type(probe).__init__).parameters
        options = {"dynamic_img_size": True} if "dynamic_img_size" in params else {}
        options |= {"dynamic_img_pad": True} if options and "dynamic_img_pad" in params else {}
        self.model = _timm_model(name, weights, options)
        cfg = self.model.pretrained_cfg or {}
        self.fixed = None if options or not cfg.get("fixed_input_size") else tuple(cfg["input_size"][-2:])
        info = getattr(self.model, "feature_info", None) or [{}]
        self.min_side = 0 if options else int(info[-1].get("reduction", 32))  # 32: no feature_info
        self.out_features = getattr(self.model, "head_hidden_size", None) or self.model.num_features

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """The slices at a size the model takes (bilinear, after the adapter): as they are, fixed, or scaled up."""
        h, w = x.shape[-2:]
        size = self.fixed
        if size is None and min(h, w) < self.min_side:
            scale = self.min_side / min(h, w)
            size = (max(self.min_side, math.ceil(h * scale)), max(self.min_side, math.ceil(w * scale)))
        if size is None or tuple(size) == (h, w):
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(self.fit(x)), pre_logits=True)


class ChannelAdapter(nn.Module):
    """C input channels to the 3 an ImageNet network expects: a 1x1 convolution initialised to 1/C,
    so each RGB channel starts as the channels' mean (C=1: the authors' grey image repeated)."""

    def __init__(self, in_channels: int, dims: int = 2, out_channels: int = 3):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv3d
        self.conv = conv(in_channels, out_channels, kernel_size=1, bias=False)
        nn.init.constant_(self.conv.weight, 1.0 / in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def channel_adapter(in_channels: int, dims: int) -> nn.Module:
    return nn.Identity() if in_channels == 3 else ChannelAdapter(in_channels, dims)


class SliceEncoder(nn.Module):
    """The 2D network on a batch of slices (N, C, h, w) -> (N, F), in chunks of ``chunk_size`` slices
    to bound peak memory (exact in eval mode; in train mode BatchNorm sees each chunk)."""

    def __init__(
        self, backbone: str = "resnet18", weights: Weights = None, in_channels: int = 1, chunk_size: int | None = None
    ):
        super().__init__()
        self.adapter = channel_adapter(in_channels, dims=2)
        self.network, self.out_features = backbone_network(backbone, weights)
        self.backbone, self.in_channels, self.chunk_size = backbone, in_channels, chunk_size

    def embed(self, slices: torch.Tensor) -> torch.Tensor:
        return self.network(self.adapter(slices))

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        if self.chunk_size is None or slices.shape[0] <= self.chunk_size:
            return self.embed(slices)
        return torch.cat([self.embed(c) for c in slices.split(self.chunk_size)])
