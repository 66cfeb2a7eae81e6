"""The interpretability page's voxel table (beyond the paper): every voxel-level explanation in one row, with the
pointing game at both tolerances, the attribution mass inside the lesion, the voxel deletion test and the test
AUROC of the runs it explains, so that an explanation is never read apart from how good its model is."""

from __future__ import annotations

import pandas as pd

from .tables import summarise

ORDER = ["spatial", "gated", "attention", "3d", "acs", "random"]  # spatial first: the page's question
MAPS = ["voxel map", "voxel sum", "voxel product", "hirescam"]  # a method's own map first
DELETION_FRACTION = 0.05


def _estimate(row: pd.Series, base: str) -> str:
    return f"{row[base]:.3f} [{row[f'{base}_ci_low']:.3f}, {row[f'{base}_ci_high']:.3f}]"


def _auroc(summary: pd.DataFrame, method: str) -> str:
    """A method's test AUROC from :func:`.tables.summarise`: mean ± sd over its finished seeds."""
    if method not in summary.index or not summary.n_ok[method]:
        return "—"
    row = summary.loc[method]
    return f"{row.auc_mean:.3f}" + (f" ± {row.auc_std:.3f} ({row.n_ok} seeds)" if row.n_ok > 1 else " (1 seed)")


def voxel_table(tables: dict[str, pd.DataFrame], frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, voxel explanation) of ``lib25d explain``'s tables: hit rate at tolerance 0 and 2, mass
    in the lesion, the excess logit drop when the map's top 5 % voxels are deleted rather than random ones, and the
    test AUROC (mean ± sd over seeds) of the explained runs (``frame``: results.collect of those runs)."""
    pointing = tables.get("pointing", pd.DataFrame())
    if not len(pointing):
        return pd.DataFrame()
    # every voxel map; of spatial its own and HiResCAM, not its summed slice profiles (attention's idea)
    spatial_profiles = (pointing.method == "spatial") & pointing.explanation.isin(["voxel sum", "voxel product"])
    voxel = pointing[(pointing.level == "voxel") & ~spatial_profiles]
    deletion = tables.get("voxel_deletion", pd.DataFrame())
    summary = summarise(frame).set_index("method") if len(frame) else pd.DataFrame(columns=["n_ok"])
    rows = []
    for (method, explanation), group in voxel.groupby(["method", "explanation"], sort=False):
        by_tolerance = group.set_index("tolerance")
        row = {"method": method, "explanation": explanation, "seeds × volumes": ""}
        for t in (0, 2):
            row[f"pointing, within {t} voxels"] = (
                _estimate(by_tolerance.loc[t], "hit_rate") if t in by_tolerance.index else "—"
            )
        first = by_tolerance.iloc[0]
        row["seeds × volumes"] = f"{first.n_seeds} × {first.n_volumes}"
        row["mass in the lesion"] = _estimate(first, "mass")
        cut = (
            deletion[
                (deletion.method == method)
                & (deletion.explanation == explanation)
                & (deletion.fraction == DELETION_FRACTION)
            ]
            if len(deletion)
            else deletion
        )
        row[f"deletion {DELETION_FRACTION:.0%}: drop beyond random"] = (
            _estimate(cut.iloc[0], "excess_drop") if len(cut) else "—"
        )
        row["test AUROC"] = _auroc(summary, method)
        rows.append(row)
    out = pd.DataFrame(rows)
    out["_order"] = out.method.map({m: i for i, m in enumerate(ORDER)}).fillna(len(ORDER))
    out["_map"] = out.explanation.map({e: i for i, e in enumerate(MAPS)}).fillna(len(MAPS))
    return out.sort_values(["_order", "_map"], kind="stable").drop(columns=["_order", "_map"]).reset_index(drop=True)
