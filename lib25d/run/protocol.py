"""The authors' training protocol, piece by piece: the run's data and model, the loss (BCE on one logit or
cross-entropy), autocast, the loaders seeded by (seed, epoch), the phase of each epoch (warm-up: which parts
train and in which BatchNorm mode), the warm-up feature cache and the evaluation of a split.
:mod:`.loop` puts them together; the benchmarks time the same pieces.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from ..data import DatasetInfo, VolumeDataset, load_dataset
from ..metrics import evaluate_scores, scores_from_logits
from ..models import METHODS, build_model, set_encoder_trainable
from .config import RunConfig

WARMUP_CACHE_LIMIT_BYTES = 4 * 2**30  # larger feature caches fall back to encoding every warm-up epoch


def split_of(config: RunConfig, split: str) -> VolumeDataset:
    """One split of the run's dataset (same name, size and options as it trained on)."""
    return load_dataset(config.dataset, split, size=config.size, root=config.data_root, **config.dataset_options)


def load_splits(config: RunConfig) -> dict[str, VolumeDataset]:
    return {split: split_of(config, split) for split in ("train", "val", "test")}


def model_for(config: RunConfig, info: DatasetInfo) -> nn.Module:
    """The run's model for the dataset's channels and classes, its speed switches applied."""
    return build_model(
        config.method,
        backbone=config.backbone,
        weights=config.weights,
        speed=config,
        in_channels=info.in_channels,
        num_classes=info.num_classes,
        chunk_size=config.chunk_size,
    )


def loss_function(num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if num_classes == 2:
        bce = nn.BCEWithLogitsLoss()
        return lambda logits, y: bce(logits[:, 0], y.to(logits.dtype))
    return nn.CrossEntropyLoss()


def autocast_for(device: torch.device, amp: bool, bf16_cpu: bool = False):
    """bf16 autocast on CUDA when ``amp``; on CPU only when ``bf16_cpu`` (CPU runs stay fp32 and
    reproducible; bf16 pays off only with native bf16, avx512_bf16 / AMX)."""
    if (device.type == "cuda" and amp) or (device.type == "cpu" and bf16_cpu):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast(device: torch.device, config: RunConfig):
    return autocast_for(device, config.amp, config.bf16_cpu)


def loader_workers(config: RunConfig, device: torch.device) -> int:
    """As configured; for -1 a few on CUDA (the GPU should not wait for batches) and none on CPU
    (workers would compete with the model for the same cores)."""
    if config.num_workers >= 0:
        return config.num_workers
    return min(4, os.cpu_count() or 1) if device.type == "cuda" else 0


def shuffle_seed(config: RunConfig, epoch: int) -> int:
    """Each epoch's shuffling and dropout depend on (seed, epoch) alone: resume is exact."""
    return config.seed * 100_003 + epoch


def loader(data: VolumeDataset, config: RunConfig, device: torch.device, shuffle_seed: int | None) -> DataLoader:
    gen = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    workers = loader_workers(config, device)
    return DataLoader(
        data,
        batch_size=config.batch_size,
        shuffle=gen is not None,
        generator=gen,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


def index_loader(data: VolumeDataset, config: RunConfig, shuffle_seed: int) -> DataLoader:
    """(indices, labels) batches, in the order the volume loader of the same seed visits the volumes."""
    indices = TensorDataset(torch.arange(len(data)), torch.as_tensor(data.labels))
    return DataLoader(
        indices, batch_size=config.batch_size, shuffle=True, generator=torch.Generator().manual_seed(shuffle_seed)
    )


def set_phase(model: nn.Module, config: RunConfig, epoch: int) -> bool:
    """Train mode and trainable parts for ``epoch`` (from 1); True in the warm-up. The first ``warmup_epochs``
    train only the new modules; their frozen encoder's BatchNorm (``warmup_bn``): ``authors`` runs epoch 1 in
    eval mode (unless the method's registry entry says otherwise: their LSTM) and later ones in train mode,
    which makes training from scratch work; ``frozen`` keeps eval mode, so the warm-up features can be cached."""
    warmup = epoch <= config.warmup_epochs
    set_encoder_trainable(model, not warmup)
    model.train()
    if warmup and config.warmup_bn == "frozen":
        model.encoder.eval()
    elif warmup and epoch == 1 and METHODS[config.method].eval_first_epoch:
        model.eval()  # the authors' epoch 0
    return warmup


@torch.no_grad()
def feature_cache(
    model: nn.Module, data: VolumeDataset, config: RunConfig, device: torch.device
) -> torch.Tensor | None:
    """Frozen features of every volume in order (None above the limit): what the warm-up computes
    while the encoder, BatchNorm included, is frozen in eval mode."""
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for x, _ in loader(data, config, device, None):
            with autocast(device, config):
                out.append(model.features(x.to(device, non_blocking=True)))
            if out[0][0].numel() * out[0].element_size() * len(data) > WARMUP_CACHE_LIMIT_BYTES:
                return None
    finally:
        model.train(was_training)
    return torch.cat(out)


def nonfinite_statistics(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers whose running statistics hold NaN or inf (what eval mode normalises with)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
        and m.running_mean is not None
        and not (torch.isfinite(m.running_mean).all() and torch.isfinite(m.running_var).all())
    ]


@torch.no_grad()
def evaluate(
    model: nn.Module, data: VolumeDataset, config: RunConfig, device: torch.device, loss_fn: Callable, when: str = ""
) -> dict[str, Any]:
    """Metrics, mean loss and scores of a whole split (in order); FloatingPointError when the model's outputs
    are not finite (a diverged model: sklearn would only say "Input contains NaN"), ``when`` added to it."""
    model.eval()
    out, total = [], 0.0
    for x, y in loader(data, config, device, None):
        with autocast(device, config):
            logits = model(x.to(device, non_blocking=True)).float()
        total += loss_fn(logits, y.to(device)).item() * len(y)
        out.append(logits.cpu())
    logits = torch.cat(out)
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        norms = nonfinite_statistics(model)
        stats = (
            f"; BatchNorm running statistics are NaN or inf in {len(norms)} layer(s), e.g. {norms[0]}" if norms else ""
        )
        raise FloatingPointError(
            f"non-finite predictions on split {data.split!r} ({bad} of {len(data)} volumes){when}{stats}"
        )
    scores = scores_from_logits(logits)
    return {
        **evaluate_scores(data.labels, scores, data.info.task, data.split),
        "loss": total / len(data),
        "scores": scores,
    }
