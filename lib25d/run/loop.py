"""``train``: the authors' protocol (:mod:`.protocol`) as a loop over epochs, resumable.

Each epoch's shuffling and dropout are seeded from (seed, epoch) alone and a checkpoint is written atomically
every epoch: a resumed run ends with an uninterrupted run's numbers (on CPU). A run that diverges (a non-finite
loss, or outputs that turn non-finite while the loss does not) stops with one line naming the epoch and what
went non-finite, keeping the last good checkpoint.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import TqdmWarning

with warnings.catch_warnings():  # in Jupyter without ipywidgets tqdm.auto falls back to the text bar, and warns
    warnings.simplefilter("ignore", TqdmWarning)
    from tqdm.auto import tqdm

from ..data import check_dataset
from ..metrics import one_class_note
from ..models import check_method, count_parameters
from ..models.backbone import check_backbone
from .config import RUNTIME_FIELDS, RunConfig
from .environment import environment, peak_memory, reset_peak_memory, resolve_device
from .faults import fault_point
from .folder import BEST, CHECKPOINT, RESULT, claim, read_torch, write_atomic, write_json
from .protocol import (
    autocast,
    evaluate,
    feature_cache,
    index_loader,
    load_splits,
    loader,
    loss_function,
    model_for,
    set_phase,
    shuffle_seed,
)

RESUME_FIELDS = (*RUNTIME_FIELDS, "epochs", "lr")  # may change on resume (lr: to continue past a divergence)


def train_epoch(
    model: nn.Module,
    batches,
    loss_fn,
    optimizer,
    device: torch.device,
    config: RunConfig,
    desc: str,
    quiet: bool,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[float, int]:
    """One pass over ``batches``; ``forward`` maps its inputs to logits: the model for volumes, or
    cached features -> reducer + head for volume indices (a cached warm-up)."""
    forward = model if forward is None else forward
    total, seen, start = 0.0, 0, time.perf_counter()
    # a bar beside the batches, not around them: tqdm.auto's wrapper calls iter() on its iterable
    # twice, which draws the shuffle twice (and starts DataLoader workers twice)
    with tqdm(total=len(batches), desc=desc, disable=quiet, leave=False, unit="batch") as bar:
        for step, (x, y) in enumerate(batches):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast(device, config):
                loss = loss_fn(forward(x).float(), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss ({loss.item()}) in {desc}, step {step + 1}/{len(batches)}")
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
        raise FileExistsError(
            f"{out} already holds a run; pass resume=True (--resume) to continue it, or choose another output folder"
        )
    if not ckpt.exists():
        return None
    state = read_torch(ckpt, "checkpoint", keys=("config", "model", "optimizer", "history", "best"))
    old = {k: v for k, v in state["config"].items() if k not in RESUME_FIELDS}
    new = {k: v for k, v in config.to_dict().items() if k not in RESUME_FIELDS}
    if old != new:
        diff = sorted(k for k in new if old.get(k) != new[k])
        raise ValueError(
            f"cannot resume {out}: its run used different settings ({', '.join(diff)}); "
            "use the same settings or another output folder"
        )
    return state


def _better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    """Highest validation AUROC; where it is undefined (a validation split of one class, so every epoch's
    AUROC is NaN) the lowest validation loss: result.json's ``best_val.criterion`` says which."""
    if best is None:
        return True
    if not math.isnan(record["val_auc"]) and not math.isnan(best["val_auc"]):
        return record["val_auc"] > best["val_auc"]
    return record["val_loss"] < best["val_loss"]


