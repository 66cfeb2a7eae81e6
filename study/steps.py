"""The workflow's own steps, around the notebooks it executes (the package never sees them).

    python -m study.steps fetch ITEM [--download] [--root DIR] --out FETCH_JSON
    python -m study.steps set-aside RUN_DIR CONFIG_JSON
    python -m study.steps status RUN_DIR --exit-code N [--notebook NB] [--log LOG] [--fetched F ...] [--strict]
    python -m study.steps bench-failed JSON LOG
    python -m study.steps stage PROFILE_YAML DEST NOTEBOOK ...

A failed run still completes its job: ``status.json`` says ``failed`` with a one-line error,
and the tables show ``missing (reason)``; retry failed runs with
``snakemake ... --forcerun $(grep -l '"failed"' results/<profile>/runs/*/status.json)``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from lib25d.data import MEDMNIST
from lib25d.run import RUNTIME_FIELDS
from lib25d.run.files import BEST, CHECKPOINT, RESULT

from .profiles import load_profile

REASON_CHARS = 70
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def one_line(text: str) -> str:
    return " ".join(_ANSI.sub("", str(text)).split())


def short_reason(error: str) -> str:
    """The head of an error, short enough for a table cell (the full text stays in status.json)."""
    text = re.sub(r"^[A-Za-z_.]*(Error|Exception|Interrupt)\w*: ", "", one_line(error))
    head = re.split(r": | \(|; ", text, maxsplit=1)[0]
    return head if len(head) <= REASON_CHARS else head[: REASON_CHARS - 1] + "…"


def _json(path: Path | str | None) -> dict:
    try:
        value = json.loads(Path(path).read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError, TypeError):
        return {}


NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
WORDS = {"true": True, "True": True, "false": False, "False": False, "null": None, "~": None}


def typed(value):
    """Values as YAML types: Snakemake's ``--config`` reads nested ones as strings (``seeds=[0,1]``
    gives ``['0', '1']``, ``defaults={epochs: 2}`` gives ``'2'``), so the Snakefile retypes them."""
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        return int(value) if re.fullmatch(r"[+-]?\d+", value.strip()) else float(value)
    return WORDS.get(value.strip(), value) if isinstance(value, str) else value


def fetch_items(config) -> list[str]:
    """Downloadable inputs of a run: ``medmnist-<name>-<size>`` and ``imagenet-<backbone>``."""
    return ([f"medmnist-{config.dataset}-{config.size}"] if config.dataset in MEDMNIST else []) + (
        [f"imagenet-{config.backbone}"] if config.weights == "imagenet" and ":" not in config.backbone else []
    )


def bench_args(profile, json_path: str) -> list[str]:
    """``python -m study bench --table2`` for the profile's Table 1 methods; its ``bench:`` keys are the options."""
    args = ["bench", "--table2", "--methods", *profile.table1, "--json", str(json_path)]
    for key, value in profile.bench.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args += [flag] if value else []
        else:
            args += [flag, *map(str, value if isinstance(value, list) else [value])]
    return args


def fetch(item: str, download: bool, root: str | None = None) -> dict[str, str]:
    """One input (``medmnist-<name>-<size>`` or ``imagenet-<backbone>``) fetched once, never raising:
    a run whose input is missing is recorded as failed, with this error, without starting."""
    # Late: medmnist and torchvision import torch (seconds of CPU), which only fetch jobs need; every job of a
    # study runs this module's status step.
    from lib25d.data import medmnist3d
    from lib25d.models.backbone import imagenet_file  # late, as above

    kind, _, rest = item.partition("-")
    try:
        if kind == "medmnist":
            name, _, size = rest.rpartition("-")
            return {
                "item": item,
                "status": "ok",
                "where": str(medmnist3d.locate(name, size=int(size), root=root, download=download)),
            }
        if kind == "imagenet":
            return {"item": item, "status": "ok", "where": str(imagenet_file(rest, download))}
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        return {"item": item, "status": "missing", "error": f"{type(err).__name__}: {one_line(err)}"}
    raise SystemExit(f"unknown fetch item {item!r}: use medmnist-<name>-<size> or imagenet-<backbone>")


def set_aside(out: Path, config: dict) -> Path | None:
    """Move an earlier run with other settings to ``out/previous/``, so a changed profile retrains
    instead of failing to resume (the trainer rightly refuses); more epochs extend the run."""
    if (out / CHECKPOINT).is_file():
        from lib25d.run.folder import RunFolder  # late: torch, only to read an earlier run's checkpoint

        state = RunFolder(out).checkpoint(keys=("config", "history"))
    elif (out / RESULT).is_file():
        state = _json(out / RESULT)
    else:
        return None
    recorded, done = state.get("config", {}), len(state.get("history", []))

    def dumped(value) -> str:  # settings compare as JSON (a tuple equals its list)
        return json.dumps(value, sort_keys=True, default=list)

    changed = [
        k for k in config if k not in (*RUNTIME_FIELDS, "epochs") and dumped(recorded.get(k)) != dumped(config[k])
    ]
    if not changed and done <= config["epochs"]:
        return None
    aside = out / "previous"
    aside.mkdir(exist_ok=True)
    for name in (CHECKPOINT, BEST, RESULT):
        if (out / name).is_file():
            (out / name).replace(aside / name)
    print(f"{out} held a run with other settings ({', '.join(changed) or 'more epochs'}): moved it to {aside}")
    return aside


