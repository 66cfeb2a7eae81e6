"""``lib25d explain``: Figure 3, per-head attention, pointing game and deletion tables from run folders.
ValueError / FileNotFoundError reach ``lib25d.cli.main``, which prints them as one line.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pandas as pd

from ..run import RunFolder, split_of
from ..settings import add_options, settings_from_args
from .figures import figure3_for
from .report import Settings, explain_runs, volumes_to_draw

# printed; the per-volume tables are only saved
TABLES = ("sparsity", "pointing", "deletion", "deletion_pooled", "voxel_deletion", "alignment")


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``explain`` subcommand; its settings are :class:`~lib25d.explain.report.Settings`."""
    p = subparsers.add_parser(
        "explain",
        help="Figure 3, per-head attention, pointing game and deletion tables from trained runs",
        description="Explain trained runs: the paper's Figure 3 and per-head attention for chosen volumes, "
        "attention sparsity, the pointing game against lesion masks (attention, a spatial run's voxel map, "
        "HiResCAM of 3d/acs runs, random map), slice and voxel deletion faithfulness. Tables are written as CSV "
        "and JSON.",
    )
    p.add_argument(
        "--attention-run",
        action="append",
        required=True,
        metavar="DIR",
        help="run folder of a 2.5D model with slice weights ('attention', 'gated' or 'spatial'); repeat for "
        "several seeds or methods (figures use the first)",
    )
    p.add_argument(
        "--run-3d",
        action="append",
        default=[],
        metavar="DIR",
        help="run folder of a '3d' model for HiResCAM (Figure 3 panel 4, pointing game); repeatable",
    )
    p.add_argument(
        "--run-acs",
        action="append",
        default=[],
        metavar="DIR",
        help="run folder of an 'acs' model for HiResCAM in the pointing game; repeatable",
    )
    p.add_argument(
        "--deletion-run",
        action="append",
        default=[],
        metavar="DIR",
        help="run folder of an 'attention' model to test by deletion (e.g. on adrenal); repeatable",
    )
    p.add_argument("--out", required=True, help="output folder for PNG, CSV and JSON files (created if missing)")
    p.add_argument(
        "--volume",
        type=int,
        action="append",
        default=None,
        metavar="INDEX",
        help="volume index in the split to draw Figure 3 for; repeatable (default: the first "
        "volume with a lesion mask, else the first volume of a non-zero class)",
    )
    p.add_argument("--no-figures", action="store_true", help="skip Figure 3 and the per-head figure")
    add_options(p.add_argument_group("settings"), Settings)
    p.set_defaults(func=run_explain)
    return p


def run_explain(args: argparse.Namespace) -> int:
    o = settings_from_args(Settings, args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_figures:
        run = RunFolder(args.attention_run[0]).load(o.which, o.device, o.data_root)
        data = split_of(run.config, o.split)
        model_3d = RunFolder(args.run_3d[0]).load(o.which, o.device, o.data_root).model if args.run_3d else None
        for i in volumes_to_draw(data, args.volume):
            volume, label = data[i]
            title = f"{data.info.name} {o.split} volume {i} (class {data.info.class_names[label]})"
            figure3_for(
                run.model,
                volume,
                model_3d,
                title=title,
                save=out / f"figure3_volume{i}.png",
                heads_save=out / f"heads_volume{i}.png",
            )
            print(f"figures: {out / f'figure3_volume{i}.png'}, {out / f'heads_volume{i}.png'}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        tables = explain_runs(args.attention_run, args.run_3d, args.run_acs, args.deletion_run, o)
    for w in caught:
        print(f"note: {w.message}")
    for name, table in tables.items():  # CSV, and JSON as a list of records (NaN as null)
        table.to_csv(out / f"{name}.csv", index=False)
        (out / f"{name}.json").write_text(table.to_json(orient="records", indent=1) + "\n")
    for name in TABLES:
        if name in tables:
            print(f"\n{name} ({out / name}.csv)")
            print(compact(tables[name]).to_string(index=False))
    (out / "explain_args.json").write_text(
        json.dumps({k: v for k, v in vars(args).items() if k != "func"}, indent=1, default=str) + "\n"
    )
    return 0


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """A summary table for the terminal: 'mean [CI low, CI high] sd <over seeds>' in one column per measure."""
    out = table.drop(columns=[c for c in ("run", "level", "n_seeds") if c in table.columns])
    estimates = ("hit_rate", "mass", "prob_drop", "map_drop", "random_drop", "excess_drop")
    for mean, prefix in [*((m, f"{m}_") for m in estimates), ("mean", "")]:
        if {mean, f"{prefix}ci_low", f"{prefix}ci_high"} <= set(out.columns):
            std = out.pop(f"{prefix}std") if f"{prefix}std" in out.columns else [float("nan")] * len(out)
            estimates = zip(out[mean], out.pop(f"{prefix}ci_low"), out.pop(f"{prefix}ci_high"), std)
            out[mean] = [
                f"{m:.4g} [{lo:.4g}, {hi:.4g}]" + ("" if pd.isna(sd) else f" sd {sd:.3g}")
                for m, lo, hi, sd in estimates
            ]
    return out.map(lambda v: f"{v:.4g}" if isinstance(v, float) else v)
