"""The authors' training protocol (NAdam; BCE on one logit or cross-entropy), resumable.

The first ``warmup_epochs`` train only the new modules. The frozen encoder's BatchNorm meanwhile
(``warmup_bn``): ``authors`` runs epoch 1 in eval mode, later ones in train mode (``lstm``: from
the start), which makes training from scratch work; ``frozen`` keeps eval mode, so the warm-up
features can be cached. Each epoch's shuffling and dropout are seeded from (seed, epoch) alone and
a checkpoint is written atomically every epoch: a resumed run ends with an uninterrupted run's
numbers (on CPU).
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from .config import RUNTIME_FIELDS, RunConfig
from .data import DatasetInfo, VolumeDataset, check_dataset, dataset_info, load_dataset
from .metrics import evaluate_scores, one_class_note, scores_from_logits
from .models import build_model, check_method, count_parameters, set_encoder_trainable
from .models.backbone import check_backbone
from .runinfo import (claim, environment, fault_point, peak_memory, read_torch, reset_peak_memory, resolve_device,
                      write_atomic, write_json)

CHECKPOINT, BEST, RESULT = "checkpoint.pt", "best.pt", "result.json"
WHICH = ("final", "best")  # the last epoch's model (what the paper tests) or the best-validation one
RESUME_FIELDS = (*RUNTIME_FIELDS, "epochs", "lr")  # may change on resume (lr: to continue past a divergence)
WARMUP_CACHE_LIMIT_BYTES = 4 * 2**30  # larger feature caches fall back to encoding every warm-up epoch


def split_of(config: RunConfig, split: str) -> VolumeDataset:
    """One split of the run's dataset (same name, size and options as it trained on)."""
    return load_dataset(config.dataset, split, size=config.size, root=config.data_root, **config.dataset_options)


def load_splits(config: RunConfig) -> dict[str, VolumeDataset]:
    return {split: split_of(config, split) for split in ("train", "val", "test")}


def model_for(config: RunConfig, info: DatasetInfo) -> nn.Module:
    """The run's model for the dataset's channels and classes, its speed switches applied."""
    return build_model(config.method, backbone=config.backbone, weights=config.weights, speed=config,
                       in_channels=info.in_channels, num_classes=info.num_classes, chunk_size=config.chunk_size)


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


def _loader(data: VolumeDataset, config: RunConfig, device: torch.device, shuffle_seed: int | None) -> DataLoader:
    gen = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed)
    workers = loader_workers(config, device)
    return DataLoader(data, batch_size=config.batch_size, shuffle=gen is not None, generator=gen,
                      num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0)


def _index_loader(data: VolumeDataset, config: RunConfig, shuffle_seed: int) -> DataLoader:
    """(indices, labels) batches, in the order the volume loader of the same seed visits the volumes."""
    indices = TensorDataset(torch.arange(len(data)), torch.as_tensor(data.labels))
    return DataLoader(indices, batch_size=config.batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(shuffle_seed))


@torch.no_grad()
def feature_cache(model: nn.Module, data: VolumeDataset, config: RunConfig,
                  device: torch.device) -> torch.Tensor | None:
    """Frozen features of every volume in order (None above the limit): what the warm-up computes
    while the encoder, BatchNorm included, is frozen in eval mode."""
    was_training = model.training
    model.eval()
    out: list[torch.Tensor] = []
    try:
        for x, _ in _loader(data, config, device, None):
            with autocast(device, config):
                out.append(model.features(x.to(device, non_blocking=True)))
            if out[0][0].numel() * out[0].element_size() * len(data) > WARMUP_CACHE_LIMIT_BYTES:
                return None
    finally:
        model.train(was_training)
    return torch.cat(out)


