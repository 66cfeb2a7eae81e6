"""HiResCAM of the 3D and ACS baselines through the ``grad-cam`` package.

A CAM is only as fine as its layer's feature map and a 1x1x1 map upsamples to a blank image, so the ResNet stage
depends on the shortest side (:data:`LAYER_MIN_SIDE`; 2x2x2 at 28^3 and 32^3). grad-cam 1.5.x upsamples 3D maps
with a corner-aligned cubic spline that rings below zero and shifts a coarse cell towards the corner, so
:class:`HiResCAM3D` upsamples trilinearly on voxel centres instead. Maps are scaled to max 1 (not min-max), so
that "share of the map inside the lesion" keeps its meaning.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_grad_cam import HiResCAM
from torch import nn

from ..models import Model25D, VolumeClassifier
from ..models.slicing import check_volume
from .attention import eval_mode, model_device

LAYER_MIN_SIDE = (("layer4", 64), ("layer3", 17), ("layer2", 9), ("layer1", 1))


def cam_layer_name(shape: tuple[int, ...]) -> str:
    """The ResNet stage for a volume of this spatial shape (the last three numbers)."""
    side = min(int(s) for s in tuple(shape)[-3:])
    return next(name for name, min_side in LAYER_MIN_SIDE if side >= min_side)


def _network(model: nn.Module) -> nn.Module:
    if isinstance(model, Model25D):
        raise ValueError(
            "HiResCAM here explains the 3d and acs baselines; a 2.5D model explains itself "
            "through its slice attention (lib25d.explain.slice_attention, method 'attention')"
        )
    if not isinstance(model, VolumeClassifier):
        raise ValueError(
            f"HiResCAM needs a 3d or acs VolumeClassifier, got {type(model).__name__}; "
            "build one with build_model('3d') or build_model('acs')"
        )
    return model.encoder[-1]


def default_cam_layer(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """The target layer of a 3d/acs ``model`` for input ``shape``."""
    return getattr(_network(model), cam_layer_name(shape))


class ClassTarget:
    """What HiResCAM differentiates: the logit of ``category`` (``None``: the predicted class); with one logit
    (binary) class 0 takes the negative logit, so the map always shows evidence *for* the explained class."""

    def __init__(self, category: int | None = None):
        self.category = category

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        output = output.reshape(-1)
        if output.numel() == 1:
            category = int(output[0] > 0) if self.category is None else self.category
            if category not in (0, 1):
                raise ValueError(f"a one-logit (binary) model has classes 0 and 1, not {category}")
            return output[0] if category == 1 else -output[0]
        category = int(output.argmax()) if self.category is None else self.category
        if not 0 <= category < output.numel():
            raise ValueError(f"class {category} is outside 0..{output.numel() - 1}")
        return output[category]


def upsample_cam(cam: torch.Tensor | np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """``(B, d, h, w)`` -> ``(B, D, H, W)`` by trilinear interpolation on voxel centres (never below 0 for cam >= 0)."""
    cam = torch.as_tensor(np.asarray(cam), dtype=torch.float32)
    return F.interpolate(cam[:, None], size=tuple(size), mode="trilinear", align_corners=False)[:, 0].numpy()


class HiResCAM3D(HiResCAM):
    """grad-cam's HiResCAM for volumes, with its 3D upsampling and scaling replaced (see module docstring)."""

    def compute_cam_per_layer(self, input_tensor, targets, eigen_smooth):
        size = tuple(input_tensor.shape[-3:])
        out = []
        for layer, acts, grads in zip(
            self.target_layers, self.activations_and_grads.activations, self.activations_and_grads.gradients
        ):
            if max(acts.shape[2:]) == 1:
                raise ValueError(
                    f"the target layer's feature map is 1x1x1 for input {size}, so its CAM would be "
                    f"blank; use an earlier layer ({cam_layer_name(size)}, default_cam_layer)"
                )
            cam = self.get_cam_image(input_tensor, layer, targets, acts.numpy(), grads.numpy(), eigen_smooth)
            out.append(upsample_cam(np.maximum(cam, 0), size)[:, None])
        return out

    def aggregate_multi_layers(self, cam_per_target_layer):
        maps = np.concatenate(cam_per_target_layer, axis=1).mean(axis=1)
        peak = maps.reshape(len(maps), -1).max(axis=1).reshape(-1, 1, 1, 1)
        return np.where(peak > 0, maps / np.where(peak > 0, peak, 1.0), 0.0).astype(np.float32)


def hirescam(
    model: nn.Module,
    volumes: torch.Tensor | np.ndarray,
    category: int | list[int] | None = None,
    layer: nn.Module | str | None = None,
) -> np.ndarray:
    """HiResCAM ``(B, D, H, W)`` of a 3d/acs model in [0, 1] (1 at each volume's peak; all zero: no positive
    evidence) for ``category`` None (the predicted class), one class or one per volume; ``layer`` a module, a stage
    name or None (:func:`default_cam_layer`). A backward pass in eval mode; clears the model's ``.grad``."""
    network = _network(model)
    x = torch.as_tensor(volumes, dtype=torch.float32)
    check_volume(x, model.in_channels)  # the model's own check, before choosing a layer from the shape
    if layer is None or isinstance(layer, str):
        name = layer or cam_layer_name(tuple(x.shape))
        if not hasattr(network, name):
            raise ValueError(f"the network has no layer {name!r}; use layer1..layer4 or pass a module")
        layer = getattr(network, name)
    if category is None or isinstance(category, (int, np.integer)):
        targets = [ClassTarget(None if category is None else int(category))] * x.shape[0]
    elif len(category) == x.shape[0]:
        targets = [ClassTarget(int(c)) for c in category]
    else:
        raise ValueError(
            f"{len(category)} classes for {x.shape[0]} volumes: give one class per volume, one int, or None"
        )
    x = x.to(model_device(model)).detach().requires_grad_(True)  # gradients flow even with frozen weights
    with eval_mode(model), torch.enable_grad():
        cam = HiResCAM3D(model, [layer])
        try:
            return cam(x, targets=targets)
        finally:
            cam.activations_and_grads.release()
            model.zero_grad(set_to_none=True)
