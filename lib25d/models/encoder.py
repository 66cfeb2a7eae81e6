"""A torchvision classification backbone as a per-slice (or per-volume) feature extractor.

Weights are ``"imagenet"`` (torchvision's weights API, cached under ``$TORCH_HOME``),
a path to a local state dict of the full torchvision classifier, or ``None`` (random).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn
import torchvision

Weights = str | os.PathLike | None
BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d",
             "wide_resnet50_2", "densenet121", "efficientnet_b0", "mobilenet_v3_small",
             "mobilenet_v3_large", "convnext_tiny", "regnet_y_400mf")


def _check_backbone(name: str) -> None:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")


def load_state_dict(name: str, weights: Weights) -> dict[str, torch.Tensor] | None:
    """Resolve a weights spec to a state dict of torchvision's ``name`` classifier."""
    if weights is None:
        return None
    if isinstance(weights, str) and weights.lower() == "imagenet":
        spec = torchvision.models.get_model_weights(name).DEFAULT
        try:
            return spec.get_state_dict(progress=False)
        except Exception as err:  # offline: URLError, OSError, ...
            cache = Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.url).name
            raise RuntimeError(
                f"ImageNet weights for {name} are not in the cache ({cache}) and could not be downloaded "
                f"({type(err).__name__}); fetch {spec.url} into that folder on a machine with internet, "
                "or pass weights=<path to a state dict file>") from err
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass 'imagenet', None or the path "
                                "to a torchvision state dict (torch.save(model.state_dict(), path))")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:  # a training checkpoint
        state = state["state_dict"]
    return state


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
    _check_backbone(name)
    model = torchvision.models.get_model(name, weights=None)
    state = load_state_dict(name, weights)
    if state is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"weights do not fit torchvision's {name}: {str(err).splitlines()[0]} "
                             "(was the file saved from a different architecture?)") from err
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


class SliceEncoder(nn.Module):
    """2D backbone applied to a batch of slices, optionally in chunks to bound peak memory.

    Chunking is exact in eval mode; in train mode BatchNorm sees per-chunk statistics.
    """

    def __init__(self, backbone: str = "resnet18", weights: Weights = None, in_channels: int = 1,
                 chunk_size: int | None = None):
        super().__init__()
        self.adapter = channel_adapter(in_channels, dims=2)
        self.network, self.out_features = backbone_network(backbone, weights)
        self.in_channels = in_channels
        self.chunk_size = chunk_size

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) -> (N, F)."""
        if self.chunk_size is None or slices.shape[0] <= self.chunk_size:
            return self.network(self.adapter(slices))
        return torch.cat([self.network(self.adapter(c)) for c in slices.split(self.chunk_size)])
