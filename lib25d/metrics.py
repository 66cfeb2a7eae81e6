"""Test metrics exactly as MedMNIST defines them (its own ``getAUC`` / ``getACC``)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from medmnist.evaluator import getACC, getAUC


def scores_from_logits(logits: torch.Tensor) -> np.ndarray:
    """One logit -> P(class 1) of shape (N,); K logits -> softmax (N, K): what the Evaluator expects."""
    logits = logits.detach().float().cpu()
    probs = torch.sigmoid(logits[:, 0]) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)
    return probs.numpy()


def evaluate_scores(labels: np.ndarray, scores: np.ndarray, task: str) -> dict[str, float]:
    """{"auc", "acc"}; AUROC is NaN when the split holds a single class (it is undefined there)."""
    labels = np.asarray(labels).reshape(-1)
    acc = float(getACC(labels, scores, task))
    auc = float(getAUC(labels, scores, task)) if len(np.unique(labels)) > 1 else float("nan")
    return {"auc": auc, "acc": acc}


def auroc_interval(labels: np.ndarray, scores: np.ndarray, task: str = "binary-class", n_boot: int = 2000,
                   level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Seeded percentile bootstrap interval of the test AUROC over volumes: how much it could move
    with another draw of test volumes (one holding 0.5 is not distinguishable from chance)."""
    return mean_auroc_interval(labels, [scores], task, n_boot, level, seed)


def mean_auroc_interval(labels: np.ndarray, runs: Sequence[np.ndarray], task: str = "binary-class",
                        n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """:func:`auroc_interval` of the mean AUROC of several runs (seeds) on the same test volumes:
    all share each resample, so it is the interval of the mean a table shows. Single-class
    resamples (AUROC undefined) are skipped; ``(nan, nan)`` when none is usable."""
    labels = np.asarray(labels).reshape(-1)
    runs = [np.asarray(s) for s in runs]
    if not runs or any(len(labels) != len(s) for s in runs):
        raise ValueError(f"{len(labels)} labels but {', '.join(str(len(s)) for s in runs) or 'no'} scores: "
                         "pass one score row per volume")
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

