"""``lib25d bench``: the paper's Table 2 on any machine, and what each optimisation buys.

Two measurements, each printed as a table and written (merged by section) into one JSON file
(default ``results/bench/<device type>.json``) that the Table 2 notebook reads through
:func:`table2_frame`:

``--table2``
    For each method (2.5D attention, 3D, ACS; optionally the other reducers) and each volume
    size (28^3, 64^3, 128x224x224 = D x H x W, synthetic uniform-noise volumes, random
    weights): trainable parameters, peak memory of a training step (CUDA max allocated, or
    the peak resident set of a fresh process on CPU: every case runs in its own subprocess so
    peaks do not leak between cases), seconds per training step (full phase: encoder
    trainable, BatchNorm in train mode, NAdam) and per epoch-equivalent (AdrenalMNIST3D's
    1188 training volumes for 28^3 and 64^3, the paper's 975 PDAC training scans for larger
    volumes), volumes per second for training and for inference, and achieved GFLOP/s (FLOPs
    of one training step counted by ``torch.utils.flop_counter.FlopCounterMode`` - including
    checkpoint recomputation where it is on - divided by the measured step time) against a
    measured matmul peak of the same device (best of several large ``torch.matmul``). The
    first ``--warmup-steps`` steps are not timed; the median of ``--repeats`` timed steps is
    reported. The optimised settings (``RunConfig`` defaults) are used; volumes whose slices
    exceed 64x64 are encoded in chunks of ``--large-chunk-size`` slices with activation
    checkpointing (the 2.5D methods; switch off with ``--large-chunk-size 0``).

``--compare``
    lib25d (the ``RunConfig`` defaults) against the authors' design (:mod:`lib25d.authors`: plain
    torchvision ResNet-18 called per axis, fp32, default memory format, their warm-up), 2.5D
    attention on the real AdrenalMNIST3D (28^3), both from the same random initialisation,
    interleaved in one process (alternating which goes first), medians reported:

    1. full-epoch training: ``--steps`` timed training steps on the same real batches of
       ``--batch-size`` (64) after one untimed step, extrapolated to the 1188-volume epoch
       (step time x 1188 / batch); the per-step losses of both are reported (same loss curve
       up to float summation order). Part ``bf16`` repeats it with bf16 autocast on CPU and
       trains one whole epoch in bf16 and in fp32 from the same start (the loss curves);
    2. inference over the whole test split (298 volumes), ``--repeats`` passes each, with the
       predictions of both compared;
    3. warm-up epochs with the encoder frozen, both BatchNorm modes: the authors' (train-mode
       statistics; ``--steps`` interleaved steps of each, extrapolated) and lib25d's frozen mode
       with the feature cache (epochs 2..N timed whole, ``--repeats`` times);
    4. memory at ``--large-shape`` (128x224x224) and batch 2: a training step with chunked
       slice encoding and activation checkpointing, in a fresh subprocess (peak RSS on CPU).
       The same step without checkpointing (same chunks, so the same numbers) runs in another
       when its estimated peak (exact saved-activation bytes of a few slices, scaled) fits into
       half of the available memory. The time factor comes from both steps interleaved in one
       more subprocess, ``--large-repeats`` rounds, in the first setting whose step without
       checkpointing fits: batch 2, batch 1, batch 1 with the axial slices only.

Both are slow on a CPU (the 128x224x224 cases take minutes per step); ``--repeats``,
``--steps`` and ``--sizes`` bound them. Nothing here runs inside the test suite's timing:
the tests call it on tiny configurations only.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

from .config import PERFORMANCE_FIELDS, RunConfig
from .runinfo import (device_name, environment, peak_memory, reset_peak_memory, resolve_device,
                      write_json)
from . import authors
from .train import autocast, autocast_for

SCHEMA = "lib25d.bench/v1"
DEFAULT_SIZES = ("28", "64", "128x224x224")
DEFAULT_METHODS = ("attention", "3d", "acs")
ADRENAL_TRAIN = 1188     # AdrenalMNIST3D training volumes: the epoch of the MedMNIST sizes
PDAC_TRAIN = 975         # the paper's PDAC training scans: the epoch of 224x224x128 volumes
LARGE_SLICE = 64 * 64    # slices above this many pixels get chunking + checkpointing in --table2
# the paper's Table 2 (PDAC, 224x224x128, GPU): params (M), memory (MiB), epoch time (s, mean, std)
PAPER_TABLE2 = {
    "3d": {"params_m": 33.2, "memory_mib": 15821, "epoch_s": 744.1, "epoch_s_std": 0.21},
    "acs": {"params_m": 11.2, "memory_mib": 14475, "epoch_s": 222.7, "epoch_s_std": 29.4},
    "attention": {"params_m": 12.2, "memory_mib": 19091, "epoch_s": 434.3, "epoch_s_std": 0.45},
}
TARGETS = {"full_epoch_speedup": 3.0, "inference_speedup": 2.0, "large_peak_gib": 8.0}  # against the authors' design


# -- small helpers -----------------------------------------------------------------------------
def parse_size(text: str | int | Sequence[int]) -> tuple[int, int, int]:
    """'28' -> (28, 28, 28); '128x224x224' -> (128, 224, 224) (D, H, W)."""
    if isinstance(text, (tuple, list)):
        shape = tuple(int(s) for s in text)
    else:
        parts = str(text).lower().replace("*", "x").split("x")
        try:
            shape = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"volume size {text!r} is not N or DxHxW, e.g. 28 or 128x224x224") from None
        if len(shape) == 1:
            shape = shape * 3
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"volume size {text!r} must be N or DxHxW with every side at least 8")
    return shape  # type: ignore[return-value]


def size_name(shape: Sequence[int]) -> str:
    return str(shape[0]) if len(set(shape)) == 1 else "x".join(str(s) for s in shape)


def epoch_volumes(shape: Sequence[int]) -> int:
    """Volumes in one epoch-equivalent: AdrenalMNIST3D's training split up to 64^3, else PDAC's."""
    return ADRENAL_TRAIN if max(shape) <= 64 else PDAC_TRAIN


def default_batch_size(shape: Sequence[int]) -> int:
    voxels = int(np.prod(shape))
    return 16 if voxels <= 28 ** 3 else 4 if voxels <= 64 ** 3 else 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of ``fn()`` (device synchronised before and after) and its result."""
    _sync(device)
    tic = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - tic, out


def current_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def available_memory_bytes(device: torch.device) -> int:
    """Memory a new process may still use: free CUDA memory, or MemAvailable of /proc/meminfo."""
    if device.type == "cuda":
        torch.cuda.empty_cache()  # this process's cached blocks are free for the next one
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, n: int | None = None,
                       repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n matrix product on ``device`` (the achievable peak we compare with)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device, dtype)
    b = torch.randn(n, n, generator=gen).to(device, dtype)
    for _ in range(2):
        torch.matmul(a, b)
    best = min(timed(lambda: torch.matmul(a, b), device)[0] for _ in range(repeats))
    return 2 * n ** 3 / best / 1e9


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b and not math.isnan(b) else float("nan")