def first_error(notebook: Path | None, log: Path | None, fetched: list[str]) -> str | None:
    """Why an attempt failed: an input not fetched, else the notebook's first error, else the log's last."""
    for path in fetched:
        if _json(path).get("status") == "missing":
            return one_line(_json(path).get("error", f"{Path(path).stem} is missing"))
    for cell in _json(notebook).get("cells", []):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                return one_line(f"{out.get('ename', 'Error')}: {out.get('evalue', '')}")
    if log is not None and Path(log).is_file():
        lines = [one_line(x) for x in Path(log).read_text(errors="replace").splitlines() if x.strip()]
        return ([x for x in lines if re.search(r"(Error|Exception)\b", x)] or lines or [None])[-1]
    return None


def record_status(
    run_dir: Path,
    exit_code: int,
    notebook: Path | None = None,
    log: Path | None = None,
    fetched: list[str] = (),
    seconds: float | None = None,
) -> dict:
    """``status.json`` of one attempt: ok when it exited 0 and left a result; a failed run without
    a notebook gets a one-cell stub saying why (the job's outputs stay complete)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ok = exit_code == 0 and (run_dir / "result.json").is_file()
    status = {"run_id": run_dir.name, "status": "ok" if ok else "failed", "exit_code": int(exit_code)}
    if not ok:
        error = first_error(notebook, log, list(fetched)) or (
            f"exit code {exit_code}" if exit_code else "no result.json written"
        )
        status.update(error=error, reason=short_reason(error))
        if notebook is not None and not notebook.is_file():
            notebook.parent.mkdir(parents=True, exist_ok=True)
            notebook.write_text(
                json.dumps(
                    {
                        "cells": [
                            {
                                "id": "failed",
                                "cell_type": "markdown",
                                "metadata": {},
                                "source": f"# Run failed\n\n{error}\n",
                            }
                        ],
                        "metadata": {
                            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
                        },
                        "nbformat": 4,
                        "nbformat_minor": 5,
                    },
                    indent=1,
                )
            )
    status["seconds"] = seconds
    (run_dir / "status.json").write_text(json.dumps(status, indent=1) + "\n")
    return status


def stage(profile_yaml: Path, dest: Path, notebooks: list[str]) -> list[Path]:
    """The executed notebooks where ``_toc.yml`` expects them, run pages titled by run id; the
    folder is replaced whole, so it never mixes two profiles."""
    profile = load_profile(profile_yaml)
    shutil.rmtree(dest, ignore_errors=True)
    (dest / "notebooks").mkdir(parents=True)
    (dest / "runs").mkdir()
    written = [
        Path(shutil.copyfile(profile.notebook_dir / f"{n}.ipynb", dest / "notebooks" / f"{n}.ipynb")) for n in notebooks
    ]
    for run in profile.runs():
        nb = _json(profile.run_dir(run.run_id) / "run.ipynb")
        if not nb:
            continue
        first = next((c for c in nb["cells"] if c["cell_type"] == "markdown"), None)
        if first is not None:
            first["source"] = re.sub(r"^# .*$", f"# Run {run.run_id}", "".join(first["source"]), count=1, flags=re.M)
        written.append(dest / "runs" / f"{run.run_id}.ipynb")
        written[-1].write_text(json.dumps(nb, indent=1))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m study.steps", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="step", required=True)
    p = sub.add_parser("fetch")
    p.add_argument("item")
    p.add_argument("--download", action="store_true")
    p.add_argument("--root")
    p.add_argument("--out", required=True)
    p = sub.add_parser("set-aside")
    p.add_argument("run_dir", type=Path)
    p.add_argument("config", help="the run's RunConfig as JSON")
    p = sub.add_parser("status")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--exit-code", type=int, required=True)
    p.add_argument("--notebook", type=Path)
    p.add_argument("--log", type=Path)
    p.add_argument("--fetched", nargs="*", default=[])
    p.add_argument("--seconds", type=float)
    p.add_argument("--strict", action="store_true", help="exit 1 when the run failed")
    p = sub.add_parser("bench-failed")
    p.add_argument("json", type=Path)
    p.add_argument("log", type=Path)
    p = sub.add_parser("stage")
    p.add_argument("profile", type=Path)
    p.add_argument("dest", type=Path)
    p.add_argument("notebooks", nargs="+")
    args = parser.parse_args(argv)
    try:
        return _step(args)
    except (ValueError, FileNotFoundError) as err:  # a damaged checkpoint, a bad profile: one line naming it
        print(f"python -m study.steps {args.step}: error: {one_line(err)}", file=sys.stderr)
        return 2


def _step(args: argparse.Namespace) -> int:
    if args.step == "fetch":
        outcome = fetch(args.item, args.download, args.root)
        print(f"{args.item}: {outcome['status']}: {outcome.get('where') or outcome.get('error')}")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(outcome, indent=1) + "\n")
    elif args.step == "set-aside":
        set_aside(args.run_dir, json.loads(args.config))
    elif args.step == "status":
        status = record_status(args.run_dir, args.exit_code, args.notebook, args.log, args.fetched, args.seconds)
        if status["status"] == "failed":
            print(f"run {status['run_id']} failed: {status['error']}", file=sys.stderr)
            return 1 if args.strict else 0
    elif args.step == "bench-failed":  # Table 2 then says why it has no measurements
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"error": first_error(None, args.log, []) or "python -m study bench failed"}) + "\n"
        )
    else:
        print(f"staged {len(stage(args.profile, args.dest, args.notebooks))} notebooks in {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
