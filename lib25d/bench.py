"""``lib25d bench``: the paper's Table 2 on this machine, and lib25d against the authors' design.

``--table2``: per method and volume size (uniform noise, random weights, RunConfig defaults; 2.5D
slices above 64x64 in chunks of ``--large-chunk-size`` with checkpointing): parameters, peak memory
of a training step (CUDA max allocated, or the peak RSS of a fresh process per case on CPU), seconds
per step (median of ``--repeats``) and per epoch (AdrenalMNIST3D's 1188 training volumes up to 64^3,
the paper's 975 PDAC scans above), volumes per second, and GFLOP/s against a measured matmul peak.

``--compare`` (:mod:`lib25d.bench_compare`): 2.5D attention on AdrenalMNIST3D against the authors'
design from the same weights and batches. Parts: ``training`` (``--steps`` steps, extrapolated to the
epoch, losses compared); ``bf16`` (the same with bf16 autocast on CPU, and one epoch against fp32);
``inference`` (the test split, predictions compared); ``warmup`` (head-only steps in the authors'
BatchNorm mode, and lib25d's cached frozen-BatchNorm epochs); ``memory`` (a ``--large-shape`` step in
chunks with checkpointing in a fresh process, and the time factor checkpointing costs at batch 1).
Both merge into one JSON file (default ``results/bench/<cpu|cuda>.json``), shown by
:func:`table2_frame` and :func:`compare_frame`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch

from .config import RunConfig
from .runinfo import device_name, environment, peak_memory, reset_peak_memory, resolve_device, write_json
from .train import autocast, loss_function

SCHEMA = "lib25d.bench/v2"
ADRENAL_TRAIN, PDAC_TRAIN = 1188, 975  # the epochs of the MedMNIST sizes and of the paper's 128x224x224 CT
LARGE_SLICE = 64 * 64  # 2.5D slices above this many pixels: chunks + checkpointing in --table2
FIGURES = [  # the --compare figures: what it is, where the compare section holds it, the target
    ("full-epoch training vs the authors' design, 28^3 (x)", "training.speedup", (">=", 3.0)),
    ("the same with bf16 autocast on CPU (x)", "bf16.speedup", None),
    ("bf16 vs fp32 over one epoch: max |loss diff|", "bf16_epoch.loss_max_abs_diff", None),
    ("inference over the Adrenal test split vs the authors' (x)", "inference.speedup", (">=", 2.0)),
    ("warm-up epoch, authors' BatchNorm mode, vs the authors' (x)", "warmup.authors_bn.speedup", None),
    ("warm-up epoch 2..N, frozen BatchNorm (cached), vs the authors' (x)", "warmup.frozen_bn.speedup", None),
    ("--large-shape at --large-batch-size, chunks + checkpointing: peak GiB", "memory.peak_gib", ("<", 8.0)),
    ("time factor that checkpointing costs (x)", "memory.time_factor", None),
]
OPTIONS = {  # the command's options (a profile's `bench:` keys are these names): flag settings and help
    "sizes": dict(nargs="+", default=["28", "64", "128x224x224"], help="volume sizes, N or DxHxW (--table2)"),
    "methods": dict(nargs="+", default=["attention", "3d", "acs"], help="methods to measure (--table2)"),
    "batch_size": dict(type=int, help="volumes per step (default --table2: 16 up to 28^3, 4 up to 64^3, 2 above; "
                                      "--compare: 64)"),
    "repeats": dict(type=int, default=3, help="timed repetitions; the median is reported"),
    "warmup_steps": dict(type=int, default=1, help="untimed steps before timing (--table2)"),
    "large_chunk_size": dict(type=int, default=64, help="2.5D slices per encoder call above 64x64, with "
                                                        "checkpointing (0: all at once)"),
    "device": dict(default="auto", help="auto, cpu, cuda or cuda:N"),
    "threads": dict(type=int, help="CPU threads for torch (1 on a shared machine)"),
    "in_process": dict(action="store_true", help="measure in this process, not a fresh one per case (CPU peaks "
                                                 "then accumulate)"),
    "no_inference": dict(action="store_true", help="skip the inference throughput (--table2)"),
    "no_amp": dict(action="store_true", help="fp32 on CUDA instead of bf16 autocast (lib25d's side)"),
    "compile": dict(action="store_true", help="torch.compile lib25d's backbone (FLOPs are then not counted)"),
    "json": dict(help="JSON file to merge into (default results/bench/<cpu|cuda>.json)"),
    "data_root": dict(help="folder of adrenalmnist3d.npz (--compare; default $LIB25D_DATA_ROOT)"),
    "steps": dict(type=int, default=3, help="timed training steps after an untimed one (--compare)"),
    "subset": dict(type=int, help="a stratified subset of N volumes per split (--compare, quick checks)"),
    "weights": dict(help="backbone weights: imagenet, a state-dict file or none (--compare; default none)"),
    "parts": dict(nargs="+", default=["training", "inference", "warmup", "memory"],
                  choices=["training", "bf16", "inference", "warmup", "memory"], help="comparisons to run"),
    "large_shape": dict(default="128x224x224", help="volume of the memory comparison"),
    "large_batch_size": dict(type=int, default=2, help="its batch size"),
    "compare_chunk_size": dict(type=int, default=64, help="its chunk size"),
}


def parse_size(text: str | int | Sequence[int]) -> tuple[int, int, int]:
    """'28' -> (28, 28, 28); '128x224x224' -> (128, 224, 224) (D, H, W)."""
    try:
        shape = tuple(int(p) for p in (text if isinstance(text, (list, tuple)) else str(text).lower().split("x")))
    except ValueError:
        shape = ()
    shape = shape * 3 if len(shape) == 1 else shape
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"volume size {text!r} is not N or DxHxW with every side at least 8, e.g. 28 or 128x224x224")
    return shape  # type: ignore[return-value]


def size_name(shape: Sequence[int]) -> str:
    return str(shape[0]) if len(set(shape)) == 1 else "x".join(map(str, shape))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of ``fn()`` (the device synchronised around it) and its result."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    sync(device)
    tic = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - tic, out


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Best GFLOP/s of a large square matrix product: the achievable peak Table 2 compares with."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, generator=torch.Generator().manual_seed(i)).to(device, dtype) for i in (0, 1))
    torch.matmul(a, b)
    return 2 * n ** 3 / min(timed(lambda: torch.matmul(a, b), device)[0] for _ in range(repeats)) / 1e9


def step_fn(model, config: RunConfig, device: torch.device) -> Callable:
    """lib25d's training step on a batch: (x, y) -> loss, with NAdam over every parameter."""
    loss_fn, opt = loss_function(2), torch.optim.NAdam(model.parameters(), lr=config.lr)

    def step(x, y):
        with autocast(device, config):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()
    return step


