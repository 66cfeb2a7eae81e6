"""Result files of a profile as tidy tables: one row per EXPECTED run, never a silent gap.

A run folder (``<results>/runs/<run_id>/``) holds what the training wrote (``result.json``)
and what the workflow recorded about the attempt (``status.json``: ok, or failed with a
one-line error). :func:`collect` joins them with the profile's grid, so a run that failed or
never ran is a row with status ``failed`` / ``missing`` and its reason; :func:`summarise` and
:func:`compare` carry that reason into the table cell ("missing (organmnist3d.npz not found)").
A damaged record (truncated ``result.json``, a ``status.json`` that is not JSON, a result
lacking its metrics) is a ``failed`` row whose reason names the file and the damage.

Command line (used by the Snakefile)::

    python -m lib25d.results status RUN_DIR --exit-code N [--notebook NB] [--log LOG] [--fetched F..] [--strict]
    python -m lib25d.results bench-failed JSON LOG   # a crashed benchmark leaves its reason for Table 2
    python -m lib25d.results failed PROFILE        # status files of failed runs, for --forcerun
    python -m lib25d.results stage PROFILE book/_generated --notebooks table1 ...   # the book's inputs
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import re
import sys
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from . import config as _config
from .metrics import mean_auroc_interval
from .profiles import Profile, Run, load_profile

RESULT, STATUS = "result.json", "status.json"
WHICH = ("final", "best_val")
# settings that may differ between the profile and a finished run without changing its numbers
RUNTIME_FIELDS = ("device", "num_workers", "data_root", "chunk_size", "amp", *getattr(_config, "PERFORMANCE_FIELDS", ()))
METRIC_NAMES = {"auc": "AUROC", "acc": "ACC"}
REASON_CHARS = 70
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


# -- status of one attempt ------------------------------------------------------------------
def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file, or None when it is absent or unreadable (a half-written file is 'not there')."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(object, problem) of a JSON record: (None, None) when absent, (None, why) when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return None, f"{path.name} is truncated or corrupt (invalid JSON at line {err.lineno} column {err.colno})"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{path.name} cannot be read ({getattr(err, 'strerror', None) or type(err).__name__})"
    if not isinstance(value, dict):
        return None, f"{path.name} holds a JSON {type(value).__name__}, not an object"
    return value, None


def one_line(text: str) -> str:
    """Errors as one line: ANSI colours and tracebacks' line breaks removed."""
    return " ".join(_ANSI.sub("", str(text)).split())


