"""The result files of a profile as rows: one row per EXPECTED run, never a silent gap.

A run folder (``<results>/runs/<run_id>/``) holds what training wrote (``result.json``) and what
the workflow recorded about the attempt (``status.json``: ok, or failed with a one-line reason).
:func:`collect` joins them with the profile's grid: a run that failed, never ran or left a damaged
record is a ``failed`` / ``missing`` row with its reason, which :func:`compare` carries into the
cell ("missing (organmnist3d.npz not found)").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from lib25d.run.folder import RESULT, RunFolder, read_record

from .profiles import Profile, Run

STATUS = "status.json"  # what the workflow recorded about the attempt (study.steps)
KEYS = {"final": "final", "best": "best_val"}  # lib25d.run.WHICH -> the key result.json keeps it under
EMPTY = dict(
    auc=math.nan,
    acc=math.nan,
    balanced_acc=math.nan,
    recall=None,
    auc_note="",
    labels=None,
    scores=None,
    task="",
    epoch_seconds=math.nan,
    full_epoch_seconds=math.nan,
    full_epochs=[],
    train_seconds=math.nan,
    peak_memory_mib=math.nan,
    memory_kind="",
    parameters=math.nan,
    device="",
    data="",
    revision="",
    dirty=None,
    started="",
    finished="",
)


def _state(run_dir: Path, which: str) -> tuple[str, str, dict[str, Any] | None]:
    """(status, reason, row fields) of a run folder; the workflow reruns a run whose settings changed."""
    status, status_problem = read_record(run_dir / STATUS)
    result, result_problem = RunFolder(run_dir).result()
    status = status or {}
    if status.get("status") == "failed":
        return "failed", status.get("reason") or status.get("error", "failed"), None
    if status_problem or result_problem:  # a damaged record is a failed attempt, with the file as its reason
        return "failed", result_problem or status_problem, None
    if result is None:
        return "missing", "not run yet" if not status else f"no {RESULT}", None
    try:  # valid JSON with the wrong content (a foreign or hand-edited file)
        if not isinstance(result.get("config", {}), dict):
            raise TypeError("its config is not an object")
        fields = {key: _result_fields(result, key) for key in KEYS}
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as err:
        what = f"no {err}" if isinstance(err, KeyError) else " ".join(str(err).split()) or type(err).__name__
        return "failed", f"{RESULT} is incomplete ({what})", None
    return "ok", "", fields[which]


def _result_fields(result: dict[str, Any], which: str) -> dict[str, Any]:
    test = result["metrics"][KEYS[which]]["test"]
    env, predictions = result.get("environment", {}), result.get("predictions") or {}
    recorded = result.get("config", {})  # what the run really did (the setting line reports it)
    return dict(
        auc=_num(test.get("auc")),
        acc=_num(test.get("acc")),
        balanced_acc=_num(test.get("balanced_acc")),
        recall=test.get("recall"),
        auc_note=test.get("auc_note", ""),
        weights=str(recorded.get("weights")),
        epochs=recorded.get("epochs"),
        labels=predictions.get("labels"),
        scores=predictions.get(KEYS[which]),
        task=result["data"].get("task", "binary-class"),
        epoch_seconds=_num(result["timing"].get("mean_epoch_seconds")),
        full_epoch_seconds=_num(result["timing"].get("mean_full_epoch_seconds")),
        full_epochs=[h["seconds"] for h in result.get("history", []) if h.get("phase") == "full"],
        train_seconds=_num(result["timing"].get("total_train_seconds")),
        peak_memory_mib=result["memory"]["bytes"] / 2**20,
        memory_kind=result["memory"].get("kind", ""),
        parameters=result["parameters"]["total"],
        device=env.get("device", ""),
        data=_data_text(result),
        revision=(env.get("git") or {}).get("revision") or "",
        dirty=(env.get("git") or {}).get("dirty"),
        started=result.get("started", ""),
        finished=result.get("finished", ""),
        **{f"version_{k}": v for k, v in env.get("versions", {}).items()},
    )


def _data_text(result: dict[str, Any]) -> str:
    ident, samples = result["data"]["identity"], result["data"]["samples"]
    size = ident.get("size") or "x".join(map(str, ident.get("shape", []))) or "?"
    if "preprocess" in ident:  # scans: the CSV, and how they were brought to one grid
        p = ident["preprocess"]
        steps = [f"recipe {p['recipe']}"] if p.get("recipe") else []
        steps.append(f"orientation {p.get('orientation') or 'as stored'}")
        if p.get("spacing"):
            steps.append(f"spacing {'x'.join(f'{v:g}' for v in p['spacing'])} mm")
        size = f"{Path(ident.get('csv', '?')).name} [{', '.join(steps)}]"
    subset = f", subset {ident['subset']}" if "subset" in ident else ""
    counts = "/".join(str(samples.get(s)) for s in ("train", "val", "test"))
    return f"{ident.get('dataset', '?')} {size}{subset} ({counts})"


def _num(value: Any) -> float:
    return math.nan if value is None else float(value)


def run_row(profile: Profile, run: Run, which: str = "final") -> dict[str, Any]:
    """Everything the tables need about one expected run; NaN where the run gave nothing."""
    if which not in KEYS:
        raise ValueError(f"unknown model choice {which!r}; valid: {', '.join(KEYS)}")
    state, reason, fields = _state(profile.run_dir(run.run_id), which)
    return {
        "run_id": run.run_id,
        "dataset": run.label,
        "method": run.method,
        "seed": run.seed,
        "status": state,
        "reason": reason,
        "weights": str(run.config.weights),
        "epochs": run.config.epochs,
        **EMPTY,
        **(fields or {}),
    }


def collect(profile: Profile, runs: Iterable[Run] | None = None, which: str = "final") -> pd.DataFrame:
    """One row per expected run of the profile (or of ``runs``), in grid order."""
    runs = profile.runs() if runs is None else list(runs)
    frame = pd.DataFrame([run_row(profile, r, which) for r in runs])
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "dataset", "method", "seed", "status", "reason", "auc", "acc"])
    return frame


# -- summaries --------------------------------------------------------------------------------


def notebook_times(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Papermill's record of executed notebooks: name, status, start, end, seconds."""
    rows = []
    for path in map(Path, paths):
        meta = ((read_record(path)[0] or {}).get("metadata") or {}).get("papermill") or {}
        rows.append(
            {
                "notebook": path.parent.name if path.name == "run.ipynb" else path.stem,
                "status": "failed" if meta.get("exception") else ("ok" if meta else "not executed"),
                "start": (meta.get("start_time") or "")[:19].replace("T", " "),
                "end": (meta.get("end_time") or "")[:19].replace("T", " "),
                "seconds": _num(meta.get("duration")),
                "input": meta.get("input_path", ""),
            }
        )
    return pd.DataFrame(rows, columns=["notebook", "status", "start", "end", "seconds", "input"])
