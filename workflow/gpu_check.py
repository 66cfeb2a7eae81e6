"""``make gpu-check``: what to run in the first minutes on a GPU machine, as one command.

    make gpu-check OUT=gpu-report DATA=data/medmnist      # = python3 workflow/gpu_check.py --out ... --data ...
    python workflow/gpu_check.py --out /tmp/r --data ../shared/data/medmnist --device cpu --reduced --no-install

It refuses in one line when something is missing (PyTorch or a recent enough one, CUDA, the wheels,
the data), installs the wheels of ``make wheels`` beside the machine's own PyTorch
(:mod:`gpu_wheels`), then runs every step below as its own process, timed, its log in
``WORK/logs``: a failing step does not stop the others. First, alone on the device (their figures
are timings): ``python -m study bench --table2`` at 28, 64 and 128x224x224, and ``--compare``.
Then side by side (``--jobs``): the parity and speed-switch tests on the device in float32 and under
bf16 autocast (tests/numerics.py), one epoch of every method on AdrenalMNIST3D at 28 and 64 (random
weights, no warm-up, so the encoder trains), and config/paper.yaml rehearsed through
workflow/Snakefile with ``--resources gpu=1`` (2 epochs, one seed, adrenal subsets, ImageNet weights
from a random file in the TORCH_HOME layout, no downloads: the machine reaches no network) up to
its run and aggregate notebooks; the book build is left out (Sphinx would double the wheels).
Steps still running when ``--budget`` is spent are stopped and reported as failed.

Writes ``OUT/gpu-check.json`` and ``OUT/gpu-check.md``: per step ok/failed, seconds, a one-line
reason and its key figures. Exit code 0 when every step passed, 1 when one failed, 2 when refused.
``--device cpu --reduced``: the same steps at tiny sizes and subsets, for the tests (a few minutes).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_wheels import REPO, Refusal, install  # noqa: E402

SCHEMA = "lib25d.gpu-check/v1"
ADRENAL_FILES = ("adrenalmnist3d.npz", "adrenalmnist3d_64.npz")
MARKER = ".gpu-check"  # a work folder this script made (and may empty again)
TAIL_LINES = 30
RUNNING: set[subprocess.Popen] = set()  # steps' processes now running: stopped on Ctrl-C


@dataclass
class Step:
    """One command of the check: what it runs, how long it may, and how to read its outcome."""

    name: str
    argv: list[str]
    timeout: float
    exclusive: bool = False  # alone on the device: its figures are timings
    env: dict[str, str] = field(default_factory=dict)
    figures: Callable[[int], tuple[str | None, dict[str, Any]]] = lambda rc: (None, {})  # -> (failure, figures)


@dataclass
class Sizes:
    """What the full check runs, and what ``--reduced`` runs instead (same steps, tiny inputs)."""

    train: list[tuple[int, list[str] | None]]  # (size, methods or None for all)
    train_options: list[str]
    table2: list[str]
    compare: list[str]
    tests: list[str]
    rehearsal: dict[str, Any]
    rehearsal_targets: list[str]


def sizes(reduced: bool, device: str) -> Sizes:
    """Full: the issue's sizes. Reduced: the same commands on small volumes and subsets (CPU)."""
    rehearsal = {
        "seeds": [0],
        "download": False,
        "defaults": {"epochs": 2, "warmup_epochs": 1, "device": device},
        "datasets": {"adrenal": {"dataset_options": {"subset": 8 if reduced else 64}}},
        "bench": {"sizes": [16], "repeats": 1, "batch_size": 2, "in_process": True, "device": device},
        "notebooks": {
            "tutorial": {"epochs": 1, "n_train": 16, "adrenal_subset": 16, "device": device},
            "fig3": {"device": device},
        },
    }
    if not reduced:
        return Sizes(
            train=[(28, None), (64, None)],
            train_options=[],
            table2=["--sizes", "28", "64", "128x224x224"],
            compare=[],
            tests=[],
            rehearsal=rehearsal,
            rehearsal_targets=["provenance"],
        )
    return Sizes(
        train=[(28, None), (64, ["attention"])],
        train_options=["--option", "subset=8", "--batch-size", "4"],
        table2=[
            "--sizes",
            "16",
            "10x16x16",
            "--batch-size",
            "2",
            "--repeats",
            "1",
            "--warmup-steps",
            "0",
            "--in-process",
        ],
        compare=[
            "--subset",
            "4",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--large-shape",
            "10x12x12",
            "--compare-chunk-size",
            "8",
            "--in-process",
        ],
        tests=["-k", "attention-all or attention_map or tiny_conv_is_the_same or checkpointing_gives"],
        rehearsal={**rehearsal, "table1": ["attention"], "table3": ["attention"], "threads": 1},
        rehearsal_targets=["table1"],
    )


