"""Uncertainty for per-volume scores: seeded bootstrap over volumes, pooled over training seeds.

Two sources of variation matter for "where the model looks": which test volumes were drawn
(bootstrap over volumes) and which training run produced the model (spread over seeds).
:func:`pool_seeds` reports both: the mean over seeds with its standard deviation, and a
percentile bootstrap interval that resamples volumes (the same volumes for every seed, so
the seeds stay paired).
"""
from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd

N_BOOT = 2000
LEVEL = 0.95


def bootstrap_ci(values: np.ndarray, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean, resampling the last axis (volumes).

    ``values`` is ``(n,)`` or ``(seeds, n)`` (NaN = volume missing for that seed); with seeds,
    each resample draws volumes once and averages over all seeds. ``(nan, nan)`` without data.
    """
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    n = v.shape[1]
    if n == 0 or np.isnan(v).all():
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    sample = v[:, idx]  # (seeds, n_boot, n)
    with warnings.catch_warnings():  # a resample may miss every observed volume: mean of nothing
        warnings.simplefilter("ignore", RuntimeWarning)
        means = np.nanmean(sample.transpose(1, 0, 2).reshape(n_boot, -1), axis=1)
    means = means[np.isfinite(means)]
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def pool_seeds(per_volume: pd.DataFrame, value: str, by: Sequence[str], n_boot: int = N_BOOT,
               level: float = LEVEL, seed: int = 0) -> pd.DataFrame:
    """Summarise column ``value`` per group ``by``: mean and std over seeds, bootstrap CI over volumes.

    ``per_volume`` needs columns ``seed`` (the training run's seed) and ``volume`` (the volume's
    index in its split) besides ``by`` and ``value``. One row per group with ``n_seeds``,
    ``n_volumes``, ``mean`` (mean of the per-seed means), ``std`` (over seeds; NaN for one
    seed), ``ci_low``, ``ci_high``.
    """
    missing = [c for c in (*by, "seed", "volume", value) if c not in per_volume.columns]
    if missing:
        raise ValueError(f"per-volume table lacks column(s) {', '.join(missing)}")
    rows = []
    for key, group in per_volume.groupby(list(by), sort=False, dropna=False):
        grid = group.pivot_table(index="seed", columns="volume", values=value, aggfunc="mean", dropna=False)
        per_seed = grid.mean(axis=1)
        lo, hi = bootstrap_ci(grid.to_numpy(dtype=np.float64), n_boot, level, seed)
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key)), "n_seeds": len(per_seed), "n_volumes": grid.shape[1],
                     "mean": float(per_seed.mean()),
                     "std": float(per_seed.std(ddof=1)) if len(per_seed) > 1 else float("nan"),
                     "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows, columns=[*by, "n_seeds", "n_volumes", "mean", "std", "ci_low", "ci_high"])
