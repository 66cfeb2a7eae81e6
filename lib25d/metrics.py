"""Test metrics: MedMNIST's own AUROC and ACC (``getAUC`` / ``getACC``, the headline numbers as published), and
for imbalanced cohorts (VesselMNIST3D is 11 % positive: ACC near the majority rate says little) sklearn's
balanced accuracy and per-class recall of the same predictions (binary: P(class 1) > 0.5, as MedMNIST's ACC)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from medmnist.evaluator import getACC, getAUC
from scipy.stats import rankdata
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
    all share each resample, so it is the interval of the mean a table shows. Resamples lacking a class
    (AUROC undefined) are skipped; ``(nan, nan)`` when none is usable."""
    labels = np.asarray(labels).reshape(-1)
    runs = [np.asarray(s) for s in runs]
    if not runs or any(len(labels) != len(s) for s in runs):
        raise ValueError(
            f"{len(labels)} labels but {', '.join(str(len(s)) for s in runs) or 'no'} scores: "
            "pass one score row per volume"
        )
    idx = np.random.default_rng(seed).integers(0, len(labels), (n_boot, len(labels)))  # one resample per row
    values = np.mean([resampled_aurocs(labels, s, idx, task) for s in runs], axis=0)
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def resampled_aurocs(labels: np.ndarray, scores: np.ndarray, idx: np.ndarray, task: str) -> np.ndarray:
    """``getAUC`` of every resample ``labels[idx[b]]``, ``scores[idx[b]]`` at once (NaN where a class is absent).

    The Mann-Whitney statistic on average ranks (ties count half) is the area under the ROC curve, so it equals
    sklearn's ``roc_auc_score`` in every resample (a test checks it); 2000 sklearn calls per table cell took
    seconds, this takes milliseconds. Several classes: the mean one-vs-rest AUROC, as ``getAUC``."""
    labels, scores = np.asarray(labels).reshape(-1), np.asarray(scores)
    if task == "binary-class":
        columns = [(labels == 1, scores if scores.ndim == 1 else scores[:, -1])]
    elif task == "multi-class" or task.startswith("ordinal"):
        columns = [(labels == k, scores[:, k]) for k in range(scores.shape[1])]
    else:
        raise ValueError(f"no resampled AUROC for task {task!r}: use binary-class, multi-class or ordinal-regression")
    return np.mean([_auroc_rows(positive[idx], score[idx]) for positive, score in columns], axis=0)


def _auroc_rows(positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """AUROC of each row of (B, N) scores given (B, N) booleans, NaN where a row holds one class."""
    n_pos = positive.sum(axis=1)
    n_neg = positive.shape[1] - n_pos
    rank_sum = np.where(positive, rankdata(scores, axis=1), 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
