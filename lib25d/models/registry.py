"""The one registry of methods: name -> how tables name it, its family, and the code behind it.

It imports no torch. The workflow checks profiles and plans hundreds of jobs in processes that never build a
model, and a torch import costs each of them seconds of CPU; so the code behind a name is written as
``"module.attribute"`` inside :mod:`lib25d.models` and imported the first time a model is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import NamedTuple


def code(reference: str) -> Callable:
    """The object a registry reference names, e.g. ``"reducers.AttentionPool"``."""
    module, _, name = reference.rpartition(".")
    return getattr(importlib.import_module(f"{__package__}.{module}"), name)


class Method(NamedTuple):
    label: str  # how tables and figures name it
    family: str  # "2.5d": a reducer over slice tokens; "volume": a converted 3D network
    builds: str  # reducer class (feature width -> module), or converter (2D network -> 3D network)
    weighs: bool = False  # its reducer returns one weight per slice: the explanation lib25d.explain reads
    eval_first_epoch: bool = True  # the authors' warm-up runs epoch 1 in eval mode (their LSTM: train mode)
    assembles: str | None = None  # assembles a 2.5D model other than Model25D(encoder, reducer, head)

    @property
    def build(self) -> Callable:
        return code(self.builds)

    @property
    def model(self) -> Callable | None:
        return None if self.assembles is None else code(self.assembles)


METHODS: dict[str, Method] = {
    "attention": Method("Attention", "2.5d", "reducers.AttentionPool", True),
    "mean": Method("Mean", "2.5d", "reducers.MeanPool"),
    "max": Method("Max", "2.5d", "reducers.MaxPool"),
    "lstm": Method("LSTM", "2.5d", "reducers.LSTMReducer", eval_first_epoch=False),
    "transformer": Method("Transformer", "2.5d", "reducers.TransformerReducer"),
    "gated": Method("Gated attention-MIL (beyond the paper)", "2.5d", "reducers.GatedAttentionMIL", True),
    "3d": Method("3D", "volume", "baselines.convert_to_3d"),
    "acs": Method("ACS", "volume", "baselines.convert_to_acs"),
    "spatial": Method(
        "Spatial attention (beyond the paper)", "2.5d", "reducers.AttentionPool", True, assembles="spatial.build"
    ),
}


def check_method(name: str) -> Method:
    """The registry entry of ``name``, or a ValueError listing the valid names."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid: {', '.join(METHODS)}")
    return METHODS[name]
