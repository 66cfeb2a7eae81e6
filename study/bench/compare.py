"""``--compare``: lib25d against the authors' design (:mod:`study.reference`) on
AdrenalMNIST3D from the same weights and batches, interleaved in one process (alternating which
goes first, so order effects cancel), medians reported; the parts: :mod:`study.bench`."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lib25d.data import load_dataset
from lib25d.models import set_encoder_trainable
from lib25d.run import RunConfig, loss_function, resolve_device
from lib25d.run.loop import train_epoch
from lib25d.run.protocol import autocast_for, feature_cache, index_loader

from .. import reference
from .table2 import isolated
from .timing import median, model_of, parse_size, ratio, size_name, step_fn, timed


def interleaved(fns: dict[str, Callable], inputs: Sequence[tuple], device: torch.device) -> dict[str, list]:
    """Each fn once per input, alternating which goes first: {name: [(seconds, result), ...]}."""
    out: dict[str, list] = {n: [] for n in fns}
    for i, args in enumerate(inputs):
        for n in list(fns) if i % 2 == 0 else list(fns)[::-1]:
            out[n].append(timed(partial(fns[n], *args), device))
    return out


def race(steps: dict[str, Callable], batches: list, device: torch.device, epoch_volumes: int) -> dict[str, Any]:
    """Training steps of two contestants on the same batches, interleaved; the first batch's time is
    dropped (allocator, kernel caches). Epoch = median step x volumes / batch."""
    res = interleaved(steps, batches, device)
    step_s = {n: median([t for t, _ in v[1:]]) for n, v in res.items()}
    losses = {n: [loss for _, loss in v] for n, v in res.items()}
    return {
        "step_s": step_s,
        "epoch_s": {n: s * epoch_volumes / len(batches[0][1]) for n, s in step_s.items()},
        "losses": losses,
        "loss_max_abs_diff": float(np.max(np.abs(np.subtract(*losses.values())))),
        "speedup": ratio(*step_s.values()),
    }


def against_authors(
    config: RunConfig, batches: list, device: torch.device, epoch_volumes: int, head_only: bool = False
) -> dict[str, Any]:
    """lib25d's training steps raced against the authors' from the same weights; ``head_only``: the
    warm-up in the authors' BatchNorm mode (their starting point, the encoders frozen)."""
    model = model_of("attention", config)
    ref = reference.from_lib25d(model).to(device)
    if head_only:
        reference.prepare(ref, 3)
        set_encoder_trainable(model, False)
    theirs = partial(reference.train_step, ref.train(), opt=torch.optim.NAdam(ref.parameters(), lr=config.lr))
    return race({"authors": theirs, "lib25d": step_fn(model.train(), config, device)}, batches, device, epoch_volumes)


def _batches(data, batch_size: int, count: int, device: torch.device, seed: int = 0) -> list:
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed)).tolist()
    idx = [order[(b * batch_size) % len(order) :][:batch_size] for b in range(count)]
    return [
        (torch.stack([data[i][0] for i in ix]).to(device), torch.as_tensor(data.labels[ix]).to(device)) for ix in idx
    ]


