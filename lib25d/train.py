"""The authors' training protocol, resumable.

NAdam (lr 2e-4), batch 64, BCE on one logit (binary) or cross-entropy. The first
``warmup_epochs`` (authors' code 3, paper 2) train only the new modules (reducer and head) with
the encoder frozen. ``warmup_bn`` says what the frozen encoder's BatchNorm does meanwhile:

- ``"authors"`` (default; their ``train.py``): the first epoch runs the whole model in eval
  mode, later warm-up epochs in train mode, so batch statistics normalise and the running
  statistics move although no weight does. Their LSTM config trains in train mode from the
  first epoch, and so does lib25d's ``lstm``. From scratch this is what makes training work:
  eval-mode statistics of a random network leave tiny, uncentred tokens (see the book).
- ``"frozen"``: the encoder stays in eval mode throughout the warm-up, protecting pretrained
  statistics. Frozen features are then a pure function of the input, and with
  ``cache_warmup_features`` the training split is encoded once and reused every warm-up epoch.

After the warm-up everything trains in train mode. The final-epoch model is what the authors
test; lib25d also tests the best-validation model. A checkpoint is written atomically after
every epoch; ``resume=True`` continues from it and ends with the same numbers as an
uninterrupted run on CPU, because each epoch's shuffling and dropout are seeded from
(seed, epoch) alone.

Speed switches (``RunConfig``; exact rewrites, see :mod:`lib25d.models.speed`) are applied
once when the model is built; ``RunConfig.straightforward()`` turns them off.
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
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .config import RUNTIME_FIELDS, RunConfig
from .data import DatasetInfo, VolumeDataset, check_dataset, dataset_info, load_dataset
from .metrics import evaluate_scores, scores_from_logits
from .models import build_model, check_method, count_parameters, set_encoder_trainable
from .models.backbone import check_backbone
from .runfolder import claim, read_torch
from .runinfo import environment, fault_point, peak_memory, reset_peak_memory, resolve_device, write_atomic, write_json

CHECKPOINT, BEST, RESULT = "checkpoint.pt", "best.pt", "result.json"
WHICH = ("final", "best")  # the last epoch's model (what the paper tests) or the best-validation one
# may change on resume: more epochs, and lr to continue past a divergence (history records each epoch's)
RESUME_FIELDS = (*RUNTIME_FIELDS, "epochs", "lr")
WARMUP_CACHE_LIMIT_BYTES = 4 * 2**30  # larger feature caches fall back to encoding every warm-up epoch
EpochHook = Callable[[int, dict[str, Any]], None]


def check_config(config: RunConfig) -> None:
    """Names that select code (method, backbone, dataset, device), checked before any data or disk."""
    check_method(config.method)
    check_backbone(config.backbone)
    check_dataset(config.dataset, config.dataset_options)
    resolve_device(config.device)


def split_of(config: RunConfig, split: str) -> VolumeDataset:
    """One split of the run's dataset (same name, size and options as it trained on)."""
    return load_dataset(config.dataset, split, size=config.size, root=config.data_root, **config.dataset_options)


def load_splits(config: RunConfig) -> dict[str, VolumeDataset]:
    return {split: split_of(config, split) for split in ("train", "val", "test")}


def model_for(config: RunConfig, info: DatasetInfo) -> nn.Module:
    """The run's model for the dataset's channels and classes, its speed switches applied."""
    return build_model(config.method, backbone=config.backbone, weights=config.weights, speed=config,
                       in_channels=info.in_channels, num_classes=info.num_classes, chunk_size=config.chunk_size)


class _Indices(Dataset):
    """(index, label) of every volume: a loader over it, seeded and iterated like the volume loader
    (one ``iter`` per epoch), visits the same batches."""

    def __init__(self, labels: np.ndarray):
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[int, int]:
        return i, int(self.labels[i])


@torch.no_grad()
def feature_cache(model: nn.Module, data: VolumeDataset, config: RunConfig,
                  device: torch.device) -> torch.Tensor | None:
    """Frozen features of every volume of ``data`` in order, or None if they would exceed the limit.

    The encoder must be frozen in eval mode (its BatchNorm statistics too): then the features
    are a pure function of the input, the same as the warm-up forward pass computes.
    """
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


