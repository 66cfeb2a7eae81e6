"""Weights for a 2D network: ``"imagenet"`` (torchvision's, cached under ``$TORCH_HOME``), a local state-dict
file, or ``None`` (random). A file that is no state dict fails with one ValueError naming it and what it is
instead (text, a whole pickled model, a training checkpoint, a truncated file, ...); a state dict that does not
fit names the keys and shapes that differ.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

Weights = str | os.PathLike | None
_CORRUPT_TORCH, _CORRUPT_PICKLE = "it is a corrupt PyTorch file", "it is a truncated or corrupt pickle"


def is_imagenet(weights: Weights) -> bool:
    return isinstance(weights, str) and weights.lower() == "imagenet"


def few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f", ... ({len(keys)} in all)" if len(keys) > 3 else "")


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
    return ValueError(
        f"weights file {path} is not a PyTorch state dict ({what}): pass a file saved with "
        "torch.save(model.state_dict(), path), 'imagenet' or none"
    )


def load_file(path: Path) -> dict[str, torch.Tensor]:
    """A torch state dict file's tensors, or one ValueError saying what the file is instead."""
    try:
        with warnings.catch_warnings():  # a plain pickle of protocol > 2 draws a multi-line note before failing
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises KeyError, IndexError, EOFError, RuntimeError, ... on junk
        kind = _file_kind(path)
        if (
            kind in (_CORRUPT_TORCH, _CORRUPT_PICKLE)
            and isinstance(err, pickle.UnpicklingError)
            and "Weights only load failed" in str(err)
        ):  # a real pickle, of more than tensors
            kind = "it holds Python objects besides tensors, e.g. a whole model saved with torch.save(model, path)"
        raise _not_state_dict(path, kind) from None  # torch's own text runs over many lines
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):  # a training checkpoint
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise _not_state_dict(path, f"it holds a {type(state).__name__}, not a dict of parameter names to tensors")
    odd = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    if odd is not None:
        nested = next(
            (
                k
                for k, v in state.items()
                if isinstance(v, Mapping) and v and all(isinstance(t, torch.Tensor) for t in v.values())
            ),
            None,
        )
        if nested is not None:
            raise _not_state_dict(
                path,
                f"it looks like a training checkpoint whose {nested!r} entry holds the "
                f"state dict; save that alone: torch.save(checkpoint[{nested!r}], path)",
            )
        keys = ", ".join(map(str, list(state)[:4])) + (", ..." if len(state) > 4 else "")
        raise _not_state_dict(
            path, f"it is a dict whose entry {odd!r} is not a tensor but {type(state[odd]).__name__}; keys: {keys}"
        )
    return dict(state)


def imagenet_weights(name: str) -> tuple[torchvision.models.WeightsEnum, Path]:
    """torchvision's ImageNet weights of ``name`` and the file its cache keeps them in."""
    spec = torchvision.models.get_model_weights(name).DEFAULT
    return spec, Path(torch.hub.get_dir()) / "checkpoints" / Path(spec.url).name


def load_state_dict(name: str, weights: Weights) -> dict[str, torch.Tensor] | None:
    """Resolve a weights spec to a state dict of torchvision's ``name`` classifier."""
    if weights is None:
        return None
    if is_imagenet(weights):
        spec, cache = imagenet_weights(name)
        try:
            return spec.get_state_dict(progress=False)
        except Exception as err:  # offline: URLError, OSError, ...; a damaged cached file: torch.load's errors
            if cache.is_file():
                raise RuntimeError(
                    f"cached ImageNet weights {cache} cannot be read ({_file_kind(cache)}): delete "
                    f"the file and run again with internet, or fetch {spec.url} into "
                    f"{cache.parent}"
                ) from err
            raise RuntimeError(
                f"ImageNet weights for {name} are not in the cache ({cache}) and could not be downloaded "
                f"({type(err).__name__}); fetch {spec.url} into that folder on a machine with internet, "
                "or pass weights=<path to a state dict file>"
            ) from err
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} does not exist; pass 'imagenet', None or the path "
            "to a torchvision state dict (torch.save(model.state_dict(), path))"
        )
    return load_file(path)


def fit_problems(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """Which keys of ``state`` do not fit ``model``: missing, unexpected, other shapes (a few of each)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} is {list(state[k].shape)} in the file, {list(v.shape)} in the network"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    parts = (
        ([f"missing keys {few(missing)}"] if missing else [])
        + ([f"unexpected keys {few(unexpected)}"] if unexpected else [])
        + shapes[:2]
    )
    if len(shapes) > 2:
        parts.append(f"... ({len(shapes)} shape mismatches in all)")
    return "; ".join(parts)


def timm_no_imagenet(name: str) -> ValueError:
    return ValueError(
        f"timm backbones take weights from a local file, not 'imagenet' (torchvision's): where the "
        f'internet is reachable save them once, python -c "import timm, torch; torch.save(timm.'
        f"create_model('{name}', pretrained=True).state_dict(), '{name}.pt')\" (or the model.safetensors "
        f"of hf.co/timm/{name}), and pass weights=<that file>; or weights=None (random)"
    )