# -- refusals: one line each, before anything is installed or run -----------------------------------
def requirement_of(name: str) -> str:
    """lib25d's requirement on ``name`` as pyproject.toml states it (e.g. ``torch>=2.9``)."""
    import tomllib

    from packaging.requirements import Requirement

    for text in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        if Requirement(text).name == name:
            return text
    raise KeyError(name)


def check_torch(device: str) -> dict[str, str]:
    """This Python's PyTorch: there, recent enough, and seeing the device; what it is."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    try:
        import torch
        import torchvision
    except ImportError as err:
        raise Refusal(
            f"no PyTorch in {sys.executable} ({err.name} is missing): run with the Python that has it, "
            "e.g. make gpu-check GPU_PYTHON=/path/to/python3"
        ) from None
    for module in (torch, torchvision):
        req = Requirement(requirement_of(module.__name__))
        if not req.specifier.contains(Version(module.__version__.split("+")[0]), prereleases=True):
            raise Refusal(
                f"{module.__name__} {module.__version__} is older than lib25d supports ({req}): "
                "use a Python with a newer one"
            )
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise Refusal(
            f"no CUDA device: torch {torch.__version__} (CUDA {torch.version.cuda}) sees none; run on a "
            "GPU machine, or use --device cpu --reduced for a dry run"
        )
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else platform.processor()
    return {
        "device": device,
        "name": name or platform.machine(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "cuda": str(torch.version.cuda),
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
    }


def check_data(data: Path) -> None:
    missing = [f for f in ADRENAL_FILES if not (data / f).is_file()]
    if missing:
        raise Refusal(
            f"AdrenalMNIST3D not found: {data} lacks {', '.join(missing)}; pass DATA=<folder with both> "
            "(inside the checkout, e.g. data/medmnist, if the checkout is copied to the GPU machine)"
        )


def prepare_work(work: Path) -> None:
    """An empty work folder: made here, or emptied if an earlier check made it; never someone else's."""
    import shutil

    if work.exists() and any(work.iterdir()):
        if not (work / MARKER).is_file():
            raise Refusal(f"work folder {work} holds files of something else: choose another WORK= (or OUT=)")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    (work / MARKER).write_text("made by workflow/gpu_check.py; emptied by its next run\n")