def nonfinite_statistics(model: nn.Module) -> list[str]:
    """Names of the BatchNorm layers whose running statistics hold NaN or inf (what eval mode normalises with)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            and m.running_mean is not None and not (torch.isfinite(m.running_mean).all()
                                                    and torch.isfinite(m.running_var).all())]


@torch.no_grad()
def evaluate(model: nn.Module, data: VolumeDataset, config: RunConfig, device: torch.device,
             loss_fn: Callable, when: str = "") -> dict[str, Any]:
    """Metrics, mean loss and scores of a whole split (in order); FloatingPointError when the model's outputs
    are not finite (a diverged model: sklearn would only say "Input contains NaN"), ``when`` added to it."""
    model.eval()
    out, total = [], 0.0
    for x, y in _loader(data, config, device, None):
        with autocast(device, config):
            logits = model(x.to(device, non_blocking=True)).float()
        total += loss_fn(logits, y.to(device)).item() * len(y)
        out.append(logits.cpu())
    logits = torch.cat(out)
    bad = int((~torch.isfinite(logits)).any(dim=1).sum())
    if bad:
        norms = nonfinite_statistics(model)
        stats = (f"; BatchNorm running statistics are NaN or inf in {len(norms)} layer(s), e.g. {norms[0]}"
                 if norms else "")
        raise FloatingPointError(f"non-finite predictions on split {data.split!r} ({bad} of {len(data)} volumes)"
                                 f"{when}{stats}")
    scores = scores_from_logits(logits)
    return {**evaluate_scores(data.labels, scores, data.info.task, data.split), "loss": total / len(data),
            "scores": scores}


def _train_epoch(model: nn.Module, loader, loss_fn, optimizer, device: torch.device, config: RunConfig, desc: str,
                 quiet: bool, forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, int]:
    """One pass over ``loader``; ``forward`` maps its inputs to logits: the model for volumes, or
    cached features -> reducer + head for volume indices (a cached warm-up)."""
    forward = model if forward is None else forward
    total, seen, start = 0.0, 0, time.perf_counter()
    # a bar beside the loader, not around it: tqdm.auto's wrapper calls iter() on its iterable
    # twice, which draws the shuffle twice (and starts DataLoader workers twice)
    with tqdm(total=len(loader), desc=desc, disable=quiet, leave=False, unit="batch") as bar:
        for step, (x, y) in enumerate(loader):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, config):
                loss = loss_fn(forward(x).float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss ({loss.item()}) in {desc}, step {step + 1}/{len(loader)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            fault_point("step")
            total += loss.item() * len(y)
            seen += len(y)
            bar.update(1)
            bar.set_postfix(loss=f"{total / seen:.4f}", vol_s=f"{seen / (time.perf_counter() - start):.1f}")
    return total / seen, seen


def _check_out(out: Path, config: RunConfig, resume: bool) -> dict[str, Any] | None:
    """Refuse to overwrite an earlier run; return its checkpoint when resuming."""
    ckpt = out / CHECKPOINT
    if (ckpt.exists() or (out / RESULT).exists()) and not resume:
        raise FileExistsError(f"{out} already holds a run; pass resume=True (--resume) to continue it, "
                              "or choose another output folder")
    if not ckpt.exists():
        return None
    state = read_torch(ckpt, "checkpoint", keys=("config", "model", "optimizer", "history", "best"))
    old = {k: v for k, v in state["config"].items() if k not in RESUME_FIELDS}
    new = {k: v for k, v in config.to_dict().items() if k not in RESUME_FIELDS}
    if old != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        raise ValueError(f"cannot resume {out}: its run used different settings ({', '.join(diff)}); "
                         "use the same settings or another output folder")
    return state


def _better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Highest validation AUROC; where it is undefined (a validation split of one class, so every epoch's
    AUROC is NaN) the lowest validation loss: result.json's ``best_val.criterion`` says which."""
    if best is None:
        return True
    if not math.isnan(record["val_auc"]) and not math.isnan(best["val_auc"]):
        return record["val_auc"] > best["val_auc"]
    return record["val_loss"] < best["val_loss"]


