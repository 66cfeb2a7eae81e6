"""3D and ACS baselines: the same 2D network converted with ``acsconv``.

3D keeps the 2D kernels by i3d inflation (repeat along depth, divide by its size), as the paper
says; the authors' code trained 3D from random weights. acsconv 0.1.1 crashes on current PyTorch
when it converts BatchNorm (it passes the bias tensor as the new boolean ``bias``). The fix lives
here only: we make norm layers 3D first, under a class name acsconv does not know, so it leaves them.
Supported backbones: the torchvision ResNets of ``CONVERTIBLE``; others (timm's among them) are refused.
"""

from __future__ import annotations

import contextlib
import io

import torch
from torch import nn

with contextlib.redirect_stdout(io.StringIO()):  # acsconv prints a banner on import
    from acsconv.converters import ACSConverter, Conv3dConverter

from .backbone import backbone_network, channel_adapter
from .slicing import check_volume
from .weights import Weights

CONVERTIBLE = ("resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d", "wide_resnet50_2")


class BatchNorm3dFromBN2d(nn.BatchNorm3d):
    """A BatchNorm2d made 3D in place (same tensors), under a name acsconv leaves alone."""


def _norms_to_3d(network: nn.Module) -> nn.Module:
    for m in network.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.__class__ = BatchNorm3dFromBN2d  # BatchNorm2d and 3d differ only in the input check
    return network


def convert_to_3d(network: nn.Module) -> nn.Module:
    """2D -> 3D convolutions with inflated kernels."""
    return Conv3dConverter(_norms_to_3d(network), i3d_repeat_axis=-3).model


def convert_to_acs(network: nn.Module) -> nn.Module:
    """2D -> ACS convolutions: each kernel's output channels split over the three planes."""
    return ACSConverter(_norms_to_3d(network)).model


class VolumeClassifier(nn.Module):
    """A converted network on whole volumes: adapter -> 3D/ACS backbone -> linear head."""

    def __init__(self, network: nn.Module, features: int, in_channels: int, num_outputs: int):
        super().__init__()
        self.encoder = nn.Sequential(channel_adapter(in_channels, dims=3), network)
        self.head = nn.Linear(features, num_outputs)
        self.in_channels = in_channels

    def new_modules(self) -> list[nn.Module]:
        return [self.head]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, D, H, W) -> pooled features (B, F): everything but the head."""
        check_volume(x, self.in_channels)
        return self.encoder(x)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(x))


def build(convert, backbone: str, weights: Weights, in_channels: int, num_outputs: int) -> VolumeClassifier:
    """The 2D ``backbone`` converted by ``convert`` (:func:`convert_to_3d` or :func:`convert_to_acs`)."""
    if backbone not in CONVERTIBLE:
        raise ValueError(
            f"the 3d and acs methods need a torchvision ResNet-family backbone; got {backbone!r}, "
            f"valid: {', '.join(CONVERTIBLE)} (timm backbones serve the 2.5D methods only)"
        )
    network, features = backbone_network(backbone, weights)
    return VolumeClassifier(convert(network), features, in_channels, num_outputs)
