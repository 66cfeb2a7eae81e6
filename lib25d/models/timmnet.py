"""Any timm model as the 2D network (``backbone="timm:<name>"``), through timm's own feature API.

The model is created with ``num_classes=0``; a slice's feature is ``forward_head(forward_features(x),
pre_logits=True)``, of width ``head_hidden_size`` (else ``num_features``). Weights: a local file only
(a state dict in timm's naming, ``.pt``/``.pth`` or ``.safetensors``), loaded by timm itself
(``pretrained_cfg_overlay=dict(file=...)``, which runs the model's checkpoint filter), or random. timm
never downloads here. Slice sizes:

- ViT-family models (those taking ``dynamic_img_size``) run at the slice's size: timm interpolates the
  position embeddings (bicubic, ``resample_abs_pos_embed``) and pads slices the patch does not divide;
- models with a fixed input size (``pretrained_cfg['fixed_input_size']``) get slices resized to it;
- convolutional models run at the slice's own size; a slice whose shorter side is below the model's
  total stride (``feature_info[-1]['reduction']``, 32 for most) is scaled up, aspect kept, until it is
  not, so the last feature map is at least 1x1 whatever the padding (ConvNeXt's 28x28 would reach 0x0).

Resizing is bilinear (``align_corners=False``) and comes after the channel adapter.
"""
from __future__ import annotations

import difflib
import inspect
import math
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

PREFIX = "timm:"
DEFAULT_STRIDE = 32  # where a model lists no feature_info


def is_timm(backbone: str) -> bool:
    return isinstance(backbone, str) and backbone.startswith(PREFIX)


def check(name: str) -> None:
    """One line naming close matches where ``name`` (``timm:`` stripped, ``.tag`` allowed) is no timm model."""
    import timm

    known = timm.list_models()
    if name.split(".")[0] in known:
        return
    starting = [m for m in known if m.startswith(name)]  # vit_tiny -> vit_tiny_patch16_224, ...
    close = starting[:5] or difflib.get_close_matches(name, known, n=5, cutoff=0.6)
    raise ValueError(f"unknown timm model {name!r}; close matches: {', '.join(close) or 'none'} "
                     "(all: python -c 'import timm; print(timm.list_models())')")


def _size_options(name: str) -> dict:
    """dynamic_img_size (and padding) for the models that take it: a meta-device probe reads the class."""
    import timm

    with torch.device("meta"):
        probe = timm.create_model(name, pretrained=False, num_classes=0)
    params = inspect.signature(type(probe).__init__).parameters
    out = {"dynamic_img_size": True} if "dynamic_img_size" in params else {}
    return out | ({"dynamic_img_pad": True} if out and "dynamic_img_pad" in params else {})


def no_imagenet(name: str) -> ValueError:
    return ValueError(f"timm backbones take weights from a local file, not 'imagenet' (torchvision's): where the "
                      f"internet is reachable save them once, python -c \"import timm, torch; torch.save(timm."
                      f"create_model('{name}', pretrained=True).state_dict(), '{name}.pt')\" (or the model.safetensors "
                      f"of hf.co/timm/{name}), and pass weights=<that file>; or weights=None (random)")


def _read(path: Path) -> dict[str, torch.Tensor]:
    """The file's tensors, checked before timm reads it (torch files with backbone.py's checks and messages)."""
    if path.suffix != ".safetensors":
        from .backbone import _load_file

        return _load_file(path)
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as err:  # SafetensorError, OSError, ...
        raise ValueError(f"weights file {path} is not a readable safetensors file ({' '.join(str(err).split())})"
                         ": pass a file saved with safetensors.torch.save_file(model.state_dict(), path)") from None


def _create(name: str, weights, options: dict) -> nn.Module:
    import timm

    if weights is None:
        return timm.create_model(name, pretrained=False, num_classes=0, **options)
    if isinstance(weights, str) and weights.lower() == "imagenet":
        raise no_imagenet(name)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass None or the path to a state dict "
                                "(.pt or .safetensors) of the timm model")
    state = _read(path)
    try:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)),
                                  num_classes=0, **options)
    except Exception as err:  # load_state_dict's RuntimeError (shapes), a checkpoint filter's KeyError, ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()] or [type(err).__name__]
        first = lines[1] if isinstance(err, RuntimeError) and len(lines) > 1 else f"{type(err).__name__} {lines[0]}"
        raise ValueError(f"weights in {path} do not fit timm's {name}: {first} "
                         "(was the file saved from a different architecture?)") from None
    missing = [k for k in model.state_dict() if k not in state]  # timm loads with strict=False without a head
    if missing:
        few = ", ".join(missing[:3]) + (f", ... ({len(missing)} in all)" if len(missing) > 3 else "")
        raise ValueError(f"weights in {path} do not fit timm's {name}: missing keys {few} "
                         "(was the file saved from a different architecture, or not in timm's naming?)")
    return model


class TimmNetwork(nn.Module):
    """A timm model without its classifier: slices (N, 3, h, w) -> features (N, F), sizes fitted (module doc)."""

    def __init__(self, name: str, weights=None):
        super().__init__()
        options = _size_options(name)
        self.model = _create(name, weights, options)
        cfg = self.model.pretrained_cfg or {}
        self.fixed = None if options or not cfg.get("fixed_input_size") else tuple(cfg["input_size"][-2:])
        info = getattr(self.model, "feature_info", None) or [{}]
        self.min_side = 0 if options else int(info[-1].get("reduction", DEFAULT_STRIDE))
        self.out_features = getattr(self.model, "head_hidden_size", None) or self.model.num_features

    def fit(self, x: torch.Tensor) -> torch.Tensor:
        """The slices at a size the model takes (module doc): unchanged, resized to its fixed size, or scaled up."""
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


def network(name: str, weights=None) -> tuple[nn.Module, int]:
    """The timm model ``name`` (``timm:`` stripped) as a slice network, and its feature width."""
    check(name)
    net = TimmNetwork(name, weights)
    return net, net.out_features