def compare(args: argparse.Namespace, save: Callable[[dict], None]) -> dict[str, Any]:
    """lib25d against the authors' design, part by part (listed in :mod:`lib25d.bench`); saved after each."""
    device, parts, bs = resolve_device(args.device), set(args.parts), args.batch_size or 64
    ours = RunConfig(device=str(device), weights=args.weights, batch_size=bs, amp=not args.no_amp, compile=args.compile)
    subset = {"subset": args.subset} if args.subset else {}
    out: dict[str, Any] = {
        "settings": {
            "lib25d": ours.speed(),
            "before": "the authors' design (lib25d.authors): plain torchvision ResNet-18 per axis, fp32",
            "batch_size": bs,
            "steps": args.steps,
            "repeats": args.repeats,
            "method": "attention",
            "weights": args.weights or "random (seeded)",
            "data": "AdrenalMNIST3D 28^3" + (f" (subset {args.subset})" if args.subset else ""),
        }
    }
    if parts & {"training", "bf16", "warmup"}:
        train = load_dataset("adrenal", "train", root=args.data_root, **subset)
        batches = _batches(train, bs, args.steps + 1, device)
    for part, config in (("training", ours), ("bf16", ours.replace(bf16_cpu=True))):
        if part in parts and (part == "training" or device.type == "cpu"):
            print(f"  {part}: {args.steps} timed steps of batch {bs} ...", flush=True)
            out[part] = against_authors(config, batches, device, len(train))
            save(out)
    if "bf16" in parts and device.type == "cpu":
        print("  bf16: one whole epoch against fp32 ...", flush=True)
        steps = {
            name: step_fn(model_of("attention", c), c, device)
            for name, c in (("fp32", ours), ("bf16", ours.replace(bf16_cpu=True)))
        }
        out["bf16_epoch"] = race(steps, _batches(train, bs, -(-len(train) // bs), device), device, len(train))
        save(out)
    if "inference" in parts:
        print(f"  inference over the test split, {args.repeats} passes each ...", flush=True)
        test = load_dataset("adrenal", "test", root=args.data_root, **subset)
        test = torch.as_tensor(np.asarray(test.volumes, dtype=np.float32)).split(bs)
        model = model_of("attention", ours)
        ref = reference.from_lib25d(model).to(device).eval()
        model.eval()
        bf16 = ours.amp if device.type == "cuda" else ours.bf16_cpu

        def authors_pass():
            return torch.cat([ref(x.to(device))[0].float() for x in test]).cpu()

        def lib25d_pass():
            with autocast_for(device, bf16, bf16):
                return torch.cat([model(x.to(device)).float() for x in test]).cpu()

        with torch.no_grad():
            fns = {"authors": authors_pass, "lib25d": lib25d_pass}
            [f() for f in fns.values()]  # untimed: allocator, kernel caches
            res = interleaved(fns, [()] * args.repeats, device)
        la, lb = res["authors"][-1][1], res["lib25d"][-1][1]
        secs = {n: median([t for t, _ in v]) for n, v in res.items()}
        out["inference"] = {
            "volumes": sum(len(x) for x in test),
            "seconds": secs,
            "speedup": ratio(secs["authors"], secs["lib25d"]),
            "identical_predictions": bool(torch.equal(la > 0, lb > 0)),
            "max_abs_logit_diff": float((la - lb).abs().max()),
        }
        save(out)
    if "warmup" in parts:
        print("  warm-up epochs, both BatchNorm modes ...", flush=True)
        authors_bn = against_authors(ours, batches, device, len(train), head_only=True)
        frozen = ours.replace(warmup_bn="frozen")
        model = model_of("attention", frozen)
        set_encoder_trainable(model, False)
        model.encoder.eval()
        build_s, cache = timed(lambda: feature_cache(model, train, frozen, device), device)
        opt = torch.optim.NAdam(model.parameters(), lr=ours.lr)

        def cached_epoch(e: int):
            return train_epoch(
                model,
                index_loader(train, frozen, e),
                loss_function(2),
                opt,
                device,
                frozen,
                "warm-up",
                True,
                lambda i: model.classify(cache[i.to(cache.device)]),
            )

        cached = median([timed(partial(cached_epoch, e), device)[0] for e in range(1, args.repeats + 1)])
        out["warmup"] = {
            "authors_bn": authors_bn,
            "frozen_bn": {
                "cache_build_s": build_s,
                "cache_bytes": cache.numel() * cache.element_size(),
                "cached_epoch_s": cached,
                "first_warmup_epoch_s": build_s + cached,
                "speedup": ratio(authors_bn["epoch_s"]["authors"], cached),
            },
        }
        save(out)
    if "memory" in parts:
        shape = parse_size(args.large_shape)
        print(
            f"  memory: {size_name(shape)} at batch {args.large_batch_size}, chunks of {args.compare_chunk_size} ...",
            flush=True,
        )
        config = ours.replace(chunk_size=args.compare_chunk_size, checkpointing=True)
        case = isolated(
            {
                "method": "attention",
                "shape": list(shape),
                "batch_size": args.large_batch_size,
                "config": config.to_dict(),
                "repeats": 1,
                "warmup_steps": 0,
                "inference": False,
            },
            args.in_process,
        )
        model = model_of("attention", config, axes=(0,))
        gen = torch.Generator().manual_seed(0)
        x, y = torch.rand(1, 1, *shape, generator=gen).to(device), torch.zeros(1, device=device)
        step = step_fn(model, config, device)

        def with_checkpointing(on: bool):
            model.encoder.checkpointing = on
            return step(x, y)

        res = interleaved(
            {"on": partial(with_checkpointing, True), "off": partial(with_checkpointing, False)},
            [()] * args.repeats,
            device,
        )
        out["memory"] = {
            "shape": list(shape),
            "batch_size": args.large_batch_size,
            "case": case,
            "peak_gib": case.get("peak_memory_gib", math.nan),
            "time_factor": ratio(*(median([t for t, _ in res[k]]) for k in ("on", "off"))),
            "time_factor_setting": "batch 1, axial slices only",
        }
        save(out)
    return out


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
        rows.append(
            {
                "figure": name,
                "value": value,
                "target": f"{op} {target}" if op else None,
                "met": None if value is None or not op else (value >= target if op == ">=" else value < target),
                "device": section.get("environment", {}).get("device"),
                "measured": (section.get(part, {}).get("measured") or "")[:10] or None,
                "command": section.get(part, {}).get("command"),
            }
        )
    return pd.DataFrame(rows)