def performance_settings(config: RunConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in (*PERFORMANCE_FIELDS, "chunk_size", "amp")}


def build_configured(method: str, config: RunConfig, in_channels: int = 1, num_classes: int = 2,
                     weights: str | None = None, axes: Sequence[int] = (0, 1, 2)) -> nn.Module:
    """``build_model`` + the config's performance switches (what the trainer trains)."""
    from .models import build_model
    from .train import configure_model
    extra = {} if tuple(axes) == (0, 1, 2) else {"axes": tuple(axes)}
    model = build_model(method, weights=weights, in_channels=in_channels, num_classes=num_classes,
                        chunk_size=config.chunk_size, **extra)
    return configure_model(model, config)


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn, optimizer, device: torch.device,
               config: RunConfig) -> float:
    with autocast(device, config):
        loss = loss_fn(model(x).float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.item())


def count_step_flops(step: Callable[[], Any]) -> tuple[int, Any]:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        out = step()
    return int(counter.get_total_flops()), out


# -- Table 2 -------------------------------------------------------------------------------------
def case_config(shape: Sequence[int], method: str, device: str, large_chunk_size: int | None,
                base: RunConfig | None = None) -> RunConfig:
    """The optimised settings for one Table 2 case (chunking + checkpointing for large slices)."""
    from .models.reducers import REDUCERS
    config = (base or RunConfig()).replace(device=device, weights=None)
    sides = sorted(shape)
    if method in REDUCERS and large_chunk_size and sides[-1] * sides[-2] > LARGE_SLICE:
        config = config.replace(chunk_size=large_chunk_size, checkpointing=True)
    return config


def measure_case(method: str, shape: Sequence[int], batch_size: int, config: RunConfig, repeats: int = 3,
                 warmup_steps: int = 1, inference: bool = True, flops: bool = True, seed: int = 0) -> dict[str, Any]:
    """One Table 2 cell group: params, peak memory, step time, throughput, FLOP rate (this process)."""
    from .models import count_parameters, set_encoder_trainable
    from .train import loss_function
    device = resolve_device(config.device)
    torch.manual_seed(seed)
    model = build_configured(method, config).to(device)
    set_encoder_trainable(model, True)
    params = count_parameters(model)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 1, *shape, generator=gen).to(device)
    y = torch.randint(0, 2, (batch_size,), generator=gen).to(device)
    loss_fn = loss_function(2)
    optimizer = torch.optim.NAdam(model.parameters(), lr=config.lr)
    model.train()
    reset_peak_memory(device)
    baseline = current_bytes(device)
    step = lambda: train_step(model, x, y, loss_fn, optimizer, device, config)  # noqa: E731
    flop_count = None
    for i in range(warmup_steps):
        if i == 0 and flops and not config.compile:
            _sync(device)
            flop_count, _ = count_step_flops(step)
            _sync(device)
        else:
            timed(step, device)
    times = [timed(step, device)[0] for _ in range(repeats)]
    if flops and flop_count is None and not config.compile:
        flop_count, _ = count_step_flops(step)  # no untimed step was asked for: count after timing
    peak, kind = peak_memory(device).values()
    row: dict[str, Any] = {
        "method": method, "size": size_name(shape), "shape": list(shape), "batch_size": batch_size,
        "params": params, "params_m": params / 1e6,
        "peak_memory_bytes": peak, "peak_memory_gib": peak / 2 ** 30, "memory_kind": kind,
        "baseline_memory_bytes": baseline,
        "train_step_s": median(times), "train_step_s_all": times,
        "epoch_volumes": epoch_volumes(shape),
        "epoch_s": median(times) * epoch_volumes(shape) / batch_size,
        "train_volumes_per_s": batch_size / median(times),
        "flops_per_step": flop_count,
        "achieved_gflops": (flop_count / median(times) / 1e9) if flop_count else None,
        "settings": performance_settings(config), "device": device_name(device),
    }
    if inference:
        model.eval()

        def infer():
            with torch.no_grad(), autocast(device, config):
                return model(x)

        timed(infer, device)
        itimes = [timed(infer, device)[0] for _ in range(repeats)]
        row.update({"infer_batch_s": median(itimes), "infer_batch_s_all": itimes,
                    "infer_volumes_per_s": batch_size / median(itimes)})
    return row