def loss_function(num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if num_classes == 2:
        bce = nn.BCEWithLogitsLoss()
        return lambda logits, y: bce(logits[:, 0], y.to(logits.dtype))
    return nn.CrossEntropyLoss()


def autocast_for(device: torch.device, amp: bool, bf16_cpu: bool = False):
    """bf16 autocast on CUDA when ``amp``, on CPU only when ``bf16_cpu`` (CPU runs stay fp32 and
    reproducible by default; bf16 pays off only on processors with native bf16, avx512_bf16 / AMX)."""
    if (device.type == "cuda" and amp) or (device.type == "cpu" and bf16_cpu):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def autocast(device: torch.device, config: RunConfig):
    return autocast_for(device, config.amp, config.bf16_cpu)


def set_epoch_mode(model: nn.Module, config: RunConfig, epoch: int) -> bool:
    """Trainable parts and train/eval mode of (1-based) ``epoch``; True during the warm-up."""
    warmup = epoch <= config.warmup_epochs
    set_encoder_trainable(model, not warmup)
    model.train()
    if warmup and config.warmup_bn == "frozen":
        model.encoder.eval()
    elif warmup and epoch == 1 and config.method != "lstm":
        model.eval()  # the authors' epoch 0 (their LSTM config trains in train mode from the start)
    return warmup


def cache_applies(config: RunConfig) -> bool:
    """The feature cache is exact only while the frozen encoder's BatchNorm uses running statistics."""
    return config.cache_warmup_features and config.warmup_bn == "frozen" and config.warmup_epochs > 0


def loader_workers(config: RunConfig, device: torch.device) -> int:
    """DataLoader workers: as configured, or for -1 (auto) a few on CUDA (the GPU should not wait
    for batches) and none on CPU (the workers would compete with the model for the same cores)."""
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


@torch.no_grad()
def predict(model: nn.Module, data: VolumeDataset, config: RunConfig, device: torch.device,
            loss_fn: Callable | None = None) -> tuple[torch.Tensor, float]:
    """Logits for a whole split (in order) and the mean loss."""
    model.eval()
    out, total = [], 0.0
    for x, y in _loader(data, config, device, None):
        with autocast(device, config):
            logits = model(x.to(device, non_blocking=True)).float()
        if loss_fn is not None:
            total += loss_fn(logits, y.to(device)).item() * len(y)
        out.append(logits.cpu())
    return torch.cat(out), total / len(data)


def evaluate(model: nn.Module, data: VolumeDataset, config: RunConfig, device: torch.device,
             loss_fn: Callable | None = None) -> dict[str, Any]:
    logits, loss = predict(model, data, config, device, loss_fn)
    scores = scores_from_logits(logits)
    return {**evaluate_scores(data.labels, scores, data.info.task), "loss": loss, "scores": scores}


def _train_epoch(model: nn.Module, loader, loss_fn, optimizer, device: torch.device,
                 config: RunConfig, desc: str, quiet: bool,
                 forward: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[float, int]:
    """One pass over ``loader``'s (input, label) batches in the mode :func:`set_epoch_mode` set;
    ``forward`` maps an input to logits.

    Inputs are volumes (``forward`` = the model) or, in a cached warm-up, indices of the
    volumes (``forward`` = cached frozen features -> reducer + head).
    """
    forward = model if forward is None else forward
    total, seen = 0.0, 0
    start = time.perf_counter()
    # a bar beside the loader, not around it: tqdm.auto's wrapper calls iter() on its iterable
    # twice, which draws the shuffle twice (and starts DataLoader workers twice)
    bar = tqdm(total=len(loader), desc=desc, disable=quiet, leave=False, unit="batch")
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
    bar.close()
    return total / seen, seen


def _index_loader(data: VolumeDataset, config: RunConfig, shuffle_seed: int) -> DataLoader:
    """(indices, labels) batches, in the order the seeded volume loader visits the volumes."""
    gen = torch.Generator().manual_seed(shuffle_seed)
    return DataLoader(_Indices(data.labels), batch_size=config.batch_size, shuffle=True, generator=gen)


def _check_out(out: Path, config: RunConfig, resume: bool) -> dict[str, Any] | None:
    """Refuse to overwrite an earlier run; return its checkpoint when resuming."""
    ckpt = out / CHECKPOINT
    has_run = ckpt.exists() or (out / RESULT).exists()
    if has_run and not resume:
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


def _diverged(what: str, out: Path, history: list[dict[str, Any]], config: RunConfig) -> str:
    """The one-line error of a divergence: where it happened, what is kept, what to try."""
    if history:
        kept = (f"{out / CHECKPOINT} keeps epoch {len(history)}: continue from it with a smaller learning rate "
                f"(--resume --lr {config.lr / 10:g})")
    else:
        kept = f"no epoch had finished, so nothing was kept: start again with a smaller learning rate (--lr {config.lr / 10:g})"
    return f"training diverged: {what}; {kept}, or check the data for extreme values"


def _better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Best model = highest validation AUROC (lowest validation loss where AUROC is undefined)."""
    if best is None:
        return True
    if not math.isnan(record["val_auc"]) and not math.isnan(best["val_auc"]):
        return record["val_auc"] > best["val_auc"]
    return record["val_loss"] < best["val_loss"]


def train(config: RunConfig, out: str | Path, *, resume: bool = False, quiet: bool = False,
          on_epoch_end: EpochHook | None = None) -> dict[str, Any]:
    """Train, checkpoint every epoch, test the final and the best-validation model, write result.json."""
    out = Path(out)
    check_config(config)
    with claim(out):  # one process per folder; a refused or failed start leaves no empty folder
        return _train(config, out, resume, quiet, on_epoch_end)


def _train(config: RunConfig, out: Path, resume: bool, quiet: bool, on_epoch_end: EpochHook | None) -> dict[str, Any]:
    state = _check_out(out, config, resume)
    device = resolve_device(config.device)
    splits = load_splits(config)
    info = splits["train"].info
    torch.manual_seed(config.seed)  # model initialisation
    model = model_for(config, splits["train"].info).to(device)
    optimizer = torch.optim.NAdam(model.parameters(), lr=config.lr)
    loss_fn = loss_function(info.num_classes)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:
            group["lr"] = config.lr  # the resumed run's (lowered after a divergence, say)
        history, best = state["history"], state["best"]
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    reset_peak_memory(device)
    cache: torch.Tensor | None = None
    cache_tried = False

    for epoch in range(len(history) + 1, config.epochs + 1):
        warmup = set_epoch_mode(model, config, epoch)
        tic = time.perf_counter()
        if warmup and cache_applies(config) and not cache_tried:
            cache_tried = True  # built once, in the first warm-up epoch this process runs (its time counts there)
            cache = feature_cache(model, splits["train"], config, device)
        if not warmup:
            cache = None  # free it
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
            val = evaluate(model, splits["val"], config, device, loss_fn)
            if not math.isfinite(val["loss"]):
                raise FloatingPointError(f"non-finite validation outputs after {desc}")
        except FloatingPointError as err:
            raise FloatingPointError(_diverged(str(err), out, history, config)) from None
        record = {"epoch": epoch, "phase": "warm-up" if warmup else "full", "lr": config.lr, "train_loss": train_loss,
                  "val_loss": val["loss"], "val_auc": val["auc"], "val_acc": val["acc"],
                  "seconds": seconds, "volumes_per_second": seen / seconds,
                  "cached_features": cache is not None}
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
    seconds = [h["seconds"] for h in history]
    strip = lambda m: {k: m[k] for k in ("auc", "acc", "loss")}  # noqa: E731
    return {
        "config": config.to_dict(),
        "data": {"task": splits["train"].info.task, "num_classes": splits["train"].info.num_classes,
                 "class_names": list(splits["train"].info.class_names),
                 "in_channels": splits["train"].info.in_channels,
                 "identity": splits["train"].info.identity,
                 "samples": {k: len(v) for k, v in splits.items()}},
        "metrics": {"final": {"epoch": len(history), "test": strip(final),
                              "val": {"auc": history[-1]["val_auc"], "acc": history[-1]["val_acc"]}},
                    "best_val": {"epoch": best["epoch"], "test": strip(best_test),
                                 "val": {"auc": best["val_auc"]}}},
        "history": history,
        "timing": {"epoch_seconds": seconds, "mean_epoch_seconds": float(np.mean(seconds)),
                   "mean_full_epoch_seconds": float(np.mean([h["seconds"] for h in history if h["phase"] == "full"]
                                                            or [float("nan")])),
                   "total_train_seconds": float(np.sum(seconds))},
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
    """A run folder's trained model (eval mode, on ``device``) and its config: ``which`` is
    ``final`` (the last epoch, what the paper reports) or ``best`` (best validation AUROC).
    The model is rebuilt from the stored config with random weights (the file brings the trained
    ones: no download); ``data_root`` says where the run's data is on this machine."""
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
    weights = state["model"] if which == "final" else read_torch(path / BEST, "best-validation model", keys=("model",))["model"]
    info = dataset_info(config.dataset, size=config.size, root=config.data_root, **config.dataset_options)
    model = model_for(config, info)
    model.load_state_dict(weights)
    return Run(path, config, model.to(resolve_device(device)).eval())


def evaluate_run(run: str | Path, split: str = "test", which: str = "final", device: str = "auto") -> dict[str, Any]:
    """Metrics of a run folder's final or best-validation model on one split."""
    loaded = load_run(run, which, device)
    data = split_of(loaded.config, split)
    metrics = evaluate(loaded.model, data, loaded.config, resolve_device(device), loss_function(data.info.num_classes))
    return {"auc": metrics["auc"], "acc": metrics["acc"], "loss": metrics["loss"], "n": len(data)}