def train(
    config: RunConfig,
    out: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
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
        started = datetime.now(UTC).isoformat(timespec="seconds")
        reset_peak_memory(device)
        cache, cache_tried = None, False
        for epoch in range(len(history) + 1, config.epochs + 1):
            warmup = set_phase(model, config, epoch)
            tic = time.perf_counter()
            # exact only while the frozen BatchNorm uses running statistics; built once per process, freed after
            if warmup and not cache_tried and config.cache_warmup_features and config.warmup_bn == "frozen":
                cache_tried, cache = True, feature_cache(model, splits["train"], config, device)
            cache = cache if warmup else None
            seed = shuffle_seed(config, epoch)
            torch.manual_seed(seed)  # dropout etc. depend on (seed, epoch) only
            if cache is not None:
                batches = index_loader(splits["train"], config, seed)
                forward = lambda idx, c=cache: model.classify(c[idx.to(c.device)])  # noqa: E731
            else:
                batches, forward = loader(splits["train"], config, device, shuffle_seed=seed), None
            desc = f"epoch {epoch}/{config.epochs}" + (" (warm-up)" if warmup else "")
            try:
                train_loss, seen = train_epoch(model, batches, loss_fn, optimizer, device, config, desc, quiet, forward)
                seconds = time.perf_counter() - tic
                val = evaluate(model, splits["val"], config, device, loss_fn, when=f" after {desc}")
            except FloatingPointError as err:  # one line: where it happened, what is kept, what to try
                kept = (
                    f"{out / CHECKPOINT} keeps epoch {len(history)}: continue from it"
                    if history
                    else "no epoch had finished, so nothing was kept: start again"
                )
                lr = f"{'--resume ' if history else ''}--lr {config.lr / 10:g}"
                raise FloatingPointError(
                    f"training diverged: {err}; {kept} with a smaller learning rate ({lr}), "
                    "or check the data for extreme values"
                ) from None
            record = {
                "epoch": epoch,
                "phase": "warm-up" if warmup else "full",
                "lr": config.lr,
                "train_loss": train_loss,
                "val_loss": val["loss"],
                "val_auc": val["auc"],
                "val_acc": val["acc"],
                "val_balanced_acc": val["balanced_acc"],
                "seconds": seconds,
                "volumes_per_second": seen / seconds,
                "cached_features": cache is not None,
            }
            history.append(record)
            if _better(record, best):
                best = {k: record[k] for k in ("epoch", "val_auc", "val_loss")}
                write_atomic(
                    out / BEST, partial(torch.save, {"model": copy.deepcopy(model.state_dict()), "epoch": epoch})
                )
            checkpoint = {
                "config": config.to_dict(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
                "best": best,
            }
            write_atomic(out / CHECKPOINT, partial(torch.save, checkpoint))
            if not quiet:
                tqdm.write(
                    f"epoch {epoch:3d}  loss {train_loss:.4f}  val loss {val['loss']:.4f}  "
                    f"val auc {val['auc']:.3f}  acc {val['acc']:.3f}  {seconds:.1f}s"
                )
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
        "data": {
            "task": info.task,
            "num_classes": info.num_classes,
            "class_names": list(info.class_names),
            "in_channels": info.in_channels,
            "identity": info.identity,
            "samples": {k: len(v) for k, v in splits.items()},
        },
        "metrics": {
            "final": {
                "epoch": len(history),
                "test": strip(final),
                "val": {
                    "auc": history[-1]["val_auc"],
                    "acc": history[-1]["val_acc"],
                    **({"auc_note": val_note} if val_note else {}),
                },
            },
            "best_val": {
                "epoch": best["epoch"],
                "criterion": criterion,
                "test": strip(best_test),
                "val": {"auc": best["val_auc"], **({"auc_note": val_note} if val_note else {})},
            },
        },
        "history": history,
        "timing": {
            "epoch_seconds": seconds,
            "mean_epoch_seconds": float(np.mean(seconds)),
            "mean_full_epoch_seconds": float(np.mean(full)),
            "total_train_seconds": float(np.sum(seconds)),
        },
        "memory": peak_memory(device),
        "parameters": {"total": count_parameters(model, trainable_only=False)},
        "predictions": {
            "labels": splits["test"].labels.tolist(),
            "final": final["scores"].tolist(),
            "best_val": best_test["scores"].tolist(),
        },
        "environment": environment(device),
        "started": started,
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
    }