def model_of(method: str, config: RunConfig, seed: int = 0, axes=(0, 1, 2)):
    from .models import build_model, set_encoder_trainable

    torch.manual_seed(seed)
    model = build_model(method, weights=config.weights, chunk_size=config.chunk_size, axes=tuple(axes), speed=config)
    set_encoder_trainable(model, True)
    return model.to(resolve_device(config.device)).train()


# -- Table 2 --------------------------------------------------------------------------------------
def measure_case(method: str, shape: Sequence[int], batch_size: int, config: RunConfig, repeats: int = 3,
                 warmup_steps: int = 1, inference: bool = True, seed: int = 0) -> dict[str, Any]:
    """One Table 2 row, measured in this process."""
    from torch.utils.flop_counter import FlopCounterMode

    from .models import count_parameters

    device = resolve_device(config.device)
    model = model_of(method, config, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 1, *shape, generator=gen).to(device)
    y = torch.randint(0, 2, (batch_size,), generator=gen).to(device)
    step = step_fn(model, config, device)
    reset_peak_memory(device)
    flops = None
    for i in range(max(warmup_steps, 1)):  # the first step is FLOP-counted, untimed
        if i == 0 and not config.compile:
            with FlopCounterMode(display=False) as counter:
                step(x, y)
            flops = counter.get_total_flops()
        else:
            step(x, y)
    secs = median([timed(lambda: step(x, y), device)[0] for _ in range(repeats)])
    memory = peak_memory(device)
    volumes = ADRENAL_TRAIN if max(shape) <= 64 else PDAC_TRAIN
    row = {"params_m": count_parameters(model) / 1e6, "peak_memory_gib": memory["bytes"] / 2**30,
           "memory_kind": memory["kind"], "train_step_s": secs, "epoch_volumes": volumes,
           "epoch_s": secs * volumes / batch_size, "train_volumes_per_s": batch_size / secs,
           "flops_per_step": flops, "achieved_gflops": flops / secs / 1e9 if flops else None,
           "settings": {**config.speed(), "chunk_size": config.chunk_size, "amp": config.amp}}
    if inference:
        model.eval()
        with torch.no_grad(), autocast(device, config):
            model(x)
            secs = median([timed(lambda: model(x), device)[0] for _ in range(repeats)])
            row["infer_volumes_per_s"] = batch_size / secs
    return row


