"""Test metrics exactly as MedMNIST defines them (its own ``getAUC`` / ``getACC``)."""
from __future__ import annotations

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
