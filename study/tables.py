"""The book's tables from the rows of :mod:`.results`: mean ± std over seeds with the AUROC's interval beside the
published numbers, 'missing (reason)' where a run gave nothing, the compute table, the setting line above each
table, and the HTML the book shows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from lib25d.metrics import mean_auroc_interval

from .profiles import Profile
from .published import BEYOND, paper_results, v2_method
from .results import collect

METRIC_NAMES = {"auc": "AUROC", "acc": "ACC", "balanced_acc": "Bal. ACC"}
CHANCE = 0.5  # AUROC of a ranking that knows nothing; below it the ranking is inverted
LEVEL = 0.95  # the tables' interval: a bootstrap over test volumes of the mean over seeds


def _cells(frame: pd.DataFrame):
    """Per (dataset, method): dataset, method, its rows, the finished ones, the reasons of the others."""
    for (dataset, method), group in frame.groupby(["dataset", "method"], sort=False):
        reasons = "; ".join(dict.fromkeys(r for r in group.reason[group.status != "ok"] if r))
        yield dataset, method, group, group[group.status == "ok"], reasons


def auc_interval(runs: pd.DataFrame, n_boot: int = 2000) -> tuple[float, float]:
    """95 % interval of the seed-mean test AUROC; NaN where a run kept no predictions."""
    if not len(runs) or any(not isinstance(s, list) or not s for s in runs.scores):
        return math.nan, math.nan
    labels = np.asarray(runs.labels.iloc[0])
    if any(np.asarray(seen).shape != labels.shape or (np.asarray(seen) != labels).any() for seen in runs.labels):
        return math.nan, math.nan  # seeds tested on different volumes: no shared resample
    return mean_auroc_interval(
        labels, [np.asarray(s) for s in runs.scores], runs.task.iloc[0], n_boot=n_boot, level=LEVEL
    )


def summarise(frame: pd.DataFrame, metrics: Sequence[str] = ("auc", "acc", "balanced_acc")) -> pd.DataFrame:
    """Per (dataset, method): mean and std over seeds, the AUROC's interval, the mean recall of each class,
    counts, reasons of gaps and of an undefined AUROC; ``result`` is False where the interval does not lie
    above chance (never a winner)."""
    rows = []
    for dataset, method, group, ok, reasons in _cells(frame):
        row = {"dataset": dataset, "method": method, "n_ok": len(ok), "n_expected": len(group), "reasons": reasons}
        for m in metrics:
            values = ok[m] if m in ok else pd.Series(dtype=float)  # records of older versions lack some
            row[f"{m}_mean"], row[f"{m}_std"] = values.astype(float).mean(), values.astype(float).std(ddof=1)
        recalls = [r for r in (ok.recall if "recall" in ok else []) if isinstance(r, list)]
        row["recall"] = np.nanmean(np.array(recalls, dtype=float), axis=0).tolist() if recalls else None
        row["auc_note"] = "; ".join(dict.fromkeys(n for n in (ok.auc_note if "auc_note" in ok else []) if n))
        row["auc_lo"], row["auc_hi"] = auc_interval(ok) if "scores" in ok else (math.nan, math.nan)
        row["result"] = not row["auc_lo"] <= CHANCE  # NaN interval (no predictions kept): shown as is
        rows.append(row)
    return pd.DataFrame(rows)


def cell(
    mean: float,
    std: float,
    n_ok: int,
    n_expected: int,
    reasons: str | None = "",
    percent: bool = True,
    interval: tuple[float, float] = (math.nan, math.nan),
    undefined: str = "",
) -> str:
    """'80.9 ± 1.2 [76.0, 85.3]', '... (4/5 runs)', 'missing (reason)' ('missing': reasons is None,
    said in another column), 'not distinguishable from chance (...)', 'below chance (...)', or where
    the metric has no value ``undefined`` as it is ("undefined: split 'test' holds one class (1)")."""
    if n_ok == 0:
        return "missing" if reasons is None else f"missing ({reasons or 'no run'})"
    if math.isnan(mean) and undefined:
        return undefined
    scale = 100.0 if percent else 1.0
    text = "nan" if math.isnan(mean) else f"{mean * scale:.1f}"
    if not math.isnan(std):
        text += f" ± {std * scale:.1f}"
    lo, hi = interval
    if not math.isnan(lo):
        text += f" [{lo * scale:.1f}, {hi * scale:.1f}]"
    if n_ok < n_expected:
        text += f" ({n_ok}/{n_expected} runs; {reasons})" if reasons else f" ({n_ok}/{n_expected} runs)"
    if lo <= CHANCE <= hi:
        return f"not distinguishable from chance ({text})"
    return f"below chance ({text})" if hi < CHANCE else text


def compare(summary: pd.DataFrame, table: str, metrics: Sequence[str] = ("auc", "acc")) -> pd.DataFrame:
    """Ours beside the paper (ImageNet, 50 epochs, five seeds) and MedMNIST v2's ResNet-18 from
    scratch, so a gap reads as weights or method; a method the paper lacks: 'beyond the paper'. Then the
    measures for imbalanced data, which neither publishes: balanced accuracy and the recall of each class."""
    papers = paper_results()
    reference = papers.set_index(["table", "dataset", "method", "metric"])["value"].to_dict()
    in_paper = set(papers.method[papers.table == table])

    def published(table: str, dataset: str, method: str, metric: str) -> str:
        if table != "medmnist_v2" and method not in in_paper:
            return BEYOND
        found = reference.get((table, dataset, v2_method(method) if table == "medmnist_v2" else method, metric))
        return "—" if found is None or math.isnan(found) else f"{found * 100:.1f}"

    rows = []
    for s in summary.itertuples(index=False):
        row = {"dataset": s.dataset, "method": s.method}
        for m in metrics:
            interval = (s.auc_lo, s.auc_hi) if m == "auc" else (math.nan, math.nan)
            reasons = s.reasons if m == metrics[0] else None  # said once, in the first column
            row[f"{METRIC_NAMES[m]} ours"] = cell(
                getattr(s, f"{m}_mean"),
                getattr(s, f"{m}_std"),
                s.n_ok,
                s.n_expected,
                reasons,
                interval=interval,
                undefined=s.auc_note if m == "auc" else "",
            )
            row[f"{METRIC_NAMES[m]} paper"] = published(table, s.dataset, s.method, m)
            row[f"{METRIC_NAMES[m]} v2 scratch"] = published("medmnist_v2", s.dataset, s.method, m)
        row["Bal. ACC ours"] = cell(s.balanced_acc_mean, s.balanced_acc_std, s.n_ok, s.n_expected, None)
        row["recall per class ours"] = recall_text(s.recall) if s.n_ok else "missing"
        rows.append(row)  # a cell short of runs says so itself: '(2/3 runs; reason)'
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def recall_text(recall: list[float] | None) -> str:
    """'0: 92.1 · 1: 40.3': the mean recall of each class in %, '—' for a class no test split held."""
    if not recall:
        return "—"
    return " · ".join(f"{k}: {'—' if math.isnan(r) else f'{r * 100:.1f}'}" for k, r in enumerate(recall))


def compute(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2 from the runs themselves: parameters, the largest peak memory over seeds (CUDA tensors
    or the CPU process), seconds per full (not warm-up) epoch pooled over every finished seed."""
    kinds = {"process_peak_rss": "CPU process", "cuda_max_allocated": "CUDA tensors"}
    rows = []
    for dataset, method, group, ok, reasons in _cells(frame):
        epochs = [s for lst in ok.full_epochs for s in lst]
        spread = f" ± {np.std(epochs, ddof=1):.1f}" if len(epochs) > 1 else ""
        kind = ok.memory_kind.iloc[0] if len(ok) else ""
        missing = f"missing ({reasons or 'no run'})"
        rows.append(
            {
                "dataset": dataset,
                "method": method,
                "params (M)": f"{ok.parameters.max() / 1e6:.1f}" if len(ok) else missing,
                "peak memory (MiB)": f"{ok.peak_memory_mib.max():.0f} ({kinds.get(kind, kind)})"
                if len(ok)
                else "missing",  # the reason is said once, in the first column
                "s / epoch": f"{np.mean(epochs):.1f}{spread}" if epochs else "missing",
                "runs": f"{len(ok)}/{len(group)}",
            }
        )
    return pd.DataFrame(rows)


