"""Table 2: every (size, method) case, each in a fresh process unless asked otherwise, and the table the book shows
beside the paper's numbers."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from lib25d.models import check_method
from lib25d.run import RunConfig, resolve_device
from lib25d.run.environment import device_name

from ..published import paper_results
from .case import measure_case
from .timing import matmul_peak_gflops, parse_size, size_name

LARGE_SLICE = 64 * 64  # 2.5D slices above this many pixels: chunks + checkpointing in --table2


def isolated(spec: dict[str, Any], in_process: bool = False) -> dict[str, Any]:
    """``measure_case(**spec)`` in a fresh interpreter (its own peak RSS), or here; errors as {"error": ...}."""
    if in_process:
        try:
            return measure_case(**{**spec, "config": RunConfig.from_dict(spec["config"])})
        except (RuntimeError, torch.OutOfMemoryError) as err:
            return {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}
    done = subprocess.run(
        [sys.executable, "-m", "study.bench.case", json.dumps(spec)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return json.loads(lines[-1])
    why = "killed (out of memory?)" if done.returncode in (-9, 137) else f"exit code {done.returncode}"
    return {"error": f"{why}: {' '.join(done.stderr.strip().splitlines()[-3:])[-400:]}"}


def table2(args: argparse.Namespace, save: Callable[[dict], None]) -> dict[str, Any]:
    """Every (size, method) case, each in its own process unless ``--in-process``; saved after each."""
    device = resolve_device(args.device)
    base = RunConfig(device=str(device), weights=None, amp=not args.no_amp, compile=args.compile)
    peaks = {
        "fp32": matmul_peak_gflops(device),
        "bf16": matmul_peak_gflops(device, torch.bfloat16) if device.type == "cuda" else None,
    }
    reference = peaks["bf16"] if peaks["bf16"] and base.amp else peaks["fp32"]
    section: dict[str, Any] = {"rows": [], "matmul_peak_gflops": peaks}
    for shape in map(parse_size, args.sizes):
        voxels = math.prod(shape)
        batch = args.batch_size or (16 if voxels <= 28**3 else 4 if voxels <= 64**3 else 2)
        for method in args.methods:
            large = (
                check_method(method).family == "2.5d"
                and args.large_chunk_size
                and sorted(shape)[-1] * sorted(shape)[-2] > LARGE_SLICE
            )
            config = base.replace(chunk_size=args.large_chunk_size, checkpointing=True) if large else base
            print(f"  {method:11s} {size_name(shape):>12s}  batch {batch} ...", flush=True)
            spec = {
                "method": method,
                "shape": list(shape),
                "batch_size": batch,
                "config": config.to_dict(),
                "repeats": args.repeats,
                "warmup_steps": args.warmup_steps,
                "inference": not args.no_inference,
            }
            row = {
                "method": method,
                "size": size_name(shape),
                "shape": list(shape),
                "batch_size": batch,
                "error": None,
                **isolated(spec, args.in_process),
                "device": device_name(device),
            }
            row["fraction_of_peak"] = row["achieved_gflops"] / reference if row.get("achieved_gflops") else None
            section["rows"].append(row)
            save(section)
    return section


def _number(row: dict[str, Any], key: str, fmt: str) -> str:
    return "—" if row.get(key) is None else format(row[key], fmt)


def table2_frame(source: str | Path | dict[str, Any]) -> pd.DataFrame:
    """Table 2 as the book shows it, the paper's PDAC numbers beside the rows above 64^3."""
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    paper = paper_results("table2").set_index(["method", "metric"])["value"].to_dict()
    rows = []
    for r in data.get("table2", data).get("rows", []):
        num = partial(_number, r)
        big = max(r.get("shape", [0])) > 64
        rows.append(
            {"method": r["method"], "size": r["size"], "batch": r["batch_size"]}
            | (
                {"params (M)": f"missing ({r['error']})"}
                if r.get("error")
                else {
                    "params (M)": num("params_m", ".1f"),
                    "peak memory (GiB)": f"{num('peak_memory_gib', '.2f')} "
                    f"({'CUDA tensors' if r['memory_kind'] == 'cuda_max_allocated' else 'CPU process'})",
                    "s / step": num("train_step_s", ".3f"),
                    "s / epoch": num("epoch_s", ".0f"),
                    "train vol/s": num("train_volumes_per_s", ".1f"),
                    "infer vol/s": num("infer_volumes_per_s", ".1f"),
                    "% of peak": num("fraction_of_peak", ".1%"),
                    "params (M) paper": f"{paper.get((r['method'], 'params_millions'), math.nan):.1f}",
                    "memory (GiB) paper": f"{paper[(r['method'], 'memory_mib')] / 1024:.1f}" if big else "—",
                    "s / epoch paper": f"{paper[(r['method'], 'epoch_seconds')]:.0f}" if big else "—",
                }
            )
        )
    return pd.DataFrame(rows)