def train(config: RunConfig, out: str | Path, *, resume: bool = False, quiet: bool = False,
          on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train, checkpoint every epoch, test the final and the best-validation model, write result.json."""
    out = Path(out)
    check_method(config.method)  # names that select code, checked before any data or disk
    check_backbone(config.backbone)
    check_dataset(config.dataset, config.dataset_options)
    device = resolve_device(config.device)
    with claim(out):  # one process per folder; a refused or failed start leaves no empty folder
        state = _check_out(out, config, resume)
        splits = load_splits(config)
        torch.manual_seed(config.seed)  # model initialisation
        model = model_for(config, splits["train"].info).to(device)
        optimizer = torch.optim.NAdam(model.parameters(), lr=config.lr)
        loss_fn = loss_function(splits["train"].info.num_classes)
        history, best = [], None
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            for group in optimizer.param_groups:
                group["lr"] = config.lr  # the resumed run's (lowered after a divergence, say)
            history, best = state["history"], state["best"]
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        reset_peak_memory(device)
        cache, cache_tried = None, False
        for epoch in range(len(history) + 1, config.epochs + 1):
            warmup = epoch <= config.warmup_epochs
            set_encoder_trainable(model, not warmup)
            model.train()
            if warmup and config.warmup_bn == "frozen":
                model.encoder.eval()
            elif warmup and epoch == 1 and config.method != "lstm":
                model.eval()  # the authors' epoch 0 (their LSTM: train mode from the start)
            tic = time.perf_counter()
            # exact only while the frozen BatchNorm uses running statistics; built once per process, freed after
            if warmup and not cache_tried and config.cache_warmup_features and config.warmup_bn == "frozen":
                cache_tried, cache = True, feature_cache(model, splits["train"], config, device)
            cache = cache if warmup else None
            seed = shuffle_seed(config, epoch)
            torch.manual_seed(seed)  # dropout etc. depend on (seed, epoch) only
            if cache is not None:
                loader = _index_loader(splits["train"], config, seed)
                forward = lambda idx, c=cache: model.classify(c[idx.to(c.device)])  # noqa: E731
            else:
                loader, forward = _loader(splits["train"], config, device, shuffle_seed=seed), None
            desc = f"epoch {epoch}/{config.epochs}" + (" (warm-up)" if warmup else "")
            try:
                train_loss, seen = _train_epoch(model, loader, loss_fn, optimizer, device, config, desc, quiet, forward)
                seconds = time.perf_counter() - tic
                val = evaluate(model, splits["val"], config, device, loss_fn, when=f" after {desc}")
            except FloatingPointError as err:  # one line: where it happened, what is kept, what to try
                kept = (f"{out / CHECKPOINT} keeps epoch {len(history)}: continue from it" if history else
                        "no epoch had finished, so nothing was kept: start again")
                lr = f"{'--resume ' if history else ''}--lr {config.lr / 10:g}"
                raise FloatingPointError(f"training diverged: {err}; {kept} with a smaller learning rate ({lr}), "
                                         "or check the data for extreme values") from None
            record = {"epoch": epoch, "phase": "warm-up" if warmup else "full", "lr": config.lr,
                      "train_loss": train_loss, "val_loss": val["loss"], "val_auc": val["auc"], "val_acc": val["acc"],
                      "val_balanced_acc": val["balanced_acc"],
                      "seconds": seconds, "volumes_per_second": seen / seconds, "cached_features": cache is not None}
            history.append(record)
            if _better(record, best):
                best = {k: record[k] for k in ("epoch", "val_auc", "val_loss")}
                snapshot = copy.deepcopy(model.state_dict())
                write_atomic(out / BEST, lambda p: torch.save({"model": snapshot, "epoch": epoch}, p))
            checkpoint = {"config": config.to_dict(), "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(), "history": history, "best": best}
            write_atomic(out / CHECKPOINT, lambda p: torch.save(checkpoint, p))
            if not quiet:
                tqdm.write(f"epoch {epoch:3d}  loss {train_loss:.4f}  val loss {val['loss']:.4f}  "
                           f"val auc {val['auc']:.3f}  acc {val['acc']:.3f}  {seconds:.1f}s")
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
        result = _finish(model, config, splits, device, loss_fn, out, history, best, started)
        write_json(out / RESULT, result)
        return result


def _finish(model, config, splits, device, loss_fn, out, history, best, started) -> dict[str, Any]:
    """Test the final-epoch model (what the paper's code reports) and the best-validation model."""
    final = evaluate(model, splits["test"], config, device, loss_fn)
    model.load_state_dict(read_torch(out / BEST, "best-validation model", keys=("model",))["model"])
    best_test = evaluate(model, splits["test"], config, device, loss_fn)
    info, seconds = splits["train"].info, [h["seconds"] for h in history]
    full = [h["seconds"] for h in history if h["phase"] == "full"] or [float("nan")]
    keys = ("auc", "acc", "balanced_acc", "recall", "loss", "auc_note")
    strip = lambda m: {k: m[k] for k in keys if k in m}  # noqa: E731
    val_note = one_class_note(splits["val"].labels, "val")
    criterion = "val_auc" if val_note is None else f"val_loss (validation AUROC {val_note})"
    return {
        "config": config.to_dict(),
        "data": {"task": info.task, "num_classes": info.num_classes, "class_names": list(info.class_names),
                 "in_channels": info.in_channels, "identity": info.identity,
                 "samples": {k: len(v) for k, v in splits.items()}},
        "metrics": {"final": {"epoch": len(history), "test": strip(final),
                              "val": {"auc": history[-1]["val_auc"], "acc": history[-1]["val_acc"],
                                      **({"auc_note": val_note} if val_note else {})}},
                    "best_val": {"epoch": best["epoch"], "criterion": criterion, "test": strip(best_test),
                                 "val": {"auc": best["val_auc"], **({"auc_note": val_note} if val_note else {})}}},
        "history": history,
        "timing": {"epoch_seconds": seconds, "mean_epoch_seconds": float(np.mean(seconds)),
                   "mean_full_epoch_seconds": float(np.mean(full)), "total_train_seconds": float(np.sum(seconds))},
        "memory": peak_memory(device),
        "parameters": {"total": count_parameters(model, trainable_only=False)},
        "predictions": {"labels": splits["test"].labels.tolist(), "final": final["scores"].tolist(),
                        "best_val": best_test["scores"].tolist()},
        "environment": environment(device),
        "started": started,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class Run(NamedTuple):
    path: Path
    config: RunConfig
    model: nn.Module


def load_run(run: str | Path, which: str = "final", device: str = "auto", data_root: str | None = None) -> Run:
    """A run folder's ``final`` or ``best`` model in eval mode, and its config. It is rebuilt
    without pretrained weights (the file brings the trained ones); ``data_root``: its data here."""
    if which not in WHICH:
        raise ValueError(f"unknown model choice {which!r}; valid: {', '.join(WHICH)}")
    path = Path(run)
    if not (path / CHECKPOINT).is_file():
        raise FileNotFoundError(f"no {CHECKPOINT} in {path}: pass a folder written by 'lib25d train'")
    state = read_torch(path / CHECKPOINT, "checkpoint", keys=("config", "model"))
    config = RunConfig.from_dict(state["config"]).replace(
        weights=None, device=device, **({"data_root": str(data_root)} if data_root is not None else {}))
    if which == "best" and not (path / BEST).is_file():
        raise FileNotFoundError(f"no {BEST} in {path}: use which='final' or finish the run")
    weights = state if which == "final" else read_torch(path / BEST, "best-validation model", keys=("model",))
    info = dataset_info(config.dataset, size=config.size, root=config.data_root, **config.dataset_options)
    model = model_for(config, info)
    model.load_state_dict(weights["model"])
    return Run(path, config, model.to(resolve_device(device)).eval())

