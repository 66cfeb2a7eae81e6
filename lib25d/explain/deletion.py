"""Deletion, a faithfulness test on any dataset: blank the k most attended slices of each volume, or k random
ones (seeded repeats); if attention marks what the prediction rests on, the first must lower the predicted
class's probability and the AUROC more. Intervals: :mod:`.stats`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..data import VolumeDataset
from ..metrics import evaluate_scores, scores_from_logits
from ..models import SliceLayout
from .attention import batches, eval_mode, model_device, slice_attention, top_k_tokens, volume_batch
from .stats import LEVEL, N_BOOT, bootstrap_ci

DEFAULT_KS = (1, 2, 4, 8)


def blank_slices(
    volumes: torch.Tensor, tokens: np.ndarray, layout: SliceLayout, background: float = 0.0
) -> torch.Tensor:
    """A copy of ``volumes`` with, per volume b, the slices ``tokens[b]`` (token indices) set to ``background``."""
    out = volumes.clone()
    for b, row in enumerate(np.asarray(tokens).reshape(len(volumes), -1)):
        for token in row:
            axis, i = layout.locate(int(token))
            out[b].select(1 + axis, i).fill_(background)  # out[b] is (C, D, H, W)
    return out


def random_tokens(num_tokens: int, k: int, volumes: Iterable[int], repeat: int, seed: int = 0) -> np.ndarray:
    """``(B, k)`` distinct random slices per volume, reproducible per (seed, repeat, volume); nested over k."""
    return np.stack([np.random.default_rng([seed, repeat, int(v)]).permutation(num_tokens)[:k] for v in volumes])


def class_probability(logits: torch.Tensor, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability of ``classes``, classes); ``classes=None`` takes the predicted class. One logit = binary."""
    probs = scores_from_logits(logits)
    if probs.ndim == 1:
        probs = np.stack([1.0 - probs, probs], axis=1)
    classes = probs.argmax(1) if classes is None else np.asarray(classes)
    return probs[np.arange(len(probs)), classes], classes


class Deletion(NamedTuple):
    per_repeat: pd.DataFrame  # one row per (selection, k, repeat)
    summary: pd.DataFrame  # one row per (selection, k)


@torch.no_grad()
def deletion_test(
    model: nn.Module,
    data: VolumeDataset,
    ks: Sequence[int] = DEFAULT_KS,
    repeats: int = 5,
    seed: int = 0,
    batch_size: int = 16,
    background: float = 0.0,
    max_volumes: int | None = None,
    n_boot: int = N_BOOT,
    level: float = LEVEL,
) -> Deletion:
    """Blank the top-k attention slices (``attention``, repeat 0) versus k random slices (``random``, ``repeats``
    draws) of the first ``max_volumes`` volumes; ``none`` (k=0) is the intact volumes."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    n = len(data) if max_volumes is None else min(len(data), max_volumes)
    logits, drops = defaultdict(list), defaultdict(list)  # per (selection, k, repeat): one entry per batch
    for idx in batches(np.arange(n), batch_size):
        x = volume_batch(data, idx).to(model_device(model))
        att = slice_attention(model, x)
        num_tokens = att.layout.num_tokens
        ks = tuple(sorted({int(k) for k in ks}))
        if not ks or ks[0] < 1 or ks[-1] > num_tokens:
            raise ValueError(f"k values must lie in 1..{num_tokens} (the number of slices), got {ks}")
        picks = {("attention", 0): top_k_tokens(att.weights, ks[-1])}
        picks.update({("random", r): random_tokens(num_tokens, ks[-1], idx, r, seed) for r in range(repeats)})
        before = torch.as_tensor(att.logits)
        p0, predicted = class_probability(before)
        outputs = {("none", 0, 0): (before, np.zeros(len(idx)))}
        with eval_mode(model):
            for k in ks:
                for (selection, r), tokens in picks.items():
                    after = model(blank_slices(x, tokens[:, :k], att.layout, background)).float().cpu()
                    outputs[selection, k, r] = after, p0 - class_probability(after, predicted)[0]
        for key, (out, drop) in outputs.items():
            logits[key].append(out)
            drops[key].append(np.asarray(drop, dtype=np.float64))
    labels, task = np.asarray(data.labels)[:n], data.info.task
    drops = {key: np.concatenate(d) for key, d in drops.items()}
    rows = []
    for (s, k, r), out in logits.items():
        metrics = evaluate_scores(labels, scores_from_logits(torch.cat(out)), task)
        rows.append(
            {
                "selection": s,
                "k": k,
                "repeat": r,
                "n": n,
                "prob_drop": float(drops[s, k, r].mean()),
                "auc": metrics["auc"],
                "acc": metrics["acc"],
            }
        )
    per_repeat = pd.DataFrame(rows)
    rows = []
    for (selection, k), group in per_repeat.groupby(["selection", "k"], sort=False):
        per_volume = np.mean([drops[selection, k, r] for r in group["repeat"]], axis=0)
        lo, hi = bootstrap_ci(per_volume, n_boot, level, seed)
        rows.append(
            {
                "selection": selection,
                "k": k,
                "repeats": len(group),
                "n": n,
                "prob_drop": float(group["prob_drop"].mean()),
                "prob_drop_std": float(group["prob_drop"].std()),
                "prob_drop_ci_low": lo,
                "prob_drop_ci_high": hi,
                "auc": float(group["auc"].mean()),
                "auc_std": float(group["auc"].std()),
                "acc": float(group["acc"].mean()),
            }
        )
    return Deletion(per_repeat, pd.DataFrame(rows))


def pool_deletion(summaries: pd.DataFrame) -> pd.DataFrame:
    """Several runs' deletion summaries (column ``seed``) -> mean and std over seeds per (selection, k)."""
    return (
        summaries.groupby(["selection", "k"], sort=False)
        .agg(
            n_seeds=("seed", "nunique"),
            prob_drop=("prob_drop", "mean"),
            prob_drop_seed_std=("prob_drop", "std"),
            auc=("auc", "mean"),
            auc_seed_std=("auc", "std"),
            acc=("acc", "mean"),
        )
        .reset_index()
    )
