"""Trained runs as (model, data): what the benchmark and the figures explain.

A run folder is what ``lib25d train`` writes: ``checkpoint.pt`` (config + final weights) and
``best.pt`` (best-validation weights). The model is rebuilt from the stored config with
random initial weights (the file brings the trained ones), so no ImageNet download is needed.
"""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import RunConfig
from ..data import DatasetInfo, VolumeDataset, dataset_info, load_dataset
from ..runinfo import resolve_device
from ..train import BEST, CHECKPOINT, model_for

WHICH = ("final", "best")


class Run(NamedTuple):
    path: Path
    config: RunConfig
    model: nn.Module


def load_run(run: str | Path, which: str = "final", device: str = "auto", data_root: str | None = None) -> Run:
    """The trained model of a run folder (eval mode, on ``device``) and its config.

    ``which``: ``final`` (last epoch, what the paper reports) or ``best`` (best validation AUROC).
    ``data_root`` overrides where the run's MedMNIST files are (runs trained on another machine).
    """
    if which not in WHICH:
        raise ValueError(f"unknown model choice {which!r}; valid: {', '.join(WHICH)}")
    path = Path(run)
    if not (path / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {path}: pass a folder written by 'lib25d train'")
    state = torch.load(path / CHECKPOINT, map_location="cpu", weights_only=False)
    changes = {"weights": None, "device": device}
    if data_root is not None:
        changes["data_root"] = str(data_root)
    config = RunConfig.from_dict(state["config"]).replace(**changes)
    if which == "best":
        if not (path / BEST).is_file():
            raise FileNotFoundError(f"no {BEST} in {path}: use which='final' or finish the run")
        weights = torch.load(path / BEST, map_location="cpu", weights_only=False)["model"]
    else:
        weights = state["model"]
    model = model_for(config, SimpleNamespace(info=run_data_info(config)))  # model_for reads only .info
    model.load_state_dict(weights)
    return Run(path, config, model.to(resolve_device(device)).eval())


def run_data_info(config: RunConfig) -> DatasetInfo:
    """The run's dataset description, without loading voxels."""
    return dataset_info(config.dataset, size=config.size, root=config.data_root, **config.dataset_options)


def run_data(config: RunConfig, split: str = "test") -> VolumeDataset:
    """The split the run was trained and tested on (same dataset, size, options)."""
    return load_dataset(config.dataset, split, size=config.size, root=config.data_root, **config.dataset_options)


def volume_batch(data: VolumeDataset, index: np.ndarray | slice) -> torch.Tensor:
    """Volumes ``(B, C, D, H, W)`` float32 for the given indices of a dataset."""
    return torch.as_tensor(np.asarray(data.volumes[index], dtype=np.float32))


def labels_of(data: VolumeDataset, index: np.ndarray | slice) -> np.ndarray:
    return np.asarray(data.labels)[index].reshape(-1)
