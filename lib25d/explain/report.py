"""The explanation tables of trained runs: what ``lib25d explain`` computes from run folders (several runs of one
kind are several seeds, pooled): attention sparsity, the pointing game (:mod:`.pointing`) on data with lesion
masks, deletion (:mod:`.deletion`), as tidy tables with structured columns.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data import VolumeDataset
from ..models import METHODS
from ..run import WHICH, Run, RunFolder, split_of
from ..settings import setting
from .attention import EMPTY_THRESHOLD, batches, labels_of, slice_attention, sparsity_table, volume_batch
from .deletion import DEFAULT_KS, deletion_test, pool_deletion
from .pointing import (
    DEFAULT_TOLERANCES,
    attention_pointing,
    cam_pointing,
    lesion_indices,
    random_pointing,
    summarize_pointing,
)
from .stats import N_BOOT, pool_seeds
from .voxels import FRACTIONS, summarize_alignment, summarize_voxel_deletion, voxel_measures

CAM_CLASSES = ("label", "predicted")


@dataclass
class Settings:
    """What :func:`run_benchmark` does, and the options of ``lib25d explain`` (generated from these fields)."""

    split: str = setting("test", "split to explain: train, val or test")
    which: str = setting("final", "final: the last epoch's model (as the paper); best: the best-validation one")
    tolerances: list[int] = setting(
        list(DEFAULT_TOLERANCES), "voxel pointing-game tolerances: Chebyshev distance to the lesion, in voxels"
    )
    ks: list[int] = setting(list(DEFAULT_KS), "numbers of slices the deletion test blanks")
    fractions: list[float] = setting(
        list(FRACTIONS), "shares of the voxels the voxel deletion test deletes by each voxel map (its top ones)"
    )
    repeats: int = setting(5, "random repeats per k (slice deletion) and per fraction (voxel deletion)")
    cam_class: str = setting("label", "class HiResCAM explains in the pointing game: label or predicted")
    n_boot: int = setting(N_BOOT, "bootstrap resamples of the 95 % intervals")
    seed: int = setting(0, "seed of the random slices, the random maps and the bootstrap")
    batch_size: int = setting(16, "volumes per forward pass")
    max_volumes: int | None = setting(None, "only the first N volumes (lesion volumes in the pointing game)")
    background: float = setting(0.0, "background voxel value: what deletion writes, what empty slices hold")
    threshold: float = setting(EMPTY_THRESHOLD, "a slice is empty when every voxel is within this of the background")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    data_root: str | None = setting(None, "folder of the MedMNIST files, if not where the runs were trained")

    def __post_init__(self) -> None:
        if self.which not in WHICH:
            raise ValueError(f"unknown model choice {self.which!r}; valid: {', '.join(WHICH)}")
        if self.cam_class not in CAM_CLASSES:
            raise ValueError(f"unknown cam_class {self.cam_class!r}; valid: {', '.join(CAM_CLASSES)}")


def explain_runs(
    attention_runs: Sequence[str | Path] = (),
    runs_3d: Sequence[str | Path] = (),
    runs_acs: Sequence[str | Path] = (),
    deletion_runs: Sequence[str | Path] = (),
    settings: Settings | None = None,
) -> dict[str, pd.DataFrame]:
    """The whole benchmark from run folders (several runs per kind = several seeds) as tidy tables:
    ``sparsity_per_volume`` / ``sparsity``, ``deletion_per_repeat`` / ``deletion`` (per run), ``deletion_pooled``;
    on data with lesion masks (else a warning) ``pointing_per_volume`` / ``pointing``, ``voxel_deletion_per_volume``
    / ``voxel_deletion`` (every run's voxel map) and, for spatial runs, ``alignment_per_volume`` / ``alignment``
    (their attention map against HiResCAM of their own encoder); a table is absent without its runs."""
    o = settings or Settings()
    splits: dict[str, VolumeDataset] = {}  # several runs usually share one dataset split

    @functools.cache
    def load(path: Path, method: str) -> tuple[Run, VolumeDataset]:
        run = RunFolder(path).load(o.which, o.device, o.data_root)
        c = run.config
        weighs = method == "attention" and c.method in METHODS and METHODS[c.method].weighs  # any slice weights
        if c.method != method and not weighs:
            expected = (
                f"a {method!r} run"
                if method != "attention"
                else f"a run with slice weights ({', '.join(m for m, d in METHODS.items() if d.weighs)})"
            )
            raise ValueError(
                f"{path} holds a {c.method!r} run where {expected} is expected; "
                "check which option the folder was passed to"
            )
        key = repr((c.dataset, c.size, c.data_root, sorted(c.dataset_options.items())))
        if key not in splits:
            splits[key] = split_of(c, o.split)
        return run, splits[key]

    out: dict[str, pd.DataFrame] = {}
    sparsity, pointing, deletion, random_seeds = [], [], [], set()
    voxels: dict[str, list[pd.DataFrame]] = {"pointing": pointing, "voxel_deletion": [], "alignment": []}

    def measure_voxels(run: Run, data: VolumeDataset, name: str) -> None:
        c = run.config
        args = (c.seed, o.tolerances, o.fractions, o.repeats, o.batch_size, o.background, o.max_volumes)
        for key, table in voxel_measures(run.model, data, name, *args).items():
            voxels[key].append(table)

    for path in map(Path, attention_runs):  # attention, gated: any reducer with slice weights
        run, data = load(path, "attention")
        frames = []
        for idx in batches(
            np.arange(len(data) if o.max_volumes is None else min(len(data), o.max_volumes)), o.batch_size
        ):
            x = volume_batch(data, idx)
            table = sparsity_table(slice_attention(run.model, x), x, o.background, o.threshold)
            frames.append(table.assign(volume=idx, label=labels_of(data, idx)))
        sparsity.append(
            pd.concat(frames, ignore_index=True).assign(
                run=str(run.path), method=run.config.method, seed=run.config.seed
            )
        )
        if _has_masks(path, data):
            s, name = run.config.seed, run.config.method
            pointing.append(attention_pointing(run.model, data, o.tolerances, s, o.batch_size, o.max_volumes, name))
            measure_voxels(run, data, name)
            if s not in random_seeds:  # the random map once per seed, however many methods
                random_seeds.add(s)
                pointing.append(random_pointing(data, o.tolerances, o.seed * 100_003 + s, o.max_volumes).assign(seed=s))
    for method, paths in (("3d", runs_3d), ("acs", runs_acs)):
        for path in map(Path, paths):
            run, data = load(path, method)
            if _has_masks(path, data):
                pointing.append(
                    cam_pointing(
                        run.model,
                        data,
                        method,
                        o.tolerances,
                        run.config.seed,
                        max(1, o.batch_size // 2),
                        o.max_volumes,
                        o.cam_class,
                    )
                )
                measure_voxels(run, data, method)
    if sparsity:
        out["sparsity_per_volume"] = pd.concat(sparsity, ignore_index=True)
        long = out["sparsity_per_volume"].melt(id_vars=["run", "method", "seed", "volume", "label"], var_name="measure")
        out["sparsity"] = pool_seeds(long, "value", ["method", "measure"], o.n_boot, seed=o.seed)
    if pointing:
        out["pointing_per_volume"] = pd.concat(pointing, ignore_index=True)
        out["pointing"] = summarize_pointing(out["pointing_per_volume"], o.n_boot, seed=o.seed)
    for key, summarize in (("voxel_deletion", summarize_voxel_deletion), ("alignment", summarize_alignment)):
        if voxels[key]:
            out[f"{key}_per_volume"] = pd.concat(voxels[key], ignore_index=True)
            out[key] = summarize(out[f"{key}_per_volume"], o.n_boot, seed=o.seed)
    for path in map(Path, deletion_runs):
        run, data = load(path, "attention")
        result = deletion_test(
            run.model, data, o.ks, o.repeats, o.seed, o.batch_size, o.background, o.max_volumes, o.n_boot
        )
        deletion.append([table.assign(run=str(path), seed=run.config.seed) for table in result])
    if deletion:
        per_repeat, summaries = (pd.concat(tables, ignore_index=True) for tables in zip(*deletion))
        out.update(deletion_per_repeat=per_repeat, deletion=summaries, deletion_pooled=pool_deletion(summaries))
    return out


def volumes_to_draw(data: VolumeDataset, requested: Sequence[int] | None = None) -> list[int]:
    """The volumes Figure 3 is drawn for (CLI and book alike): as requested, else the first with a lesion mask,
    else the first of a non-zero class."""
    if requested:
        bad = [i for i in requested if not 0 <= i < len(data)]
        if bad:
            raise ValueError(f"volume {bad[0]} is outside 0..{len(data) - 1} (the {data.split} split's size)")
        return list(requested)
    if data.masks is not None and np.asarray(data.masks).any():
        return [int(lesion_indices(data)[0])]
    nonzero = np.flatnonzero(np.asarray(data.labels).reshape(-1))
    return [int(nonzero[0]) if len(nonzero) else 0]


def _has_masks(path: Path, data: VolumeDataset) -> bool:
    if data.masks is None:
        warnings.warn(f"pointing game skipped for {path}: dataset {data.info.name!r} has no lesion masks", stacklevel=3)
    return data.masks is not None
