"""``lib25d explain``: Figure 3, per-head attention, pointing game and deletion tables from run folders.

Wire it into the main parser with ``register(subparsers)``; the handler returns 0 and lets
ValueError / FileNotFoundError reach ``lib25d.cli.main``, which prints them as one line.
"""
from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .attention import EMPTY_THRESHOLD
from .benchmark import CAM_CLASSES, DEFAULT_KS, DEFAULT_TOLERANCES
from .stats import N_BOOT

TABLES = ("sparsity", "pointing", "deletion", "deletion_pooled")  # printed; per-volume tables are only saved


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``explain`` subcommand to ``subparsers`` (from ``parser.add_subparsers()``)."""
    p = subparsers.add_parser(
        "explain", help="Figure 3, per-head attention, pointing game and deletion tables from trained runs",
        description="Explain trained runs: the paper's Figure 3 and per-head attention for chosen volumes, "
                    "attention sparsity, the pointing game against lesion masks (attention, HiResCAM of "
                    "3d/acs runs, random map) and deletion faithfulness. Tables are written as CSV and JSON.")
    p.add_argument("--attention-run", action="append", required=True, metavar="DIR",
                   help="run folder of a 2.5D 'attention' model; repeat for several seeds (figures use the first)")
    p.add_argument("--run-3d", action="append", default=[], metavar="DIR",
                   help="run folder of a '3d' model for HiResCAM (Figure 3 panel 4, pointing game); repeatable")
    p.add_argument("--run-acs", action="append", default=[], metavar="DIR",
                   help="run folder of an 'acs' model for HiResCAM in the pointing game; repeatable")
    p.add_argument("--deletion-run", action="append", default=[], metavar="DIR",
                   help="run folder of an 'attention' model to test by deletion (e.g. on adrenal); repeatable")
    p.add_argument("--out", required=True, help="output folder for PNG, CSV and JSON files (created if missing)")
    p.add_argument("--split", default="test", choices=["train", "val", "test"], help="split to explain (default test)")
    p.add_argument("--which", default="final", choices=["final", "best"],
                   help="final-epoch checkpoint or best-validation model (default final)")
    p.add_argument("--volume", type=int, action="append", default=None, metavar="INDEX",
                   help="volume index in the split to draw Figure 3 for; repeatable (default: the first "
                        "volume with a lesion mask, else the first volume of a non-zero class)")
    p.add_argument("--no-figures", action="store_true", help="skip Figure 3 and the per-head figure")
    p.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS),
                   help=f"numbers of slices to blank in the deletion test (default {' '.join(map(str, DEFAULT_KS))})")
    p.add_argument("--repeats", type=int, default=5, help="random-slice repeats per k in the deletion test (default 5)")
    p.add_argument("--tolerance", type=int, nargs="+", default=list(DEFAULT_TOLERANCES),
                   help="voxel pointing-game tolerances in voxels, Chebyshev distance to the lesion "
                        f"(default {' '.join(map(str, DEFAULT_TOLERANCES))})")
    p.add_argument("--cam-class", default="label", choices=list(CAM_CLASSES),
                   help="class HiResCAM explains in the pointing game: true label or prediction (default label)")
    p.add_argument("--bootstrap", type=int, default=N_BOOT, help=f"bootstrap resamples for CIs (default {N_BOOT})")
    p.add_argument("--seed", type=int, default=0, help="seed of random slices, random maps and bootstrap (default 0)")
    p.add_argument("--batch-size", type=int, default=16, help="volumes per forward pass (default 16)")
    p.add_argument("--max-volumes", type=int, default=None,
                   help="use only the first N volumes (lesion volumes for the pointing game) for a quick look")
    p.add_argument("--background", type=float, default=0.0,
                   help="background voxel value: what deletion writes and what empty slices hold (default 0)")
    p.add_argument("--empty-threshold", type=float, default=EMPTY_THRESHOLD,
                   help="a slice is empty when every voxel is within this of the background "
                        f"(default {EMPTY_THRESHOLD})")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--data-root", default=None,
                   help="folder with the MedMNIST .npz files, if not where the runs were trained")
    p.set_defaults(func=run_explain)
    return p


def run_explain(args: argparse.Namespace) -> int:
    from .benchmark import run_benchmark  # heavy imports only when the command runs
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_figures:
        _figures(args, out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        tables = run_benchmark(
            args.attention_run, args.run_3d, args.run_acs, args.deletion_run, split=args.split, which=args.which,
            tolerances=args.tolerance, ks=args.ks, repeats=args.repeats, n_boot=args.bootstrap, seed=args.seed,
            batch_size=args.batch_size, max_volumes=args.max_volumes, cam_class=args.cam_class,
            background=args.background, threshold=args.empty_threshold, device=args.device, data_root=args.data_root)
    for w in caught:
        print(f"note: {w.message}")
    for name, table in tables.items():
        write_table(table, out / name)
    for name in TABLES:
        if name in tables:
            print(f"\n{name} ({out / name}.csv)")
            print(compact(tables[name]).to_string(index=False))
    (out / "explain_args.json").write_text(json.dumps({k: v for k, v in vars(args).items() if k != "func"},
                                                      indent=1, default=str) + "\n")
    return 0


def _estimate(mean: float, lo: float, hi: float, std: float) -> str:
    text = f"{mean:.4g} [{lo:.4g}, {hi:.4g}]"
    return text if pd.isna(std) else f"{text} sd {std:.3g}"


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """A summary table for the terminal: 'mean [CI low, CI high] sd <over seeds>' in one column per measure."""
    out = table.drop(columns=[c for c in ("run", "level", "n_seeds") if c in table.columns]).copy()
    for m in ("hit_rate", "mass", "prob_drop", ""):
        prefix = f"{m}_" if m else ""
        cols = [m or "mean", f"{prefix}ci_low", f"{prefix}ci_high", f"{prefix}std"]
        if all(c in out.columns for c in cols[:3]):
            std = out[cols[3]] if cols[3] in out.columns else pd.Series(float("nan"), index=out.index)
            out[cols[0]] = [_estimate(*v) for v in zip(out[cols[0]], out[cols[1]], out[cols[2]], std)]
            out = out.drop(columns=[c for c in cols[1:] if c in out.columns])
    return out.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)


def write_table(table: pd.DataFrame, stem: Path) -> None:
    """``stem.csv`` and ``stem.json`` (a list of records; NaN as null)."""
    table.to_csv(stem.with_suffix(".csv"), index=False)
    stem.with_suffix(".json").write_text(table.to_json(orient="records", indent=1) + "\n")


def _figure_volumes(args: argparse.Namespace, data) -> list[int]:
    if args.volume:
        bad = [i for i in args.volume if not 0 <= i < len(data)]
        if bad:
            raise ValueError(f"--volume {bad[0]} is outside 0..{len(data) - 1} (the {args.split} split's size)")
        return list(args.volume)
    if data.masks is not None and np.asarray(data.masks).any():
        return [int(np.flatnonzero(np.asarray(data.masks).reshape(len(data), -1).any(1))[0])]
    nonzero = np.flatnonzero(np.asarray(data.labels).reshape(-1))
    return [int(nonzero[0]) if len(nonzero) else 0]


def _figures(args: argparse.Namespace, out: Path) -> None:
    from .figures import figure3_for
    from .runs import load_run, run_data
    run = load_run(args.attention_run[0], args.which, args.device, args.data_root)
    data = run_data(run.config, args.split)
    model_3d = load_run(args.run_3d[0], args.which, args.device, args.data_root).model if args.run_3d else None
    for i in _figure_volumes(args, data):
        volume, label = data[i]
        title = f"{data.info.name} {args.split} volume {i} (class {data.info.class_names[label]})"
        figure3_for(run.model, volume, model_3d, title=title, save=out / f"figure3_volume{i}.png",
                    heads_save=out / f"heads_volume{i}.png")
        print(f"figures: {out / f'figure3_volume{i}.png'}, {out / f'heads_volume{i}.png'}")