def random_imagenet_weights(torch_home: Path) -> Path:
    """A seeded random resnet18 state dict where torchvision looks for its ImageNet file, so the
    paper profile's ``weights: imagenet`` loads offline (as tests/test_workflow.py rehearses it)."""
    import torch
    import torchvision

    path = torch_home / "hub" / "checkpoints" / Path(torchvision.models.ResNet18_Weights.DEFAULT.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


# -- the steps ------------------------------------------------------------------------------------
def _json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def test_figures(xml: Path) -> Callable[[int], tuple[str | None, dict]]:
    """pytest's JUnit file: counts, and the first failures as the reason."""

    def read(rc: int) -> tuple[str | None, dict]:
        try:
            suite = ET.parse(xml).getroot()
        except (OSError, ET.ParseError):
            return f"pytest wrote no report (exit code {rc})", {}
        suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        figures = {
            "passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
            "failed": counts["failures"] + counts["errors"],
            "skipped": counts["skipped"],
        }
        bad = [
            (case.get("name"), next(iter(case)).get("message", ""))
            for case in suite.iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        ]
        if bad or rc != 0:
            first = "; ".join(f"{n}: {' '.join((m or '').split())[:160]}" for n, m in bad[:2])
            return f"{figures['failed']} failed{': ' + first if first else f' (exit code {rc})'}", figures
        if figures["passed"] == 0:
            return "no test ran", figures
        return None, figures

    return read


def train_figures(out: Path) -> Callable[[int], tuple[str | None, dict]]:
    """A run folder's result.json: seconds per epoch, volumes per second, AUROC, peak memory."""

    def read(rc: int) -> tuple[str | None, dict]:
        result = _json(out / "result.json")
        if rc != 0 or not result:
            return f"no result.json (exit code {rc})", {}
        epoch, memory = result["history"][-1], result["memory"]
        return None, {
            "s_per_epoch": round(epoch["seconds"], 2),
            "train_vol_per_s": round(epoch["volumes_per_second"], 1),
            "val_auc": round(epoch["val_auc"], 3),
            "test_auc": round(result["metrics"]["final"]["test"]["auc"], 3),
            "peak_gib": round(memory["bytes"] / 2**30, 2),
            "memory": memory["kind"],
        }

    return read


def table2_figures(path: Path) -> Callable[[int], tuple[str | None, dict]]:
    """Table 2 rows: seconds per epoch, peak memory and share of the matmul peak, or the row's error."""

    def read(rc: int) -> tuple[str | None, dict]:
        rows = _json(path).get("table2", {}).get("rows", [])
        if not rows:
            return f"no Table 2 rows (exit code {rc})", {}
        figures = {
            f"{r['method']}@{r['size']}": (
                f"error: {r['error']}"
                if r.get("error")
                else f"{r['epoch_s']:.0f} s/epoch, {r['peak_memory_gib']:.1f} GiB, "
                f"{(r.get('fraction_of_peak') or 0):.0%} of peak"
            )
            for r in rows
        }
        errors = [k for k, v in figures.items() if v.startswith("error")]
        if errors or rc != 0:
            return (
                f"{len(errors)} case(s) failed: {errors[0]}: {figures[errors[0]][7:160]}"
                if errors
                else f"exit code {rc}"
            ), figures
        return None, figures

    return read


def compare_figures(path: Path) -> Callable[[int], tuple[str | None, dict]]:
    """``bench --compare``'s figures (study.bench.compare.compare_frame), with their targets where they have one."""

    def read(rc: int) -> tuple[str | None, dict]:
        from study.bench.compare import compare_frame  # importable only once the wheels are installed

        data = _json(path)
        if not data.get("compare"):
            return f"no compare section (exit code {rc})", {}
        frame = compare_frame(data)
        figures = {
            r.figure: round(float(r.value), 3)
            for r in frame.itertuples()
            if r.value is not None and not math.isnan(float(r.value))
        }  # parts not measured: left out
        figures["identical_predictions"] = data["compare"].get("inference", {}).get("identical_predictions")
        return (f"exit code {rc}" if rc != 0 else None), figures

    return read


def rehearsal_figures(results: Path, targets: list[str]) -> Callable[[int], tuple[str | None, dict]]:
    """Every adrenal run ok (its data is here), every other dataset shown as missing, the notebooks there."""

    def read(rc: int) -> tuple[str | None, dict]:
        statuses = {p.parent.name: _json(p) for p in sorted((results / "runs").glob("*/status.json"))}
        adrenal = {k: v for k, v in statuses.items() if k.startswith("adrenal-")}
        ok = [k for k, v in adrenal.items() if v.get("status") == "ok"]
        epochs = [_json(results / "runs" / k / "result.json").get("timing", {}).get("mean_epoch_seconds") for k in ok]
        others = [v for k, v in statuses.items() if k not in adrenal]
        notebooks = [t for t in targets if (results / "notebooks" / f"{t}.ipynb").is_file()]
        figures = {
            "adrenal_runs_ok": f"{len(ok)}/{len(adrenal)}",
            "other_runs_shown_missing": f"{sum(v.get('status') == 'failed' for v in others)}/{len(others)}",
            "target_notebooks": f"{len(notebooks)}/{len(targets)}",
            "mean_s_per_epoch": round(sum(epochs) / len(epochs), 2) if epochs and None not in epochs else None,
        }
        bad = [k for k in adrenal if k not in ok]
        if bad:
            return f"{len(bad)} adrenal run(s) failed: {bad[0]}: {adrenal[bad[0]].get('error', '?')}"[:300], figures
        if rc != 0 or not adrenal or len(notebooks) < len(targets):
            return f"snakemake exit code {rc}, notebooks {figures['target_notebooks']}", figures
        return None, figures

    return read


def plan(args: argparse.Namespace, work: Path) -> list[Step]:
    """Every step of the check, in the order they start: the timed ones first."""
    py, dev, size = sys.executable, args.device, sizes(args.reduced, args.device)
    lib25d, study = [py, "-m", "lib25d.cli"], [py, "-m", "study"]
    bench = work / "bench.json"
    steps = [
        Step(
            "bench-table2",
            [*study, "bench", "--table2", "--device", dev, "--json", str(bench), *size.table2],
            timeout=200,
            exclusive=True,
            figures=table2_figures(bench),
        ),
        Step(
            "bench-compare",
            [
                *study,
                "bench",
                "--compare",
                "--device",
                dev,
                "--data-root",
                str(args.data),
                "--json",
                str(bench),
                *size.compare,
            ],
            timeout=150,
            exclusive=True,
            figures=compare_figures(bench),
        ),
    ]
    results = work / "rehearsal"
    overrides = [f"{k}={json.dumps(v)}" for k, v in {"results": str(results), **size.rehearsal}.items()]
    targets = [str(results / "notebooks" / f"{t}.ipynb") for t in size.rehearsal_targets]
    steps.append(
        Step(
            "rehearsal-paper",
            [
                py,
                "-m",
                "snakemake",
                "-s",
                "workflow/Snakefile",
                "--configfile",
                "config/paper.yaml",
                "--config",
                *overrides,
                "--cores",
                str(max(2, (os.cpu_count() or 2) // 2)),
                "--resources",
                "gpu=1",
                "--keep-going",
                *targets,
            ],
            timeout=400,
            env={"TORCH_HOME": str(work / "torch_home")},
            figures=rehearsal_figures(results, size.rehearsal_targets),
        )
    )
    for precision in ("float32", "bf16"):
        xml = work / "logs" / f"tests-{precision}.xml"
        steps.append(
            Step(
                f"tests-{precision}",
                [
                    py,
                    "-m",
                    "pytest",
                    "-q",
                    "-p",
                    "no:cacheprovider",
                    f"--junitxml={xml}",
                    "tests/test_parity.py",
                    "tests/test_perf.py",
                    *size.tests,
                ],
                timeout=360,
                env={"LIB25D_TEST_DEVICE": dev, "LIB25D_TEST_PRECISION": precision},
                figures=test_figures(xml),
            )
        )
    from lib25d.models import METHODS  # importable only once the wheels are installed

    for edge, methods in size.train:
        for method in methods or METHODS:
            out = work / "train" / f"{edge}-{method}"
            steps.append(
                Step(
                    f"train-{edge}-{method}",
                    [
                        *lib25d,
                        "train",
                        "--dataset",
                        "adrenal",
                        "--size",
                        str(edge),
                        "--method",
                        method,
                        "--epochs",
                        "1",
                        "--warmup-epochs",
                        "0",
                        "--weights",
                        "none",
                        "--device",
                        dev,
                        "--data-root",
                        str(args.data),
                        "--out",
                        str(out),
                        "--quiet",
                        *size.train_options,
                    ],
                    timeout=200,
                    figures=train_figures(out),
                )
            )
    return [s for s in steps if not args.only or any(s.name.startswith(p) for p in args.only)]


# -- running ----------------------------------------------------------------------------------------
def run_step(step: Step, env: dict[str, str], logs: Path, deadline: float) -> dict[str, Any]:
    """The step's command in its own process group, its output in its log; stopped at its timeout
    or the check's deadline, whichever comes first."""
    log = logs / f"{step.name}.log"
    base = {"name": step.name, "command": " ".join(step.argv), "log": str(log)}
    left = deadline - time.monotonic()
    if left <= 1:
        return {
            **base,
            "status": "failed",
            "seconds": 0.0,
            "reason": "not started: the check's budget was spent",
            "figures": {},
        }
    limit, why = (
        (step.timeout, f"timed out after {step.timeout:.0f} s")
        if step.timeout <= left
        else (left, "stopped: the check's budget was spent")
    )
    tic = time.monotonic()
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            step.argv,
            cwd=REPO,
            env={**env, **step.env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # its own group: a timeout stops its children too
        RUNNING.add(proc)
        try:
            rc = proc.wait(timeout=limit)
            reason = None
        except subprocess.TimeoutExpired:
            _stop(proc)
            rc, reason = -9, why
        except KeyboardInterrupt:
            _stop(proc)
            raise
        finally:
            RUNNING.discard(proc)
    seconds = round(time.monotonic() - tic, 1)
    try:
        failure, figures = step.figures(rc)
    except Exception as err:  # a report that cannot be read is the step's failure, not the check's
        failure, figures = f"could not read its outputs: {type(err).__name__}: {err}", {}
    reason = reason or failure or (f"exit code {rc}" if rc != 0 else None)
    outcome = {
        **base,
        "status": "failed" if reason else "ok",
        "seconds": seconds,
        "reason": reason or "",
        "figures": figures,
    }
    if reason:
        outcome["log_tail"] = log.read_text(errors="replace").splitlines()[-TAIL_LINES:]
    print(f"  {step.name:24s} {outcome['status']:6s} {seconds:7.1f} s  {reason or ''}"[:200], flush=True)
    return outcome


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the step's whole process group, SIGKILL if it has not ended 10 s later."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def run_all(steps: list[Step], env: dict[str, str], logs: Path, jobs: int, budget: float) -> list[dict]:
    """The exclusive steps one by one, then the others ``jobs`` at a time; outcomes in plan order."""
    deadline = time.monotonic() + budget
    done = {s.name: run_step(s, env, logs, deadline) for s in steps if s.exclusive}
    shared = [s for s in steps if not s.exclusive]
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        try:
            for step, outcome in zip(shared, pool.map(lambda s: run_step(s, env, logs, deadline), shared)):
                done[step.name] = outcome
        except KeyboardInterrupt:  # the steps run in sessions of their own: Ctrl-C does not reach them
            pool.shutdown(cancel_futures=True, wait=False)
            for proc in list(RUNNING):
                _stop(proc)
            raise
    return [done[s.name] for s in steps]


# -- the report ---------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    text = ", ".join(f"{k}: {v}" for k, v in value.items()) if isinstance(value, dict) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(report: dict) -> str:
    """The report as one page: the machine, the verdict, one row per step, the reasons of failures."""
    env, steps = report["environment"], report["steps"]
    passed = sum(s["status"] == "ok" for s in steps)
    lines = [
        f"# lib25d GPU check ({report['mode']})",
        "",
        f"{env['name']} ({env['device']}), torch {env['torch']}, torchvision {env['torchvision']}, "
        f"CUDA {env['cuda']}, Python {env['python']}, {env['cpus']} CPUs; {report['created']}",
        "",
        f"**{'PASSED' if report['passed'] else 'FAILED'}**: {passed}/{len(steps)} steps ok in "
        f"{report['wall_s']:.0f} s (budget {report['budget_s']:.0f} s).",
        "",
        "| step | outcome | s | key figures |",
        "|---|---|---:|---|",
    ]
    for s in steps:
        outcome = "ok" if s["status"] == "ok" else f"**failed**: {_cell(s['reason'])}"
        lines.append(f"| {s['name']} | {outcome} | {s['seconds']:.1f} | {_cell(s['figures'])} |")
    lines += ["", f"Commands and logs: {report['json']}."]
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report["json"] = str(out / "gpu-check.json")
    (out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out / "gpu-check.md").write_text(markdown(report))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-check.json and gpu-check.md")
    parser.add_argument("--data", type=Path, required=True, help="folder with adrenalmnist3d.npz and _64.npz")
    parser.add_argument("--work", type=Path, help="scratch folder: runs, logs, bench JSON (default OUT/work)")
    parser.add_argument(
        "--wheels", type=Path, default=REPO / "wheels", help="folder of `make wheels` (default wheels/)"
    )
    parser.add_argument(
        "--target",
        type=Path,
        default=REPO / ".gpu-site",
        help="where the wheels are installed, first on PYTHONPATH (default .gpu-site/)",
    )
    parser.add_argument("--no-install", action="store_true", help="use this Python's packages as they are")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu (with --reduced, for the tests)")
    parser.add_argument("--reduced", action="store_true", help="tiny sizes and subsets: the same steps in minutes")
    parser.add_argument("--jobs", type=int, default=4, help="steps side by side after the timed ones (default 4)")
    parser.add_argument(
        "--budget",
        type=float,
        default=420,
        help="seconds for all steps (default 420: with the install, under 8 minutes)",
    )
    parser.add_argument("--only", nargs="+", help="run only the steps whose names start with these")
    args = parser.parse_args(argv)
    args.data, work = args.data.resolve(), (args.work or args.out / "work").resolve()
    tic = time.monotonic()
    try:
        environment = check_torch(args.device)
        check_data(args.data)
        prepare_work(work)
        if not args.no_install:
            install(args.wheels, args.target)
    except Refusal as err:
        print(f"gpu-check refused: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    paths = [*([str(args.target.resolve())] if not args.no_install else []), str(REPO)]
    sys.path[:0] = paths
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([*paths, *filter(None, [os.environ.get("PYTHONPATH")])]),
        "LIB25D_DATA_ROOT": str(args.data),
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
        "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // max(1, args.jobs))),
    }
    random_imagenet_weights(work / "torch_home")
    (work / "logs").mkdir()
    steps = plan(args, work)
    print(
        f"gpu-check: {len(steps)} steps on {environment['name']} ({args.device}), budget {args.budget:.0f} s",
        flush=True,
    )
    outcomes = run_all(steps, env, work / "logs", args.jobs, args.budget)
    report = {
        "schema": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": "reduced" if args.reduced else "full",
        "environment": environment,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "budget_s": args.budget,
        "wall_s": round(time.monotonic() - tic, 1),
        "passed": all(o["status"] == "ok" for o in outcomes),
        "work": str(work),
        "steps": outcomes,
    }
    write_report(args.out, report)
    print(
        f"gpu-check {'passed' if report['passed'] else 'FAILED'} in {report['wall_s']:.0f} s: "
        f"{args.out / 'gpu-check.md'}"
    )
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