def _run_subprocess(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run :func:`_case_main` in a fresh interpreter (fresh peak RSS) and return its JSON answer."""
    cmd = [sys.executable, "-m", "lib25d.bench", json.dumps(spec)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        why = "killed (out of memory?)" if done.returncode in (-9, 137) else f"exit code {done.returncode}"
        tail = " ".join(done.stderr.strip().splitlines()[-3:])[-400:]
        return {"error": f"{why}: {tail}"}
    return json.loads(lines[-1])


def _run_case(spec: dict[str, Any], isolate: bool = True) -> dict[str, Any]:
    """A measurement in a fresh subprocess (``isolate``) or in this process; errors become ``{"error": ...}``."""
    if isolate:
        return _run_subprocess(copy.deepcopy(spec))
    try:
        return _case_main(copy.deepcopy(spec))
    except (RuntimeError, torch.OutOfMemoryError) as err:  # e.g. CUDA out of memory
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0]}"}


def _case_main(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.pop("kind")
    threads = spec.pop("threads", None)
    if threads:
        torch.set_num_threads(threads)
    config = RunConfig.from_dict(spec.pop("config"))
    if kind == "case":
        return measure_case(config=config, **spec)
    if kind == "time_factor":
        return measure_time_factor(config=config, **spec)
    raise ValueError(f"unknown bench case kind {kind!r}")


def table2(sizes: Iterable[str] = DEFAULT_SIZES, methods: Iterable[str] = DEFAULT_METHODS,
           batch_size: int | None = None, device: str = "auto", repeats: int = 3, warmup_steps: int = 1,
           large_chunk_size: int | None = 64, isolate: bool = True, inference: bool = True,
           base: RunConfig | None = None, log: Callable[[str], None] = print,
           on_progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Measure every (size, method) case; each in its own subprocess unless ``isolate=False``.

    ``on_progress`` receives the section after every case (the command line saves it, so an
    interrupted run keeps what it measured).
    """
    from .models import METHODS
    dev = resolve_device(device)
    methods = list(methods)
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown method {m!r}; valid: {', '.join(METHODS)}")
    shapes = [parse_size(s) for s in sizes]
    amp = (base or RunConfig()).amp
    peak32 = matmul_peak_gflops(dev, torch.float32)
    peak16 = matmul_peak_gflops(dev, torch.bfloat16) if dev.type == "cuda" else None
    reference = peak16 if (peak16 and amp) else peak32
    section: dict[str, Any] = {
        "rows": [], "matmul_peak_gflops": {"fp32": peak32, "bf16": peak16},
        "peak_reference": "bf16" if (peak16 and amp) else "fp32",
        "settings": {"repeats": repeats, "warmup_steps": warmup_steps, "isolated_processes": isolate,
                     "large_chunk_size": large_chunk_size, "data": "uniform random volumes, random weights",
                     "batch_size": batch_size or "per size: 16 (<=28^3), 4 (<=64^3), 2 (larger)",
                     "epoch_volumes": f"{ADRENAL_TRAIN} up to 64^3 (AdrenalMNIST3D train), "
                                      f"{PDAC_TRAIN} above (the paper's PDAC train split)"},
        "paper": PAPER_TABLE2}
    for shape in shapes:
        bs = batch_size or default_batch_size(shape)
        for method in methods:
            config = case_config(shape, method, str(dev), large_chunk_size, base)
            spec = {"kind": "case", "method": method, "shape": list(shape), "batch_size": bs,
                    "config": config.to_dict(), "repeats": repeats, "warmup_steps": warmup_steps,
                    "inference": inference, "threads": torch.get_num_threads()}
            log(f"  {method:11s} {size_name(shape):>12s}  batch {bs} ...")
            tic = time.perf_counter()
            row = _run_case(spec, isolate)
            row = {"method": method, "size": size_name(shape), "shape": list(shape), "batch_size": bs,
                   "error": None, **row, "repeats": repeats, "warmup_steps": warmup_steps,
                   "threads": torch.get_num_threads(), "wall_s": time.perf_counter() - tic}
            g = row.get("achieved_gflops")
            row["fraction_of_peak"] = g / reference if g else None
            section["rows"].append(row)
            log(f"    {_row_summary(row)}")
            if on_progress is not None:
                on_progress(section)
    return section


def _row_summary(row: dict[str, Any]) -> str:
    if row.get("error"):
        return f"error: {row['error']}"
    out = (f"params {row['params_m']:.1f} M, peak {row['peak_memory_gib']:.2f} GiB, step {row['train_step_s']:.3f} s, "
           f"epoch {row['epoch_s']:.0f} s, train {row['train_volumes_per_s']:.2f} vol/s")
    if row.get("infer_volumes_per_s"):
        out += f", infer {row['infer_volumes_per_s']:.2f} vol/s"
    if row.get("achieved_gflops"):
        out += f", {row['achieved_gflops']:.1f} GFLOP/s"
    return out


def format_table2(section: dict[str, Any]) -> str:
    head = (f"{'method':11s} {'size':>12s} {'batch':>5s} {'params M':>9s} {'paper M':>8s} {'peak GiB':>9s} "
            f"{'step s':>9s} {'epoch s':>9s} {'paper s':>8s} {'train v/s':>9s} {'infer v/s':>9s} "
            f"{'GFLOP/s':>8s} {'% peak':>7s}")
    lines = [head, "-" * len(head)]
    for r in section["rows"]:
        paper = PAPER_TABLE2.get(r["method"], {})
        if r.get("error"):
            lines.append(f"{r['method']:11s} {r['size']:>12s} {r['batch_size']:5d}  error: {r['error'][:80]}")
            continue
        frac = r.get("fraction_of_peak")
        lines.append(
            f"{r['method']:11s} {r['size']:>12s} {r['batch_size']:5d} {r['params_m']:9.2f} "
            f"{paper.get('params_m', float('nan')):8.1f} {r['peak_memory_gib']:9.2f} {r['train_step_s']:9.3f} "
            f"{r['epoch_s']:9.1f} {paper.get('epoch_s', float('nan')) if max(r['shape']) > 64 else float('nan'):8.1f} "
            f"{r['train_volumes_per_s']:9.2f} {r.get('infer_volumes_per_s') or float('nan'):9.2f} "
            f"{r.get('achieved_gflops') or float('nan'):8.1f} {100 * frac if frac else float('nan'):7.1f}")
    peaks = section["matmul_peak_gflops"]
    lines.append(f"matmul peak: fp32 {peaks['fp32']:.1f} GFLOP/s" +
                 (f", bf16 {peaks['bf16']:.1f} GFLOP/s" if peaks.get("bf16") else "") +
                 f" (% peak against {section['peak_reference']}); paper columns: PDAC 224x224x128 on a GPU")
    return "\n".join(lines)


# -- --compare ---------------------------------------------------------------------------------
def _interleaved(fns: dict[str, Callable[[], Any]], rounds: int, device: torch.device) -> dict[str, list]:
    """Run every fn once per round, alternating the order each round; (seconds, result) lists."""
    names = list(fns)
    out: dict[str, list] = {n: [] for n in names}
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            out[n].append(timed(fns[n], device))
    return out


def _batches(data, batch_size: int, seed: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``count`` batches of a seeded shuffle of ``data``."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    out = []
    for b in range(count):
        idx = order[(b * batch_size) % len(order):][:batch_size]
        out.append((torch.stack([data[i][0] for i in idx]), torch.as_tensor(data.labels[idx])))
    return out


def _pair(config: RunConfig, seed: int) -> tuple[nn.Module, nn.Module]:
    """lib25d's attention model with ``config``'s switches and the authors' model with the same weights."""
    torch.manual_seed(seed)
    ours = build_configured("attention", config, weights=config.weights)
    return ours, authors.from_lib25d(ours)


def compare_training(data, optimised: RunConfig, batch_size: int, steps: int, device: torch.device,
                     seed: int = 0, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Full-phase training steps of the authors' design and of lib25d on the same real batches
    (same initial weights, interleaved, alternating which goes first)."""
    from .train import loss_function
    ours, ref = _pair(optimised, seed)
    loss_fn = loss_function(2)
    steps_of = {}
    for name, m in (("authors", ref), ("lib25d", ours)):
        m.to(device).train()
        m.requires_grad_(True)
        opt = torch.optim.NAdam(m.parameters(), lr=optimised.lr)
        steps_of[name] = (lambda x, y, m=m, opt=opt: authors.train_step(m, x, y, opt)) if name == "authors" else \
            (lambda x, y, m=m, opt=opt: train_step(m, x, y, loss_fn, opt, device, optimised))
    batches = [(x.to(device), y.to(device)) for x, y in _batches(data, batch_size, seed, steps + 1)]
    times: dict[str, list[float]] = {n: [] for n in steps_of}
    losses: dict[str, list[float]] = {n: [] for n in steps_of}
    for i, (x, y) in enumerate(batches):
        for n in (list(steps_of) if i % 2 == 0 else list(steps_of)[::-1]):
            dt, loss = timed(lambda: steps_of[n](x, y), device)
            losses[n].append(loss)
            if i > 0:  # the first step is not timed (allocator, oneDNN primitive caches)
                times[n].append(dt)
        log(f"    step {i}: " + ", ".join(f"{n} {times[n][-1] if i else float('nan'):.2f} s loss {losses[n][-1]:.6f}"
                                          for n in steps_of))
    step = {n: median(t) for n, t in times.items()}
    diffs = [abs(a - b) for a, b in zip(losses["authors"], losses["lib25d"])]
    return {"batch_size": batch_size, "timed_steps": steps, "step_s": step, "step_s_all": times,
            "epoch_s": {n: s * len(data) / batch_size for n, s in step.items()},
            "epoch_volumes": len(data), "losses": losses, "loss_max_abs_diff": max(diffs),
            "loss_max_rel_diff": max(d / abs(b) for d, b in zip(diffs, losses["authors"])),
            "speedup": _ratio(step["authors"], step["lib25d"]), "bf16_cpu": optimised.bf16_cpu,
            "note": "epoch time = median step time x training volumes / batch size"}


def compare_bf16_epoch(data, optimised: RunConfig, batch_size: int, device: torch.device, seed: int = 0,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """One whole training epoch of lib25d in fp32 and with bf16 autocast, from the same weights and
    batches, interleaved step by step: the effect of bf16 on the loss curve and its speed."""
    from .train import loss_function
    loss_fn = loss_function(2)
    runs = {}
    for name, config in (("fp32", optimised.replace(bf16_cpu=False)), ("bf16", optimised.replace(bf16_cpu=True))):
        model, _ = _pair(config, seed)
        model.to(device).train()
        runs[name] = (model, torch.optim.NAdam(model.parameters(), lr=config.lr), config)
    batches = _batches(data, batch_size, seed, -(-len(data) // batch_size))
    losses: dict[str, list[float]] = {n: [] for n in runs}
    times: dict[str, list[float]] = {n: [] for n in runs}
    for i, (x, y) in enumerate(batches):
        x, y = x.to(device), y.to(device)
        for n in (list(runs) if i % 2 == 0 else list(runs)[::-1]):
            model, opt, config = runs[n]
            dt, loss = timed(lambda: train_step(model, x, y, loss_fn, opt, device, config), device)
            losses[n].append(loss)
            times[n].append(dt)
        log(f"    step {i}: fp32 loss {losses['fp32'][-1]:.4f}, bf16 loss {losses['bf16'][-1]:.4f}")
    diffs = np.abs(np.subtract(losses["bf16"], losses["fp32"]))
    step = {n: median(t[1:]) for n, t in times.items()}
    return {"batch_size": batch_size, "steps": len(batches), "losses": losses, "step_s": step,
            "loss_max_abs_diff": float(diffs.max()), "loss_mean_abs_diff": float(diffs.mean()),
            "epoch_mean_loss": {n: float(np.mean(v)) for n, v in losses.items()},
            "speedup": _ratio(step["fp32"], step["bf16"]), "native_bf16": native_bf16()}


def native_bf16() -> bool:
    """Whether this CPU reports native bf16 arithmetic (avx512_bf16 or AMX); False where unknown."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def compare_inference(data, optimised: RunConfig, batch_size: int, repeats: int, device: torch.device,
                      seed: int = 0) -> dict[str, Any]:
    """Whole-split inference of the authors' design and of lib25d (interleaved), predictions compared."""
    from .models.encoder import unique_slices
    from .models.slicing import slice_axis
    ours, ref = _pair(optimised, seed)
    ours.to(device).eval()
    ref.to(device).eval()
    volumes = torch.as_tensor(np.asarray(data.volumes, dtype=np.float32))
    chunks = [volumes[i:i + batch_size].to(device) for i in range(0, len(volumes), batch_size)]

    def run(forward, bf16):
        with torch.no_grad(), autocast_for(device, bf16, bf16):
            return torch.cat([forward(x).float() for x in chunks]).cpu()

    fns = {"authors": lambda: run(lambda x: ref(x)[0], False),
           "lib25d": lambda: run(ours, optimised.amp if device.type == "cuda" else optimised.bf16_cpu)}
    for fn in fns.values():  # untimed: allocator, primitive caches
        fn()
    res = _interleaved(fns, repeats, device)
    la, lb = res["authors"][-1][1], res["lib25d"][-1][1]
    same = bool(torch.equal((la > 0) if la.shape[1] == 1 else la.argmax(1), (lb > 0) if lb.shape[1] == 1 else lb.argmax(1)))
    secs = {n: median([t for t, _ in v]) for n, v in res.items()}
    total = unique = 0
    for x in chunks:
        for ax in range(3):  # per axis, as the encoder sees them
            s = slice_axis(x.cpu(), ax)
            found = unique_slices(s)
            total += s.shape[0]
            unique += s.shape[0] if found is None else found[0].shape[0]
    return {"volumes": len(volumes), "batch_size": batch_size, "repeats": repeats, "seconds": secs,
            "seconds_all": {n: [t for t, _ in v] for n, v in res.items()},
            "volumes_per_s": {n: len(volumes) / s for n, s in secs.items()},
            "speedup": _ratio(secs["authors"], secs["lib25d"]),
            "identical_predictions": same, "max_abs_logit_diff": float((la - lb).abs().max()),
            "logits_bitwise_equal": bool(torch.equal(la, lb)), "unique_slice_fraction": unique / total}


def compare_warmup(train_data, optimised: RunConfig, batch_size: int, steps: int, repeats: int,
                   device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Warm-up epochs (encoder frozen, reducer and head train) under both BatchNorm modes.

    ``authors``: the authors' warm-up epochs 2..N (train-mode BatchNorm) against lib25d's
    (deduplicated, counted BatchNorm), ``steps`` interleaved steps each, extrapolated to the epoch.
    ``frozen``: lib25d's cached warm-up (epoch 1 encodes the split once; epochs 2..N train on
    the cached tokens, timed over the whole epoch ``repeats`` times) against the authors' warm-up.
    """
    from .models import set_encoder_trainable
    from .train import _index_loader, _train_epoch, feature_cache, logits_from_features, loss_function
    loss_fn = loss_function(2)
    config = optimised.replace(batch_size=batch_size)
    ours, ref = _pair(config, seed)
    authors.prepare(ref, 3)
    set_encoder_trainable(ours, False)
    for m in (ours, ref):
        m.to(device).train()  # BatchNorm on batch statistics, weights frozen: the authors' epochs 2..N
    ropt = torch.optim.NAdam(ref.parameters(), lr=config.lr)
    oopt = torch.optim.NAdam(ours.parameters(), lr=config.lr)
    batches = [(x.to(device), y.to(device)) for x, y in _batches(train_data, batch_size, seed, steps + 1)]
    res = {"authors": [], "lib25d": []}
    for i, (x, y) in enumerate(batches):
        fns = {"authors": lambda: authors.train_step(ref, x, y, ropt),
               "lib25d": lambda: train_step(ours, x, y, loss_fn, oopt, device, config)}
        for n in (list(fns) if i % 2 == 0 else list(fns)[::-1]):
            dt, _ = timed(fns[n], device)
            if i > 0:
                res[n].append(dt)
    per_epoch = len(train_data) / batch_size
    authors_epoch = median(res["authors"]) * per_epoch
    ours_epoch = median(res["lib25d"]) * per_epoch
    # frozen statistics: the cached warm-up
    frozen = config.replace(warmup_bn="frozen")
    model, _ = _pair(frozen, seed)
    model.to(device)
    set_encoder_trainable(model, False)
    model.train()
    model.encoder.eval()
    optimizer = torch.optim.NAdam(model.parameters(), lr=frozen.lr)
    build_s, cache = timed(lambda: feature_cache(model, train_data, frozen, device), device)
    if cache is None:
        raise RuntimeError("the feature cache exceeds WARMUP_CACHE_LIMIT_BYTES; nothing to compare")

    def cached_epoch(epoch):
        loader = _index_loader(train_data, frozen, seed * 100_003 + epoch)
        return _train_epoch(model, loader, loss_fn, optimizer, device, frozen, "warm-up", True,
                            lambda idx: logits_from_features(model, cache[idx.to(cache.device)]))

    epochs = [timed(lambda e=e: cached_epoch(e), device)[0] for e in range(1, repeats + 1)]
    cached = median(epochs)
    return {"authors_bn": {"authors_epoch_s": authors_epoch, "lib25d_epoch_s": ours_epoch,
                           "step_s_all": res, "speedup": _ratio(authors_epoch, ours_epoch)},
            "frozen_bn": {"cache_build_s": build_s, "cache_bytes": cache.numel() * cache.element_size(),
                          "cached_epoch_s": cached, "cached_epoch_s_all": epochs,
                          "first_warmup_epoch_s": build_s + cached,
                          "speedup": _ratio(authors_epoch, cached)},
            "note": "authors' warm-up epochs extrapolated from their steps; cached epochs measured whole"}


def saved_activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes autograd keeps for the backward of ``model(x)``: distinct storages other than parameters."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return sum(seen.values())


def estimate_plain_peak(shape: Sequence[int], batch_size: int, config: RunConfig,
                        axes: Sequence[int] = (0, 1, 2)) -> int:
    """Saved-activation bytes of a 2.5D training step without checkpointing, from a few real slices.

    Per slice shape: the growth of the saved bytes from 2 to 4 slices (so constant terms such as
    re-laid-out weights drop out), times the number of such slices in the batch.
    """
    from .models import set_encoder_trainable
    torch.manual_seed(0)
    model = build_configured("attention", config.replace(checkpointing=False, chunk_size=None))
    set_encoder_trainable(model, True)
    model.train()
    enc = model.encoder
    total = 0.0
    d, h, w = shape
    counts: dict[tuple[int, int], int] = {}
    for axis, (plane, n) in enumerate((((h, w), d), ((d, w), h), ((d, h), w))):
        if axis in axes:
            counts[plane] = counts.get(plane, 0) + n
    for (a, b), count in counts.items():
        two, four = (saved_activation_bytes(enc, torch.rand(k, 1, a, b)) for k in (2, 4))
        total += (four - two) / 2 * count * batch_size
    total += 3 * sum(p.numel() * p.element_size() for p in model.parameters())  # gradients + NAdam moments
    return int(total)


def measure_time_factor(shape: Sequence[int], batch_size: int, config: RunConfig, rounds: int = 2,
                        warmup_steps: int = 0, seed: int = 0, axes: Sequence[int] = (0, 1, 2)) -> dict[str, Any]:
    """Training-step seconds with and without checkpointing, interleaved in one process (one model,
    the switch toggled between steps, alternating which goes first)."""
    from .models import set_encoder_trainable
    from .train import loss_function
    device = resolve_device(config.device)
    torch.manual_seed(seed)
    model = build_configured("attention", config, axes=axes).to(device)
    set_encoder_trainable(model, True)
    model.train()
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 1, *shape, generator=gen).to(device)
    y = torch.randint(0, 2, (batch_size,), generator=gen).to(device)
    loss_fn = loss_function(2)
    optimizer = torch.optim.NAdam(model.parameters(), lr=config.lr)

    def step(ckpt: bool):
        model.encoder.checkpointing = ckpt
        return timed(lambda: train_step(model, x, y, loss_fn, optimizer, device, config), device)[0]

    for _ in range(warmup_steps):
        step(True), step(False)
    times: dict[str, list[float]] = {"checkpointing": [], "no_checkpointing": []}
    for r in range(rounds):
        for ckpt in ((True, False) if r % 2 == 0 else (False, True)):
            times["checkpointing" if ckpt else "no_checkpointing"].append(step(ckpt))
    return {"batch_size": batch_size, "axes": list(axes), "rounds": rounds, "step_s_all": times,
            "step_s": {k: median(v) for k, v in times.items()},
            "time_factor": _ratio(median(times["checkpointing"]), median(times["no_checkpointing"]))}


def compare_memory(shape: Sequence[int], batch_size: int, chunk_size: int, optimised: RunConfig,
                   repeats: int, warmup_steps: int, log: Callable[[str], None] = print,
                   fraction: float = 0.5, isolate: bool = True) -> dict[str, Any]:
    """Peak memory of a chunked + checkpointed training step, and what checkpointing costs in time.

    Peaks: one fresh subprocess per configuration (with and without checkpointing; without only
    if its estimated peak fits into ``fraction`` of the available memory: the machine may be
    shared). Time factor: both interleaved in one more subprocess, ``repeats`` rounds, in the
    first setting whose step without checkpointing fits: ``batch_size``, batch 1, batch 1 with
    the axial slices only (same slice size and chunks; the setting is recorded).
    """
    dev = resolve_device(optimised.device)
    ckpt = optimised.replace(chunk_size=chunk_size, checkpointing=True)
    plain = optimised.replace(chunk_size=chunk_size, checkpointing=False)
    threads = torch.get_num_threads()

    def run(config, bs):
        spec = {"kind": "case", "method": "attention", "shape": list(shape), "batch_size": bs,
                "config": config.to_dict(), "repeats": 1, "warmup_steps": 0,
                "inference": False, "flops": False, "threads": threads}
        log(f"    peak memory, {'checkpointing' if config.checkpointing else 'no checkpointing'}, chunks of "
            f"{chunk_size}, batch {bs} ...")
        row = _run_case(spec, isolate)
        log(f"      {_row_summary({'error': None, **row}) if 'params' in row else row.get('error')}")
        return row

    out: dict[str, Any] = {"shape": list(shape), "batch_size": batch_size, "chunk_size": chunk_size}
    out["checkpointing"] = run(ckpt, batch_size)
    base = out["checkpointing"].get("baseline_memory_bytes", 0)
    available = available_memory_bytes(dev)
    estimate = estimate_plain_peak(shape, batch_size, plain) + base
    out["no_checkpointing_estimate_bytes"] = estimate
    out["available_bytes"] = available
    if estimate < fraction * available:
        out["no_checkpointing"] = run(plain, batch_size)
        tf_batch = batch_size
    else:
        out["no_checkpointing"] = {"error": f"not run: estimated {estimate / 2**30:.1f} GiB > {fraction:.0%} of "
                                            f"{available / 2**30:.1f} GiB available"}
        tf_batch = None
    tf_axes: tuple[int, ...] = (0, 1, 2)
    if tf_batch is None:
        for bs, axes in ((1, (0, 1, 2)), (1, (0,))):
            if estimate_plain_peak(shape, bs, plain, axes) + base < fraction * available:
                tf_batch, tf_axes = bs, axes
                break
    if tf_batch:
        what = f"batch {tf_batch}" + ("" if tf_axes == (0, 1, 2) else ", axial slices only")
        log(f"    time factor: both interleaved, {what}, {repeats} round(s) ...")
        spec = {"kind": "time_factor", "shape": list(shape), "batch_size": tf_batch, "config": ckpt.to_dict(),
                "rounds": repeats, "warmup_steps": warmup_steps, "threads": threads, "axes": list(tf_axes)}
        out["time"] = _run_case(spec, isolate)
        out["time_factor_setting"] = what
        log(f"      {out['time'].get('step_s', out['time'].get('error'))}")
    else:
        out["time"] = {"error": "not measured: the step without checkpointing does not fit"}
        out["time_factor_setting"] = None
    out["time_factor"] = out["time"].get("time_factor", float("nan"))
    peak = out["checkpointing"].get("peak_memory_bytes")
    out["peak_gib"] = peak / 2 ** 30 if peak else float("nan")
    out["memory_kind"] = out["checkpointing"].get("memory_kind")
    return out


def compare(data_root: str | None = None, device: str = "auto", batch_size: int = 64, steps: int = 3,
            repeats: int = 3, memory: bool = True, large_shape: Sequence[int] = (128, 224, 224),
            large_batch_size: int = 2, large_chunk_size: int = 64, large_repeats: int = 2,
            large_warmup_steps: int | None = None, weights: str | None = None, subset: int | None = None,
            parts: Iterable[str] = ("training", "inference", "warmup", "memory"),
            log: Callable[[str], None] = print, amp: bool = True, compile: bool = False,
            on_progress: Callable[[dict[str, Any]], None] | None = None, isolate: bool = True) -> dict[str, Any]:
    """lib25d (``RunConfig`` defaults) against the authors' design (:mod:`lib25d.authors`), side by side.

    ``parts``: training, bf16 (training steps and a whole epoch with bf16 autocast on CPU),
    inference, warmup (both BatchNorm modes), memory (large volumes, lib25d only).
    """
    from .data import load_dataset
    dev = resolve_device(device)
    parts = set(parts) if memory else set(parts) - {"memory"}
    optimised = RunConfig(device=str(dev), weights=weights, batch_size=batch_size, data_root=data_root, amp=amp,
                          compile=compile)
    opts = {"subset": subset} if subset else {}
    out: dict[str, Any] = {"settings": {"lib25d": performance_settings(optimised),
                                        "before": "the authors' design (lib25d.authors): plain torchvision "
                                                  "ResNet-18 per axis, fp32",
                                        "batch_size": batch_size, "steps": steps, "repeats": repeats,
                                        "weights": weights or "random (seeded)", "method": "attention",
                                        "data": "AdrenalMNIST3D 28^3" + (f" (subset {subset})" if subset else "")}}

    def saved():
        if on_progress is not None:
            on_progress({**out, "ratios": compare_ratios(out), "targets": TARGETS})

    if parts & {"training", "warmup", "bf16"}:
        train_data = load_dataset("adrenal", "train", root=data_root, **opts)
    if "training" in parts:
        log(f"  full-epoch training: {steps} timed steps of batch {batch_size} each ...")
        out["full_epoch"] = compare_training(train_data, optimised, batch_size, steps, dev, log=log)
        saved()
    if "bf16" in parts and dev.type == "cpu":
        log("  bf16 autocast on CPU: training steps against the authors' design ...")
        out["full_epoch_bf16"] = compare_training(train_data, optimised.replace(bf16_cpu=True), batch_size, steps,
                                                  dev, log=log)
        log("  bf16 autocast on CPU: one whole epoch against fp32, loss curves ...")
        out["bf16_epoch"] = compare_bf16_epoch(train_data, optimised, batch_size, dev, log=log)
        saved()
    if "inference" in parts:
        log(f"  inference over the test split, {repeats} passes each ...")
        test_data = load_dataset("adrenal", "test", root=data_root, **opts)
        out["inference"] = compare_inference(test_data, optimised, batch_size, repeats, dev)
        saved()
    if "warmup" in parts:
        log("  warm-up epochs, both BatchNorm modes ...")
        out["warmup"] = compare_warmup(train_data, optimised, batch_size, steps, repeats, dev)
        saved()
    if "memory" in parts:
        log(f"  {size_name(large_shape)} at batch {large_batch_size}, chunks of {large_chunk_size} ...")
        warm = large_warmup_steps if large_warmup_steps is not None else (1 if dev.type == "cuda" else 0)
        out["memory_large"] = compare_memory(parse_size(large_shape), large_batch_size, large_chunk_size,
                                             optimised, large_repeats, warm, log, isolate=isolate)
    out["ratios"] = compare_ratios(out)
    out["targets"] = TARGETS
    return out


COMPARE_PARTS = {"training": "full_epoch", "bf16": "full_epoch_bf16", "bf16_epoch": "bf16_epoch",
                 "inference": "inference", "warmup": "warmup", "memory": "memory_large"}


def compare_ratios(section: dict[str, Any]) -> dict[str, Any]:
    """The issue's figures from the parts of a ``compare`` section."""
    warm = section.get("warmup", {})
    return {
        "full_epoch_speedup": section.get("full_epoch", {}).get("speedup"),
        "full_epoch_bf16_speedup": section.get("full_epoch_bf16", {}).get("speedup"),
        "bf16_epoch_loss_max_abs_diff": section.get("bf16_epoch", {}).get("loss_max_abs_diff"),
        "inference_speedup": section.get("inference", {}).get("speedup"),
        "warmup_speedup_authors_bn": warm.get("authors_bn", {}).get("speedup"),
        "warmup_speedup_frozen_bn": warm.get("frozen_bn", {}).get("speedup"),
        "large_peak_gib": section.get("memory_large", {}).get("peak_gib"),
        "checkpointing_time_factor": section.get("memory_large", {}).get("time_factor"),
    }


def format_compare(section: dict[str, Any]) -> str:
    r, lines = section["ratios"], []
    for key, name, better, part in COMPARE_FIGURES:
        value, target = r.get(key), TARGETS.get(key)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            lines.append(f"{name:62s} {'not measured':>10s}")
            continue
        verdict = "" if target is None else \
            f"   target {'>=' if better == 'higher' else '<'} {target}   " + \
            ("met" if (value >= target if better == "higher" else value <= target) else "NOT met")
        lines.append(f"{name:62s} {value:10.3g}{verdict}")
    if fe := section.get("full_epoch"):
        lines.append(f"    epoch s: authors {fe['epoch_s']['authors']:.0f}, lib25d {fe['epoch_s']['lib25d']:.0f} "
                     f"(extrapolated); per-step losses max |diff| {fe['loss_max_abs_diff']:.2e}")
    if be := section.get("bf16_epoch"):
        lines.append(f"    bf16 epoch ({be['steps']} steps): mean loss {be['epoch_mean_loss']['bf16']:.4f} vs fp32 "
                     f"{be['epoch_mean_loss']['fp32']:.4f}, per-step max |diff| {be['loss_max_abs_diff']:.2e}; "
                     f"native bf16: {be['native_bf16']}")
    if inf := section.get("inference"):
        lines.append(f"    {inf['volumes']} volumes: {inf['seconds']['authors']:.1f} s vs {inf['seconds']['lib25d']:.1f} s; "
                     f"identical predictions: {inf['identical_predictions']}; max |logit diff| "
                     f"{inf['max_abs_logit_diff']:.2e}; unique slices {inf['unique_slice_fraction']:.0%}")
    if wu := section.get("warmup"):
        a, f = wu["authors_bn"], wu["frozen_bn"]
        lines.append(f"    warm-up epoch s: authors {a['authors_epoch_s']:.0f}, lib25d (authors' BN) "
                     f"{a['lib25d_epoch_s']:.0f}, lib25d cached (frozen BN) {f['cached_epoch_s']:.2f} "
                     f"(first epoch {f['first_warmup_epoch_s']:.0f}, cache {f['cache_bytes'] / 2**20:.0f} MiB)")
    if mem := section.get("memory_large"):
        tf = mem.get("time_factor")
        lines.append(f"    {size_name(mem['shape'])}: checkpointing costs x{tf:.2f} time (measured at "
                     f"{mem.get('time_factor_setting')}); without it an estimated "
                     f"{mem['no_checkpointing_estimate_bytes'] / 2**30:.1f} GiB"
                     + (f", measured {mem['no_checkpointing']['peak_memory_gib']:.1f} GiB"
                        if "peak_memory_gib" in mem.get("no_checkpointing", {}) else ""))
    return "\n".join(lines)


# -- results file and the notebook's view --------------------------------------------------------
def default_json(device: str) -> Path:
    return Path("results") / "bench" / f"{resolve_device(device).type}.json"


def write_results(path: Path, sections: dict[str, Any], device: torch.device, argv: Sequence[str] | None) -> dict:
    """Merge ``sections`` into the JSON file at ``path`` (other sections are kept)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != SCHEMA:
            data = {}
    except (OSError, ValueError):
        data = {}
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    command = "lib25d bench " + " ".join(argv) if argv is not None else None
    for name, section in sections.items():
        section = {**section, "created": now, "command": command, "environment": environment(device)}
        if name == "compare":  # parts not measured now are kept from earlier runs, each with its command
            for part in COMPARE_PARTS.values():
                if part in section:
                    section[part] = {**section[part], "measured": now, "command": command}
                elif part in data.get("compare", {}):
                    section[part] = data["compare"][part]
            section["ratios"] = compare_ratios(section)
        if name == "table2":  # rows of (method, size) not measured now are kept from earlier runs
            for row in section["rows"]:
                row.setdefault("command", command)
                row.setdefault("measured", now)
            new = {(r["method"], r["size"]) for r in section["rows"]}
            kept = [r for r in data.get("table2", {}).get("rows", []) if (r.get("method"), r.get("size")) not in new]
            section["rows"] = kept + section["rows"]
        data[name] = section
    data["schema"] = SCHEMA
    write_json(path, data)
    return data


def table2_frame(source: str | Path | dict[str, Any]):
    """The Table 2 rows of a bench JSON file as a pandas DataFrame, the paper's numbers beside them.

    Columns: method, size, batch_size, params_m, peak_memory_gib, memory_kind, train_step_s,
    epoch_s, train_volumes_per_s, infer_volumes_per_s, achieved_gflops, fraction_of_peak,
    paper_params_m, paper_memory_gib, paper_epoch_s (paper values only on rows above 64^3),
    device, error.
    """
    import pandas as pd
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    section = data.get("table2", data)
    rows = []
    for r in section.get("rows", []):
        paper = PAPER_TABLE2.get(r["method"], {}) if max(r.get("shape", [0])) > 64 else {}
        rows.append({k: r.get(k) for k in ("method", "size", "batch_size", "params_m", "peak_memory_gib",
                                           "memory_kind", "train_step_s", "epoch_s", "train_volumes_per_s",
                                           "infer_volumes_per_s", "achieved_gflops", "fraction_of_peak",
                                           "device", "error")}
                    | {"paper_params_m": PAPER_TABLE2.get(r["method"], {}).get("params_m"),
                       "paper_memory_gib": paper["memory_mib"] / 1024 if paper else None,
                       "paper_epoch_s": paper.get("epoch_s")})
    return pd.DataFrame(rows)


COMPARE_FIGURES = (  # (ratio key, what the figure is, better, section part measuring it)
    ("full_epoch_speedup", "full-epoch training vs the authors' design, 28^3 (x)", "higher", "full_epoch"),
    ("full_epoch_bf16_speedup", "the same with bf16 autocast on CPU (x)", None, "full_epoch_bf16"),
    ("bf16_epoch_loss_max_abs_diff", "bf16 vs fp32 over one epoch: max |loss diff|", None, "bf16_epoch"),
    ("inference_speedup", "inference over the Adrenal test split vs the authors' (x)", "higher", "inference"),
    ("warmup_speedup_authors_bn", "warm-up epoch, authors' BatchNorm mode, vs the authors' (x)", None, "warmup"),
    ("warmup_speedup_frozen_bn", "warm-up epoch 2..N, frozen BatchNorm (cached), vs the authors' (x)", None,
     "warmup"),
    ("large_peak_gib", "128x224x224, batch 2, chunks + checkpointing: peak GiB", "lower", "memory_large"),
    ("checkpointing_time_factor", "time factor that checkpointing costs (x)", None, "memory_large"),
)


def compare_frame(source: str | Path | dict[str, Any]):
    """The ``--compare`` figures of a bench JSON file as a DataFrame (one row per figure).

    Columns: figure, value, target, met, device, measured (date), command. A part that was
    not measured has value None (the book shows it as missing, not as a number).
    """
    import pandas as pd
    data = source if isinstance(source, dict) else json.loads(Path(source).read_text())
    section = data.get("compare", {})
    ratios = compare_ratios(section)
    device = section.get("environment", {}).get("device")
    rows = []
    for key, name, better, part_name in COMPARE_FIGURES:
        value = ratios.get(key)
        if isinstance(value, float) and math.isnan(value):
            value = None
        target = TARGETS.get(key)
        met = None if value is None or better is None else (value >= target if better == "higher" else value <= target)
        part = section.get(part_name, {})
        rows.append({"figure": name, "value": value,
                     "target": None if target is None else f"{'>=' if better == 'higher' else '<'} {target}",
                     "met": met, "device": device, "measured": (part.get("measured") or "")[:10] or None,
                     "command": part.get("command")})
    return pd.DataFrame(rows)


# -- command line --------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to ``lib25d``'s parser."""
    p = subparsers.add_parser(
        "bench", help="Table 2 on this machine (--table2) and lib25d vs the authors' design (--compare)",
        description=__doc__.split("\n\n")[0] + " Measures Table 2 (--table2) and/or the optimisations' ratios "
                    "(--compare); prints tables and writes JSON.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table2", action="store_true",
                   help="params, peak memory, step/epoch time, volumes/s (train, inference) and GFLOP/s per "
                        "method and size")
    p.add_argument("--compare", action="store_true",
                   help="lib25d vs the authors' design (2.5D attention, real AdrenalMNIST3D): full-epoch, "
                        "inference and warm-up ratios, bf16, and large-volume memory with chunks + checkpointing")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--json", default=None,
                   help="JSON file to write, merged into an existing one (other sections, and Table 2 rows "
                        "of other method/size pairs, are kept; default results/bench/<cpu|cuda>.json)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: torch's choice, the number of cores); on a shared "
                        "machine 1 avoids most of the slow-down when another process takes a core")
    p.add_argument("--no-amp", action="store_true",
                   help="fp32 on CUDA instead of bf16 autocast (lib25d's side; the authors' design runs fp32)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the backbone of the optimised models (slow start; FLOPs are then not counted)")
    p.add_argument("--in-process", action="store_true",
                   help="measure in this process instead of a fresh subprocess per case (faster start; the CPU "
                        "peak memory then accumulates over the cases)")
    p.add_argument("--repeats", type=int, default=3,
                   help="timed repetitions, the median is reported: training steps and inference passes per "
                        "--table2 case, inference passes and cached warm-up epochs for --compare (default 3)")
    g = p.add_argument_group("--table2 options")
    g.add_argument("--sizes", nargs="+", default=list(DEFAULT_SIZES),
                   help="volume sizes, N (cube) or DxHxW (default 28 64 128x224x224)")
    g.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS),
                   help="methods: attention, 3d, acs, and the other reducers mean, max, lstm, transformer "
                        "(default attention 3d acs)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="volumes per step for every size (default per size: 16 up to 28^3, 4 up to 64^3, 2 above; "
                        "--compare: 64)")
    g.add_argument("--warmup-steps", type=int, default=1,
                   help="untimed training steps before timing, the first one FLOP-counted (default 1; 0 counts "
                        "FLOPs after the timed steps)")
    g.add_argument("--large-chunk-size", type=int, default=64,
                   help="2.5D slices per encoder call, with activation checkpointing, for slices above 64x64 "
                        "(default 64; 0 = all at once, no checkpointing)")
    g.add_argument("--no-inference", action="store_true", help="skip the inference throughput")
    c = p.add_argument_group("--compare options")
    c.add_argument("--data-root", default=None,
                   help="folder with adrenalmnist3d.npz (default $LIB25D_DATA_ROOT, else ~/.medmnist)")
    c.add_argument("--steps", type=int, default=3,
                   help="timed training steps per implementation, after one untimed step (default 3)")
    c.add_argument("--subset", type=int, default=None,
                   help="use a stratified subset of N volumes per split (quick checks; default: all)")
    c.add_argument("--weights", default=None,
                   help="backbone weights: 'imagenet', a state-dict file or none (default none: seeded random)")
    c.add_argument("--parts", nargs="+", default=["training", "inference", "warmup", "memory"],
                   choices=["training", "bf16", "inference", "warmup", "memory"],
                   help="which comparisons to run (default training inference warmup memory; bf16 = bf16 "
                        "autocast on CPU: steps against the authors' and one whole epoch against fp32)")
    c.add_argument("--large-shape", default="128x224x224", help="volume of the memory comparison (default 128x224x224)")
    c.add_argument("--large-batch-size", type=int, default=2, help="its batch size (default 2)")
    c.add_argument("--compare-chunk-size", type=int, default=64, help="its chunk size (default 64)")
    c.add_argument("--large-repeats", type=int, default=2,
                   help="rounds of the interleaved time-factor measurement (with / without checkpointing) "
                        "at the large volume (default 2: a CPU step takes minutes)")
    p.set_defaults(func=_bench)
    return p