def short_reason(error: str) -> str:
    """The head of an error, short enough for a table cell (the full text is in status.json)."""
    text = one_line(error)
    text = re.sub(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\w*: ", "", text)  # the type name
    head = re.split(r": | \(|; ", text, maxsplit=1)[0]
    return head if len(head) <= REASON_CHARS else head[: REASON_CHARS - 1] + "…"


def notebook_error(notebook: Path) -> str | None:
    """'Type: message' of the first error output of an executed notebook, if any."""
    nb = read_json(notebook)
    for cell in (nb or {}).get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return one_line(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}")
    return None


def log_error(log: Path | None) -> str | None:
    """The last line of a log that looks like an error (papermill's own failures land there)."""
    if log is None or not Path(log).is_file():
        return None
    lines = [one_line(x) for x in Path(log).read_text(errors="replace").splitlines() if x.strip()]
    errors = [x for x in lines if re.search(r"(Error|Exception)\b", x)]
    return (errors or lines or [None])[-1]


def _stub_notebook(path: Path, error: str) -> None:
    """A one-cell notebook saying why the run has none (keeps the workflow's output complete)."""
    nb = {"cells": [{"id": "failed", "cell_type": "markdown", "metadata": {}, "source": f"# Run failed\n\n{error}\n"}],
          "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb, indent=1))


def missing_input(fetched: Sequence[str | Path]) -> str | None:
    """The error of the first input the workflow could not fetch (``fetch/<item>.json``), if any."""
    for path in fetched:
        outcome = read_json(Path(path)) or {}
        if outcome.get("status") == "missing":
            return one_line(outcome.get("error", f"{Path(path).stem} is missing"))
    return None


def record_status(run_dir: str | Path, exit_code: int, notebook: str | Path | None = None,
                  log: str | Path | None = None, seconds: float | None = None,
                  fetched: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Write ``status.json`` for one attempt: ok when it exited 0 and left a result file.

    The reason of a failure is, in this order: an input that could not be fetched (the run
    was then not started), the notebook's first error, the log's last error line.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    ok = exit_code == 0 and (run_dir / RESULT).is_file()
    status: dict[str, Any] = {"run_id": run_dir.name, "status": "ok" if ok else "failed", "exit_code": int(exit_code)}
    if not ok:
        error = missing_input(fetched) or (notebook_error(Path(notebook)) if notebook else None) \
            or log_error(Path(log) if log else None) or (f"exit code {exit_code}" if exit_code else f"no {RESULT} written")
        status.update(error=error, reason=short_reason(error))
        if notebook and not Path(notebook).is_file():
            _stub_notebook(Path(notebook), error)
    status.update(seconds=seconds, recorded=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    (run_dir / STATUS).write_text(json.dumps(status, indent=1) + "\n")
    return status


def set_aside_changed_run(out: str | Path, config: Any) -> Path | None:
    """Move an earlier run with other settings to ``out/previous/`` so the new settings start fresh.

    The trainer refuses to resume a run whose settings differ (rightly); in a workflow, a
    changed profile should retrain instead of failing. More epochs than before is not a
    change: the trainer extends the run. Nothing is deleted: the old files are kept aside.
    """
    from .runfolder import read_torch  # lazy, like .train: torch only where a checkpoint is read
    from .train import BEST, CHECKPOINT, RUNTIME_FIELDS

    out = Path(out)
    if (out / CHECKPOINT).is_file():
        state = read_torch(out / CHECKPOINT, "checkpoint", keys=("config", "history"))
        recorded, done = state["config"], len(state["history"])
    elif (out / RESULT).is_file():
        result = read_json(out / RESULT) or {}
        recorded, done = result.get("config", {}), len(result.get("history", []))
    else:
        return None
    new = config.to_dict()
    changed = [k for k in new if k not in RUNTIME_FIELDS and json.dumps(recorded.get(k), default=list, sort_keys=True)
               != json.dumps(new[k], default=list, sort_keys=True)]
    if not changed and done <= new["epochs"]:
        return None
    aside = out / "previous"
    aside.mkdir(exist_ok=True)
    for name in (CHECKPOINT, BEST, RESULT):
        if (out / name).is_file():
            (out / name).replace(aside / name)
    print(f"{out} held a run with other settings ({', '.join(changed) or 'more epochs'}): moved it to {aside}")
    return aside


# -- one row per expected run -----------------------------------------------------------------
def _mismatch(expected: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    return sorted(k for k, v in expected.items() if k not in RUNTIME_FIELDS and recorded.get(k, v) != v
                  and not _same_options(k, v, recorded.get(k)))


def _same_options(key: str, a: Any, b: Any) -> bool:
    """dataset_options survive JSON as lists where YAML gave tuples: compare them as JSON."""
    return key == "dataset_options" and json.dumps(a, sort_keys=True, default=list) == json.dumps(b, sort_keys=True, default=list)


def _state(run_dir: Path, run: Run) -> tuple[str, str, dict[str, Any] | None]:
    """(status, reason, result) of a run folder, judged against the run the profile expects."""
    status, status_problem = read_record(run_dir / STATUS)
    result, result_problem = read_record(run_dir / RESULT)
    status = status or {}
    if status.get("status") == "failed":
        return "failed", status.get("reason") or short_reason(status.get("error", "failed")), None
    if status_problem or result_problem:  # a damaged record is a failed attempt, with the file as its reason
        return "failed", result_problem or status_problem, None
    if result is None:
        return "missing", "not run yet" if not status else f"no {RESULT}", None
    try:  # valid JSON with the wrong content (a foreign or hand-edited file)
        if not isinstance(result.get("config", {}), dict):
            raise TypeError("its config is not an object")
        for which in WHICH:
            _result_fields(result, which)
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else one_line(str(err) or type(err).__name__)
        return "failed", f"{RESULT} is incomplete ({what})", None
    diff = _mismatch(run.config.to_dict(), result.get("config", {}))
    if diff:
        return "stale", f"run used other settings: {', '.join(diff)}", None
    return "ok", "", result


def _data_text(result: dict[str, Any]) -> str:
    ident, samples = result["data"]["identity"], result["data"]["samples"]
    name = ident.get("dataset", "?")
    size = ident.get("size") or "x".join(map(str, ident.get("shape", []))) or "?"
    subset = f", subset {ident['subset']}" if "subset" in ident else ""
    return f"{name} {size}{subset} ({samples.get('train')}/{samples.get('val')}/{samples.get('test')})"


def run_row(profile: Profile, run: Run, which: str = "final") -> dict[str, Any]:
    """Everything the tables need about one expected run; NaN where the run gave nothing."""
    if which not in WHICH:
        raise ValueError(f"unknown model choice {which!r}; valid: {', '.join(WHICH)}")
    run_dir = profile.run_dir(run.run_id)
    state, reason, result = _state(run_dir, run)
    c = run.config
    row: dict[str, Any] = {"run_id": run.run_id, "dataset": run.label, "method": run.method, "seed": run.seed,
                           "status": state, "reason": reason, "weights": str(c.weights), "epochs": c.epochs,
                           "auc": math.nan, "acc": math.nan, "labels": None, "scores": None, "task": "",
                           "epoch_seconds": math.nan,
                           "full_epoch_seconds": math.nan, "full_epochs": [], "train_seconds": math.nan,
                           "peak_memory_mib": math.nan, "memory_kind": "", "parameters": math.nan, "device": "", "data": "",
                           "revision": "", "dirty": None, "started": "", "finished": ""}
    if result is None:
        return row
    row.update(_result_fields(result, which))  # _state checked that it reads
    return row


def _result_fields(result: dict[str, Any], which: str) -> dict[str, Any]:
    test = result["metrics"][which]["test"]
    env = result.get("environment", {})
    predictions = result.get("predictions") or {}
    return dict(auc=_num(test.get("auc")), acc=_num(test.get("acc")),
                labels=predictions.get("labels"), scores=predictions.get(which),
                task=result["data"].get("task", "binary-class"),
                epoch_seconds=_num(result["timing"].get("mean_epoch_seconds")),
                full_epoch_seconds=_num(result["timing"].get("mean_full_epoch_seconds")),
                full_epochs=[h["seconds"] for h in result.get("history", []) if h.get("phase") == "full"],
                train_seconds=_num(result["timing"].get("total_train_seconds")),
                peak_memory_mib=result["memory"]["bytes"] / 2**20, memory_kind=result["memory"].get("kind", ""),
                parameters=result["parameters"]["total"], device=env.get("device", ""), data=_data_text(result),
                revision=(env.get("git") or {}).get("revision") or "", dirty=(env.get("git") or {}).get("dirty"),
                started=result.get("started", ""), finished=result.get("finished", ""),
                **{f"version_{k}": v for k, v in env.get("versions", {}).items()})


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def collect(profile: Profile, runs: Iterable[Run] | None = None, which: str = "final") -> pd.DataFrame:
    """One row per expected run of the profile (or of ``runs``), in grid order."""
    runs = profile.runs() if runs is None else list(runs)
    frame = pd.DataFrame([run_row(profile, r, which) for r in runs])
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "dataset", "method", "seed", "status", "reason", "auc", "acc"])
    return frame


# -- summaries --------------------------------------------------------------------------------
CHANCE = 0.5  # AUROC of a ranking that knows nothing; below it the ranking is inverted
LEVEL = 0.95  # the tables' interval: a bootstrap over test volumes of the mean over seeds


def auc_interval(runs: pd.DataFrame, n_boot: int = 2000) -> tuple[float, float]:
    """95 % interval of the seed-mean test AUROC; NaN where a run kept no predictions."""
    if not len(runs) or any(not isinstance(s, list) or not s for s in runs.scores):
        return math.nan, math.nan
    labels = np.asarray(runs.labels.iloc[0])
    if any(np.asarray(l).shape != labels.shape or (np.asarray(l) != labels).any() for l in runs.labels):
        return math.nan, math.nan  # seeds tested on different volumes: no shared resample
    return mean_auroc_interval(labels, [np.asarray(s) for s in runs.scores], runs.task.iloc[0],
                               n_boot=n_boot, level=LEVEL)


def summarise(frame: pd.DataFrame, metrics: Sequence[str] = ("auc", "acc")) -> pd.DataFrame:
    """Mean and sample std over seeds per (dataset, method), the AUROC's 95 % interval, the
    counts and the reasons of gaps; ``result`` is False where that interval does not lie above
    0.5 (at or below chance: the page marks the cell, it is never a result or a winner)."""
    rows = []
    for (dataset, method), group in frame.groupby(["dataset", "method"], sort=False):
        ok = group[group.status == "ok"]
        row = {"dataset": dataset, "method": method, "n_ok": len(ok), "n_expected": len(group),
               "reasons": "; ".join(dict.fromkeys(r for r in group.reason[group.status != "ok"] if r))}
        for m in metrics:
            values = ok[m].astype(float)
            row[f"{m}_mean"] = values.mean() if len(values) else math.nan
            row[f"{m}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
        row["auc_lo"], row["auc_hi"] = auc_interval(ok) if "scores" in ok else (math.nan, math.nan)
        row["result"] = not row["auc_lo"] <= CHANCE  # NaN interval (no predictions kept): shown as is
        rows.append(row)
    return pd.DataFrame(rows)


def cell(mean: float, std: float, n_ok: int, n_expected: int, reasons: str | None = "", percent: bool = True,
         interval: tuple[float, float] = (math.nan, math.nan)) -> str:
    """'80.9 ± 1.2 [76.0, 85.3]', '80.9' (one run, no interval), '... (4/5 runs)', 'missing (reason)'
    ('missing' where ``reasons`` is None: said in another column), or, when the interval does
    not lie above 0.5, 'not distinguishable from chance (...)' / 'below chance (...)'."""
    if n_ok == 0:
        return "missing" if reasons is None else f"missing ({reasons or 'no run'})"
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


def paper_results(table: str | None = None) -> pd.DataFrame:
    """Published numbers as rows (table, method, dataset, metric, value): the paper's Tables 1-3
    and, as table ``medmnist_v2``, MedMNIST v2's from-scratch ResNet-18 (methods 2.5d, 3d, acs)."""
    path = resources.files("lib25d") / "reference" / "paper_results.csv"
    with resources.as_file(path) as p:
        frame = pd.read_csv(p, comment="#")
    return frame if table is None else frame[frame.table == table].reset_index(drop=True)


@functools.lru_cache(maxsize=1)
def _reference() -> dict[tuple[str, str, str, str], float]:
    return paper_results().set_index(["table", "dataset", "method", "metric"])["value"].to_dict()


def v2_method(method: str) -> str:
    """MedMNIST v2's row for one of our methods: 3d and acs their own, every 2.5D reducer '2.5d'."""
    return method if method in ("3d", "acs") else "2.5d"


def _published(table: str, dataset: str, method: str, metric: str) -> str:
    """'80.9' or '—': one published number in %."""
    if table == "medmnist_v2":
        method = v2_method(method)
    found = _reference().get((table, dataset, method, metric), math.nan)
    return "—" if math.isnan(found) else f"{found * 100:.1f}"


def compare(summary: pd.DataFrame, table: str, metrics: Sequence[str] = ("auc", "acc")) -> pd.DataFrame:
    """Ours beside two references, one row per (dataset, method): the paper (ImageNet, 50 epochs,
    five seeds) and MedMNIST v2's ResNet-18 from scratch, so a gap reads as weights or method."""
    rows = []
    for s in summary.itertuples(index=False):
        row = {"dataset": s.dataset, "method": s.method}
        for m in metrics:
            interval = (s.auc_lo, s.auc_hi) if m == "auc" else (math.nan, math.nan)
            row[f"{METRIC_NAMES[m]} ours"] = cell(getattr(s, f"{m}_mean"), getattr(s, f"{m}_std"), s.n_ok,
                                                  s.n_expected, s.reasons if m == metrics[0] else None, interval=interval)
            row[f"{METRIC_NAMES[m]} paper"] = _published(table, s.dataset, s.method, m)
            row[f"{METRIC_NAMES[m]} v2 scratch"] = _published("medmnist_v2", s.dataset, s.method, m)
        rows.append(row)  # a cell short of runs says so itself: '(2/3 runs; reason)'
    return pd.DataFrame(rows).set_index(["dataset", "method"])


def compute(frame: pd.DataFrame) -> pd.DataFrame:
    """Table 2 from the runs themselves: parameters, peak memory, seconds per full epoch.

    Seconds are pooled over every full (not warm-up) epoch of every finished seed; memory is
    the largest peak over seeds and says what was measured (CUDA tensors or the CPU process).
    """
    rows = []
    for (dataset, method), group in frame.groupby(["dataset", "method"], sort=False):
        ok = group[group.status == "ok"]
        epochs = [s for lst in ok.full_epochs for s in lst]
        reasons = "; ".join(dict.fromkeys(r for r in group.reason[group.status != "ok"] if r))
        missing = f"missing ({reasons or 'no run'})"
        spread = f" ± {np.std(epochs, ddof=1):.1f}" if len(epochs) > 1 else ""
        kinds = {"process_peak_rss": "CPU process", "cuda_max_allocated": "CUDA tensors"}
        row = {"dataset": dataset, "method": method,
               "params (M)": f"{ok.parameters.max() / 1e6:.1f}" if len(ok) else missing,
               "peak memory (MiB)": (f"{ok.peak_memory_mib.max():.0f} ({kinds.get(ok.memory_kind.iloc[0], ok.memory_kind.iloc[0])})"
                                     if len(ok) else "missing"),  # the reason is said once, in the first column
               "s / epoch": f"{np.mean(epochs):.1f}{spread}" if epochs else "missing",
               "runs": f"{len(ok)}/{len(group)}"}
        rows.append(row)
    return pd.DataFrame(rows)


def bench_table(frame: pd.DataFrame) -> pd.DataFrame:
    """``lib25d bench`` rows (:func:`lib25d.bench.table2_frame`) as the book shows them."""
    def num(value: Any, fmt: str) -> str:
        return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

    kinds = {"process_peak_rss": "CPU process", "cuda_max_allocated": "CUDA tensors"}
    rows = []
    for r in frame.to_dict("records"):
        if r.get("error"):
            rows.append({"method": r["method"], "size": r["size"], "params (M)": f"missing ({r['error']})"})
            continue
        rows.append({"method": r["method"], "size": r["size"], "batch": r["batch_size"],
                     "params (M)": num(r["params_m"], ".1f"),
                     "peak memory (GiB)": f"{num(r['peak_memory_gib'], '.2f')} ({kinds.get(r['memory_kind'], r['memory_kind'])})",
                     "s / step": num(r["train_step_s"], ".3f"), "s / epoch": num(r["epoch_s"], ".0f"),
                     "train vol/s": num(r["train_volumes_per_s"], ".1f"),
                     "params (M) paper": num(r["paper_params_m"], ".1f"),
                     "memory (GiB) paper": num(r["paper_memory_gib"], ".1f"),
                     "s / epoch paper": num(r["paper_epoch_s"], ".0f")})
    return pd.DataFrame(rows)


def winners(summary: pd.DataFrame, methods: Sequence[str], table: str = "table1", metric: str = "auc") -> str:
    """Best method per dataset by mean test metric, ours and the paper's, as one sentence; a
    cell not distinguishable from chance is never a winner."""
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
def setting(profile: Profile, frame: pd.DataFrame) -> str:
    """One plain line behind a results page: profile, data, weights, device, epochs, seeds, runs."""
    ok = frame[frame.status == "ok"]
    data = "; ".join(dict.fromkeys(ok.data)) if len(ok) else "no finished run"
    weights = ", ".join(dict.fromkeys(frame.weights)).replace("None", "none (random init)") if len(frame) else "none"
    devices = ", ".join(dict.fromkeys(ok.device)) if len(ok) else "none"
    epochs = ", ".join(map(str, dict.fromkeys(frame.epochs))) if len(frame) else "none"
    seeds = ", ".join(map(str, sorted(set(frame.seed)))) if len(frame) else "none"
    return (f"Profile {profile.name} · data: {data} · weights: {weights} · device: {devices} · epochs: {epochs}"
            f" · seeds: {seeds} · runs finished: {len(ok)} of {len(frame)}")


def notebook_times(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Papermill's record of executed notebooks: name, status, start, end, seconds."""
    rows = []
    for path in paths:
        nb = read_json(Path(path)) or {}
        meta = (nb.get("metadata") or {}).get("papermill") or {}
        rows.append({"notebook": Path(path).parent.name if Path(path).name == "run.ipynb" else Path(path).stem,
                     "status": "failed" if meta.get("exception") else ("ok" if meta else "not executed"),
                     "start": (meta.get("start_time") or "")[:19].replace("T", " "),
                     "end": (meta.get("end_time") or "")[:19].replace("T", " "),
                     "seconds": _num(meta.get("duration")), "input": meta.get("input_path", "")})
    return pd.DataFrame(rows, columns=["notebook", "status", "start", "end", "seconds", "input"])


def provenance(frame: pd.DataFrame) -> pd.DataFrame:
    """Per run: status, device, git revision, torch version, training seconds, finish time."""
    cols = ["run_id", "status", "device", "revision", "dirty", "version_torch", "train_seconds", "finished", "reason"]
    out = frame.reindex(columns=cols).copy()
    out["revision"] = out.revision.fillna("").str[:10]
    return out


def readable(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """A measurement table narrow enough for the page: ``x``, ``x_std`` / ``x_seed_std`` and
    ``x_ci_low`` / ``x_ci_high`` become one column 'x ± std [lo, hi]', n_seeds and n_volumes
    one 'seeds × volumes'; underscores become spaces."""
    out = table.copy()
    for base in [c for c in table.columns if f"{c}_ci_low" in table or (c == "mean" and "ci_low" in table)] + \
            [c for c in table.columns if f"{c}_seed_std" in table or (f"{c}_std" in table and f"{c}_ci_low" not in table)]:
        if base not in out:
            continue
        lo, hi = (f"{base}_ci_low", f"{base}_ci_high") if base != "mean" else ("ci_low", "ci_high")
        std = next((c for c in (f"{base}_std", f"{base}_seed_std", "std" if base == "mean" else "") if c in out), None)

        def text(row: pd.Series) -> str:
            value = f"{row[base]:.{digits}f}"
            if std and not pd.isna(row[std]):
                value += f" ± {row[std]:.{digits}f}"
            if lo in row and not pd.isna(row[lo]):
                value += f" [{row[lo]:.{digits}f}, {row[hi]:.{digits}f}]"
            return value

        out[base] = out.apply(text, axis=1)
        out = out.drop(columns=[c for c in (std, lo, hi) if c and c in out])
    if {"n_seeds", "n_volumes"} <= set(out.columns):
        out.insert(list(out.columns).index("n_seeds"), "seeds × volumes",
                   [f"{a} × {b}" for a, b in zip(out.n_seeds, out.n_volumes)])
        out = out.drop(columns=["n_seeds", "n_volumes"])
    return out.rename(columns=lambda c: c.replace("_", " "))


def to_html(frame: pd.DataFrame) -> str:
    """A table as the book shows it: no index column, four significant digits, '—' for empty values."""
    table = frame.to_html(index=False, na_rep="—", border=0, classes="table",
                          float_format=lambda v: f"{v:.4g}")
    return f'<div class="lib25d-table" style="overflow-x: auto">{table}</div>'


def stage_book(profile: Profile, dest: str | Path, notebooks: Sequence[str]) -> list[Path]:
    """Copy the profile's executed notebooks where ``_toc.yml`` expects them (``book/_generated``).

    Aggregates go to ``notebooks/<name>.ipynb``; runs to ``runs/<run_id>.ipynb`` with the run id
    in their title, so the book's run pages are told apart. The folder is replaced whole:
    it never mixes two profiles.
    """
    import shutil

    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "notebooks").mkdir(parents=True)
    (dest / "runs").mkdir()
    written = []
    for name in notebooks:
        written.append(Path(shutil.copyfile(profile.notebook_dir / f"{name}.ipynb", dest / "notebooks" / f"{name}.ipynb")))
    for run in profile.runs():
        nb = read_json(profile.run_dir(run.run_id) / "run.ipynb")
        if nb is None:
            continue
        first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
        if first is not None:
            text = "".join(first["source"])
            first["source"] = re.sub(r"^# .*$", f"# Run {run.run_id}", text, count=1, flags=re.M)
        path = dest / "runs" / f"{run.run_id}.ipynb"
        path.write_text(json.dumps(nb, indent=1))
        written.append(path)
    return written


def record_bench_failure(json_path: str | Path, log: str | Path) -> dict[str, str]:
    """A benchmark that crashed still leaves a file: Table 2 then says why it has no measurements."""
    error = {"error": log_error(Path(log)) or "lib25d bench failed", "log": str(log)}
    Path(json_path).parent.mkdir(parents=True, exist_ok=True)
    Path(json_path).write_text(json.dumps(error, indent=1) + "\n")
    return error


def failed_status_files(profile: Profile) -> list[Path]:
    """status.json of every failed run (a damaged record counts): pass them to ``snakemake --forcerun``."""
    paths = [(profile.run_dir(r.run_id) / STATUS, r) for r in profile.runs()]
    return [p for p, r in paths if p.is_file() and _state(p.parent, r)[0] == "failed"]


# -- command line -------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib25d.results", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("status", help="record the outcome of one run attempt in RUN_DIR/status.json")
    p.add_argument("run_dir")
    p.add_argument("--exit-code", type=int, required=True, help="papermill's exit code")
    p.add_argument("--notebook", help="the executed notebook (its error output is the reason)")
    p.add_argument("--log", help="the run's log (the reason when the notebook has none)")
    p.add_argument("--seconds", type=float, help="wall time of the attempt")
    p.add_argument("--strict", action="store_true", help="exit 1 when the run failed")
    p.add_argument("--fetched", nargs="*", default=[], help="the run's fetch/<item>.json files (a missing input is the reason)")
    p = sub.add_parser("failed", help="print the status files of failed runs (for snakemake --forcerun)")
    p.add_argument("profile", help="profile name or file (e.g. cpu or results/cpu/profile.yaml)")
    p = sub.add_parser("bench-failed", help="record a failed `lib25d bench` run in its JSON file")
    p.add_argument("json")
    p.add_argument("log")
    p = sub.add_parser("stage", help="copy a profile's executed notebooks into the book's source folder")
    p.add_argument("profile", help="profile name or file (the workflow passes results/<profile>/profile.yaml)")
    p.add_argument("dest", help="folder named in _toc.yml (book/_generated)")
    p.add_argument("--notebooks", nargs="+", required=True, help="aggregate notebooks to copy")
    args = parser.parse_args(argv)
    try:
        return _main(args)
    except (ValueError, FileNotFoundError) as err:  # a bad profile or record file: one line naming it
        print(f"python -m lib25d.results {args.command}: error: {one_line(str(err))}", file=sys.stderr)
        return 2


def _main(args: argparse.Namespace) -> int:
    if args.command == "status":
        status = record_status(args.run_dir, args.exit_code, args.notebook, args.log, args.seconds, args.fetched)
        if status["status"] == "failed":
            print(f"run {status['run_id']} failed: {status['error']}", file=sys.stderr)
            return 1 if args.strict else 0
        return 0
    if args.command == "bench-failed":
        print(f"lib25d bench failed: {record_bench_failure(args.json, args.log)['error']}", file=sys.stderr)
        return 0
    if args.command == "stage":
        written = stage_book(load_profile(args.profile), args.dest, args.notebooks)
        print(f"staged {len(written)} notebooks in {args.dest}")
        return 0
    print(" ".join(str(p) for p in failed_status_files(load_profile(args.profile))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
