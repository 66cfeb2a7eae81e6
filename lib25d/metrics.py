"""Test metrics: MedMNIST's own AUROC and ACC (``getAUC`` / ``getACC``, the headline numbers as published), and
for imbalanced cohorts (VesselMNIST3D is 11 % positive: ACC near the majority rate says little) sklearn's
balanced accuracy and per-class recall of the same predictions (binary: P(class 1) > 0.5, as MedMNIST's ACC)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from medmnist.evaluator import getACC, getAUC
from sklearn.metrics import balanced_accuracy_score, recall_score


def scores_from_logits(logits: torch.Tensor) -> np.ndarray:
    """One logit -> P(class 1) of shape (N,); K logits -> softmax (N, K): what the Evaluator expects."""
    logits = logits.detach().float().cpu()
    probs = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    return probs.numpy()


def predicted_classes(scores: np.ndarray) -> np.ndarray:
    """The class each volume is assigned: P(class 1) > 0.5 for one score per volume, else the argmax."""
    scores = np.asarray(scores)
    return (scores > 0.5).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)


def one_class_note(labels: np.ndarray, split: str | None = None) -> str | None:
    """Why AUROC is undefined for these labels (one class only), or None."""
    classes = np.unique(np.asarray(labels).reshape(-1))
    if len(classes) > 1:
        return None
    where = f"split {split!r}" if split else "the split"
    return f"undefined: {where} holds one class ({classes[0] if len(classes) else 'none'})"


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, task: str, split: str | None = None) -> dict:
    """``auc``, ``acc`` (MedMNIST's), ``balanced_acc`` and ``recall`` (one per class, NaN for a class the split
    lacks); where the split holds a single class AUROC is NaN and ``auc_note`` says why."""
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores)
    note = one_class_note(labels, split)
    classes = list(range(2 if scores.ndim == 1 else scores.shape[1]))
    predicted = predicted_classes(scores)
    with warnings.catch_warnings():  # a split lacking a class: sklearn warns, the NaN recall says it
        warnings.simplefilter("ignore", UserWarning)
        out = {
            "auc": float("nan") if note else float(getAUC(labels, scores, task)),
            "acc": float(getACC(labels, scores, task)),
            "balanced_acc": float(balanced_accuracy_score(labels, predicted)),
            "recall": [
                float(r) for r in recall_score(labels, predicted, labels=classes, average=None, zero_division=np.nan)
            ],
        }
    return {**out, "auc_note": note} if note else out


def auroc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    task: str = "binary-class",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of the test AUROC over volumes: how much it could move
    with another draw of test volumes (one holding 0.5 is not distinguishable from chance)."""
    return mean_auroc_interval(labels, [scores], task, n_boot, level, seed)


def mean_auroc_interval(
    labels: np.ndarray,
    runs: Sequence[np.ndarray],
    task: str = "binary-class",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """:func:`auroc_interval` of the mean AUROC of several runs (seeds) on the same test volumes:
    all share each resample, so it is the interval of the mean a table shows. Single-class
    resamples (AUROC undefined) are skipped; ``(nan, nan)`` when none is usable."""
    labels = np.asarray(labels).reshape(-1)
    runs = [np.asarray(s) for s in runs]
    if not runs or any(len(labels) != len(s) for s in runs):
        raise ValueError(
            f"{len(labels)} labels but {', '.join(str(len(s)) for s in runs) or 'no'} scores: "
            "pass one score row per volume"
        )
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        if len(np.unique(labels[idx])) > 1:
            values.append(np.mean([getAUC(labels[idx], s[idx], task) for s in runs]))
    if not values:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