def _bench(args: argparse.Namespace) -> int:
    if not (args.table2 or args.compare):
        raise ValueError("say what to measure: --table2, --compare, or both")
    dev = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    path = Path(args.json) if args.json else default_json(args.device)
    sections: dict[str, Any] = {}
    log = lambda s: print(s, flush=True)  # noqa: E731
    argv = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "bench" else None
    save = lambda name: lambda sec: write_results(path, {name: sec}, dev, argv)  # noqa: E731
    print(f"lib25d bench on {device_name(dev)}", flush=True)
    if args.table2:
        base = RunConfig(amp=not args.no_amp, compile=args.compile)
        print("Table 2:", flush=True)
        sections["table2"] = table2(args.sizes, args.methods, args.batch_size, args.device, args.repeats,
                                    args.warmup_steps, args.large_chunk_size or None, not args.in_process,
                                    not args.no_inference, base, log, on_progress=save("table2"))
        print(format_table2(sections["table2"]), flush=True)
    if args.compare:
        print("lib25d vs the authors' design (2.5D attention, AdrenalMNIST3D):", flush=True)
        sections["compare"] = compare(args.data_root, args.device, args.batch_size or 64, args.steps, args.repeats,
                                      True, parse_size(args.large_shape), args.large_batch_size,
                                      args.compare_chunk_size, args.large_repeats, None, args.weights,
                                      args.subset, args.parts, log, amp=not args.no_amp, compile=args.compile,
                                      on_progress=save("compare"), isolate=not args.in_process)
        print(format_compare(sections["compare"]), flush=True)
    write_results(path, sections, dev, argv)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":  # one isolated measurement: python -m lib25d.bench '<json spec>'
    print(json.dumps(_case_main(json.loads(sys.argv[1])), allow_nan=True))