def isolated(spec: dict[str, Any], in_process: bool = False) -> dict[str, Any]:
    """``measure_case(**spec)`` in a fresh interpreter (its own peak RSS), or here; errors as {"error": ...}."""
    if in_process:
        try:
            return measure_case(**{**spec, "config": RunConfig.from_dict(spec["config"])})
        except (RuntimeError, torch.OutOfMemoryError) as err:
            return {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    done = subprocess.run([sys.executable, "-m", "lib25d.bench", json.dumps(spec)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    why = "killed (out of memory?)" if done.returncode in (-9, 137) else f"exit code {done.returncode}"
    return {"error": f"{why}: {' '.join(done.stderr.strip().splitlines()[-3:])[-400:]}"}


def table2(args: argparse.Namespace, save: Callable[[dict], None]) -> dict[str, Any]:
    """Every (size, method) case, each in its own process unless ``--in-process``; saved after each."""
    from .models import check_method

    device = resolve_device(args.device)
    base = RunConfig(device=str(device), weights=None, amp=not args.no_amp, compile=args.compile)
    peaks = {"fp32": matmul_peak_gflops(device),
             "bf16": matmul_peak_gflops(device, torch.bfloat16) if device.type == "cuda" else None}
    reference = peaks["bf16"] if peaks["bf16"] and base.amp else peaks["fp32"]
    section: dict[str, Any] = {"rows": [], "matmul_peak_gflops": peaks}
    for shape in map(parse_size, args.sizes):
        voxels = math.prod(shape)
        batch = args.batch_size or (16 if voxels <= 28 ** 3 else 4 if voxels <= 64 ** 3 else 2)
        for method in args.methods:
            large = check_method(method).family == "2.5d" and args.large_chunk_size and \
                sorted(shape)[-1] * sorted(shape)[-2] > LARGE_SLICE
            config = base.replace(chunk_size=args.large_chunk_size, checkpointing=True) if large else base
            print(f"  {method:11s} {size_name(shape):>12s}  batch {batch} ...", flush=True)
            spec = {"method": method, "shape": list(shape), "batch_size": batch, "config": config.to_dict(),
                    "repeats": args.repeats, "warmup_steps": args.warmup_steps, "inference": not args.no_inference}
            row = {"method": method, "size": size_name(shape), "shape": list(shape), "batch_size": batch,
                   "error": None, **isolated(spec, args.in_process), "device": device_name(device)}
            row["fraction_of_peak"] = row["achieved_gflops"] / reference if row.get("achieved_gflops") else None
            section["rows"].append(row)
            save(section)
    return section


# -- the results file and its tables ------------------------------------------------------------------
def write(path: Path, name: str, section: dict[str, Any], device: torch.device, command: str) -> None:
    """Merge ``section`` into the JSON file: other sections, Table 2 rows of other (method, size)
    pairs and compare parts not measured now are kept, each with the command that measured it."""
    try:
        data = json.loads(Path(path).read_text())
        data = data if data.get("schema") == SCHEMA else {}
    except (OSError, ValueError):
        data = {}
    stamp = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    old = data.get(name, {})
    if name == "table2":
        new = {(r["method"], r["size"]) for r in section["rows"]}
        rows = [r for r in old.get("rows", []) if (r.get("method"), r.get("size")) not in new]
        section = {**section, "rows": rows + [{**stamp, **r} for r in section["rows"]]}
    else:
        section = {**{k: v for k, v in old.items() if isinstance(v, dict)},
                   **{k: {**v, **stamp} if isinstance(v, dict) and k != "settings" else v for k, v in section.items()}}
    data[name] = {**section, "environment": environment(device), "created": stamp["measured"]}
    write_json(Path(path), {**data, "schema": SCHEMA})


def table2_frame(source: str | Path | dict[str, Any]) -> pd.DataFrame:
    """Table 2 as the book shows it, the paper's PDAC numbers beside the rows above 64^3."""
    from .tables import paper_results

    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    paper = paper_results("table2").set_index(["method", "metric"])["value"].to_dict()
    rows = []
    for r in data.get("table2", data).get("rows", []):
        def num(key: str, fmt: str) -> str:
            return "—" if r.get(key) is None else format(r[key], fmt)
        big = max(r.get("shape", [0])) > 64
        rows.append({"method": r["method"], "size": r["size"], "batch": r["batch_size"]} | (
            {"params (M)": f"missing ({r['error']})"} if r.get("error") else {
                "params (M)": num("params_m", ".1f"), "peak memory (GiB)": f"{num('peak_memory_gib', '.2f')} "
                f"({'CUDA tensors' if r['memory_kind'] == 'cuda_max_allocated' else 'CPU process'})",
                "s / step": num("train_step_s", ".3f"), "s / epoch": num("epoch_s", ".0f"),
                "train vol/s": num("train_volumes_per_s", ".1f"), "infer vol/s": num("infer_volumes_per_s", ".1f"),
                "% of peak": num("fraction_of_peak", ".1%"),
                "params (M) paper": f"{paper.get((r['method'], 'params_millions'), math.nan):.1f}",
                "memory (GiB) paper": f"{paper[(r['method'], 'memory_mib')] / 1024:.1f}" if big else "—",
                "s / epoch paper": f"{paper[(r['method'], 'epoch_seconds')]:.0f}" if big else "—"}))
    return pd.DataFrame(rows)


def compare_frame(source: str | Path | dict[str, Any]) -> pd.DataFrame:
    """One row per ``--compare`` figure: value (None where its part was not measured), target, met."""
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    section, rows = data.get("compare", {}), []
    for name, where, goal in FIGURES:
        part, *path = where.split(".")
        value = section.get(part)
        for k in path:
            value = value.get(k) if isinstance(value, dict) else None
        value = None if value is None or (isinstance(value, float) and math.isnan(value)) else value
        op, target = goal or (None, None)
        rows.append({"figure": name, "value": value, "target": f"{op} {target}" if op else None,
                     "met": None if value is None or not op else (value >= target if op == ">=" else value < target),
                     "device": section.get("environment", {}).get("device"),
                     "measured": (section.get(part, {}).get("measured") or "")[:10] or None,
                     "command": section.get(part, {}).get("command")})
    return pd.DataFrame(rows)


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="Table 2 on this machine (--table2) and lib25d vs the authors' design "
                              "(--compare)", description=__doc__.split("\n\n")[0],
                              formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--table2", action="store_true", help="measure Table 2")
    p.add_argument("--compare", action="store_true", help="compare with the authors' design")
    for name, kwargs in OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), **kwargs)
    p.set_defaults(func=_bench)
    return p


def _bench(args: argparse.Namespace) -> int:
    if not (args.table2 or args.compare):
        raise ValueError("say what to measure: --table2, --compare, or both")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.json or Path("results") / "bench" / f"{device.type}.json")
    command = "lib25d " + " ".join(getattr(args, "argv", ["bench"]))
    print(f"lib25d bench on {device_name(device)}", flush=True)
    if args.table2:
        table2(args, lambda s: write(path, "table2", s, device, command))
        print(table2_frame(path).to_string(index=False), flush=True)
    if args.compare:
        from .bench_compare import compare

        compare(args, lambda s: write(path, "compare", s, device, command))
        print(compare_frame(path)[["figure", "value", "target", "met"]].to_string(index=False), flush=True)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":  # one isolated Table 2 case: python -m lib25d.bench '<json spec>'
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure_case(**{**spec, "config": RunConfig.from_dict(spec["config"])}), allow_nan=True))