def winners(summary: pd.DataFrame, methods: Sequence[str], table: str = "table1", metric: str = "auc") -> str:
    """Best method per dataset by mean test metric, ours (never one at chance) and the paper's."""
    paper = paper_results(table)
    paper = paper[(paper.metric == metric) & paper.method.isin(methods)]
    parts = []
    finished = summary[summary.method.isin(methods) & (summary.n_ok > 0)]
    for dataset, group in finished.groupby("dataset", sort=False):
        means = group[group.result].set_index("method")[f"{metric}_mean"].dropna()
        if means.empty:
            parts.append(f"{dataset}: none above chance")
            continue
        text = f"{dataset}: {means.idxmax()} ({means.max() * 100:.1f})"
        published = paper[paper.dataset == dataset]
        if len(published):
            best = published.loc[published.value.idxmax()]
            text += f", paper {best.method} ({best.value * 100:.1f})"
        parts.append(text)
    return "; ".join(parts) if parts else "no dataset has a finished run yet"


def gaps(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs that did not give a result, with the full reason: listed under every table."""
    return frame.loc[frame.status != "ok", ["run_id", "status", "reason"]].reset_index(drop=True)


# -- what the numbers stand on -----------------------------------------------------------------
# -- a study's numbers, to compare two results folders ------------------------------------------
TABLE_RUNS = {  # as the notebooks select them
    "table1": lambda p: p.runs(methods=p.table1),
    "table3": lambda p: p.table3_runs(),
}
RUN_NUMBERS = ["run_id", "status", "reason", "auc", "acc", "balanced_acc", "recall", "scores"]


def study_runs(profile: Profile, which: str = "final") -> dict[str, pd.DataFrame]:
    """Per table (table1, table3) its runs' test metrics and predictions, from which all its cells follow."""
    return {name: collect(profile, runs(profile), which)[RUN_NUMBERS] for name, runs in TABLE_RUNS.items()}


def study_text(profile: Profile, which: str = "final") -> str:
    """A study's numbers as plain text: per table every run's test metrics and predictions at full
    precision, then the table as the book shows it. Two results folders of one profile (a laptop's and a
    cluster's, same seeds and threads) hold the same numbers exactly when their texts are equal: diff them.
    Times, dates and memory are left out; they differ between any two runs."""
    parts = []
    for name, runs in TABLE_RUNS.items():
        frame = collect(profile, runs(profile), which)
        parts += [
            f"# {name}: runs ({which} model)",
            frame[RUN_NUMBERS].to_csv(index=False),
            f"# {name}: as in the book",
            compare(summarise(frame), name).to_csv(),
        ]
    return "\n".join(parts)


def setting(profile: Profile, frame: pd.DataFrame) -> str:
    """One plain line behind a results page: profile, data, weights, device, epochs, seeds, runs."""
    ok = frame[frame.status == "ok"]

    def listed(values: Sequence, sep: str = ", ", empty: str = "none") -> str:
        return sep.join(map(str, dict.fromkeys(values))) if len(values) else empty

    weights = listed(frame.weights).replace("None", "none (random init)")
    return (
        f"Profile {profile.name} · data: {listed(ok.data, '; ', 'no finished run')} · weights: {weights}"
        f" · device: {listed(ok.device)} · epochs: {listed(frame.epochs)}"
        f" · seeds: {listed(sorted(set(frame.seed)))} · runs finished: {len(ok)} of {len(frame)}"
    )


def provenance(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run: status, device, git revision, torch version, training seconds, finish time."""
    out = frame.reindex(
        columns=[
            "run_id",
            "status",
            "device",
            "revision",
            "dirty",
            "version_torch",
            "train_seconds",
            "finished",
            "reason",
        ]
    )
    return out.assign(revision=out.revision.fillna("").str[:10])


def _estimate_text(row: pd.Series, base: str, std: str | None, lo: str, hi: str, digits: int) -> str:
    """'x ± std [lo, hi]' of one row (without the parts it lacks)."""
    value = f"{row[base]:.{digits}f}"
    if std and not pd.isna(row[std]):
        value += f" ± {row[std]:.{digits}f}"
    if lo in row and not pd.isna(row[lo]):
        value += f" [{row[lo]:.{digits}f}, {row[hi]:.{digits}f}]"
    return value


def readable(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A measurement table narrow enough for the page: ``x``, ``x_std`` / ``x_seed_std`` and
    ``x_ci_low`` / ``x_ci_high`` (``mean``: ``std``, ``ci_low``, ``ci_high``) become one column
    'x ± std [lo, hi]', n_seeds and n_volumes one 'seeds × volumes'; underscores become spaces."""
    out = table.copy()
    for base in table.columns:
        mean = base == "mean" and "ci_low" in table
        lo, hi = ("ci_low", "ci_high") if mean else (f"{base}_ci_low", f"{base}_ci_high")
        std = next((c for c in (f"{base}_std", f"{base}_seed_std", "std" if mean else "") if c in table), None)
        if lo not in table and std is None:
            continue
        out[base] = out.apply(_estimate_text, axis=1, args=(base, std, lo, hi, digits))
        out = out.drop(columns=[c for c in (std, lo, hi) if c and c in out])
    if {"n_seeds", "n_volumes"} <= set(out.columns):
        out.insert(
            list(out.columns).index("n_seeds"),
            "seeds × volumes",
            [f"{a} × {b}" for a, b in zip(out.n_seeds, out.n_volumes)],
        )
        out = out.drop(columns=["n_seeds", "n_volumes"])
    return out.rename(columns=lambda c: c.replace("_", " "))


def to_html(frame: pd.DataFrame) -> str:
    """A table as the book shows it: no index column, four significant digits, '—' for empty values."""
    table = frame.to_html(index=False, na_rep="—", border=0, classes="table", float_format=lambda v: f"{v:.4g}")
    return f'<div class="lib25d-table" style="overflow-x: auto">{table}</div>'
