"""Uncertainty of per-volume scores: which test volumes were drawn (a seeded bootstrap over volumes) and
which training run made the model (the spread over seeds). Seeds share the resampled volumes, so they stay paired.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``(n,)`` or ``(seeds, n)`` values (NaN: volume missing for
    that seed), resampling volumes; ``(nan, nan)`` without data."""
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    n = v.shape[1]
    if n == 0 or np.isnan(v).all():
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    with warnings.catch_warnings():  # a resample may miss every observed volume: mean of nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(v[:, idx].transpose(1, 0, 2).reshape(n_boot, -1), axis=1)  # (n_boot, seeds * n)
    lo, hi = np.quantile(means[np.isfinite(means)], [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def pool_seeds(
    per_volume: pd.DataFrame, value: str, by: Sequence[str], n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> pd.DataFrame:
    """Per group ``by``: ``n_seeds``, ``n_volumes``, the mean and std (NaN for one seed) of the per-seed means of
    column ``value`` and its bootstrap CI over volumes; ``per_volume`` needs columns ``seed`` and ``volume``."""
    missing = [c for c in (*by, "seed", "volume", value) if c not in per_volume.columns]
    if missing:
        raise ValueError(f"per-volume table lacks column(s) {', '.join(missing)}")
    rows = []
    for key, group in per_volume.groupby(list(by), sort=False, dropna=False):
        grid = group.pivot_table(index="seed", columns="volume", values=value, aggfunc="mean", dropna=False)
        per_seed = grid.mean(axis=1)
        lo, hi = bootstrap_ci(grid.to_numpy(dtype=np.float64), n_boot, level, seed)
        rows.append(
            {
                **dict(zip(by, key if isinstance(key, tuple) else (key,))),
                "n_seeds": len(per_seed),
                "n_volumes": grid.shape[1],
                "mean": float(per_seed.mean()),
                "std": float(per_seed.std()),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows, columns=[*by, "n_seeds", "n_volumes", "mean", "std", "ci_low", "ci_high"])
