"""Where the model looks — what the paper shows on one scan and does not measure.

**Pointing game** (Zhang et al., 2016) on the volumes with a lesion mask: per volume ``hit`` (0/1), ``mass``
(share of the attribution inside the lesion) and the chance of both. Slices (the weights of a reducer that has
them, over all axes or renormalised within one): a hit when the top slice cuts the lesion; chance = the share of
slices that do. Voxels (attention voxel sum/product, HiResCAM of the 3d and acs runs, a random map): a hit when
the peak voxel lies within ``tolerance`` voxels (Chebyshev) of the lesion, 2 because a 28^3 HiResCAM comes from a
2x2x2 map; chance = the (dilated) lesion's share of the volume. Deletion: :mod:`.deletion`.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import maximum_filter
from torch import nn

from ..config import setting
from ..data import VolumeDataset
from ..models import AXIS_NAMES, METHODS, SliceLayout
from ..train import WHICH, Run, load_run, split_of
from .attention import (EMPTY_THRESHOLD, MODES, batches, labels_of, peak_voxels, slice_any, slice_attention,
                        sparsity_table, split_tokens, volume_batch, voxel_map)
from .cam import hirescam
from .deletion import DEFAULT_KS, deletion_test, pool_deletion
from .stats import LEVEL, N_BOOT, pool_seeds

DEFAULT_TOLERANCES = (0, 2)
CAM_CLASSES = ("label", "predicted")
POINTING_COLUMNS = ["explanation", "level", "tolerance", "seed", "volume", "label",
                    "hit", "mass", "hit_chance", "mass_chance"]


# ----------------------------------------------------------------------------- pointing game

def lesion_indices(data: VolumeDataset) -> np.ndarray:
    """Indices of the volumes with a non-empty lesion mask: the only ones the pointing game scores."""
    if data.masks is None:
        raise ValueError(f"dataset {data.info.name!r} has no lesion masks, so the pointing game cannot be scored; "
                         "use the synthetic dataset or NIfTI scans with masks")
    return np.flatnonzero(np.asarray(data.masks).reshape(len(data), -1).any(axis=1))


def _check_masks(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks, dtype=bool)
    if not masks.reshape(len(masks), -1).any(axis=1).all():
        raise ValueError("some masks are empty: score only volumes with a lesion (lesion_indices)")
    return masks


def slice_pointing(weights: np.ndarray, layout: SliceLayout, masks: np.ndarray,
                   axis: str | None = None) -> dict[str, np.ndarray]:
    """Slice-level ``hit``, ``mass``, ``hit_chance``, ``mass_chance`` ``(B,)``; ``axis`` ranks only its slices."""
    lesion = slice_any(_check_masks(masks), layout)
    w = np.asarray(weights, dtype=np.float64)
    if axis is not None:
        if axis not in AXIS_NAMES:
            raise ValueError(f"unknown axis {axis!r}; valid: {', '.join(AXIS_NAMES)}")
        w, lesion = split_tokens(w, layout)[axis], split_tokens(lesion, layout)[axis]
    hit = lesion[np.arange(len(w)), w.argmax(axis=-1)].astype(float)
    chance = lesion.mean(-1)
    return {"hit": hit, "mass": (w * lesion).sum(-1) / w.sum(-1), "hit_chance": chance, "mass_chance": chance}


def voxel_pointing(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> dict[str, np.ndarray]:
    """Voxel-level pointing game for non-negative maps ``(B, D, H, W)``; see module docstring."""
    masks = _check_masks(masks)
    maps = np.asarray(maps, dtype=np.float64)
    if maps.shape != masks.shape:
        raise ValueError(f"maps {maps.shape} and masks {masks.shape} differ in shape; upsample the map to the volume")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0 voxels, got {tolerance}")
    near = maximum_filter(masks, size=(1,) + (2 * tolerance + 1,) * 3, mode="constant") if tolerance else masks
    peak = peak_voxels(maps)
    pointed = peak[:, 0] >= 0  # a constant map points nowhere: a miss
    hit = np.zeros(len(maps))
    hit[pointed] = near[np.flatnonzero(pointed), peak[pointed, 0], peak[pointed, 1], peak[pointed, 2]]
    flat, lesion = maps.reshape(len(maps), -1), masks.reshape(len(maps), -1)
    total, inside = flat.sum(axis=1), (flat * lesion).sum(axis=1)
    mass = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return {"hit": hit, "mass": mass, "hit_chance": near.reshape(len(maps), -1).mean(1), "mass_chance": lesion.mean(1)}


def _pointing(data: VolumeDataset, seed: int, batch_size: int, max_volumes: int | None, explain) -> pd.DataFrame:
    """Per-volume rows; ``explain(idx, labels, masks)`` yields (explanation, level, tolerance, scores) per batch."""
    frames = []
    for idx in batches(lesion_indices(data)[:max_volumes], batch_size):
        labels, masks = labels_of(data, idx), np.asarray(data.masks[idx])
        for explanation, level, tolerance, scores in explain(idx, labels, masks):
            frames.append(pd.DataFrame({"explanation": explanation, "level": level, "tolerance": tolerance,
                                        "seed": seed, "volume": idx, "label": labels, **scores}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=POINTING_COLUMNS)


def attention_pointing(model: nn.Module, data: VolumeDataset, tolerances: Sequence[int] = DEFAULT_TOLERANCES,
                       seed: int = 0, batch_size: int = 16, max_volumes: int | None = None,
                       name: str = "attention") -> pd.DataFrame:
    """Pointing rows of a 2.5D model with slice weights (explanations ``<name> slice``, ``<name> slice (axis)``,
    ``<name> voxel sum/product``; ``name`` its method, e.g. gated)."""
    def explain(idx, labels, masks):
        att = slice_attention(model, volume_batch(data, idx))
        yield f"{name} slice", "slice", 0, slice_pointing(att.weights, att.layout, masks)
        for axis in (AXIS_NAMES[a] for a in att.layout.axes):
            yield f"{name} slice ({axis})", "slice", 0, slice_pointing(att.weights, att.layout, masks, axis)
        for mode in MODES if len(att.layout.axes) == 3 else ():  # voxel maps need all three axes
            maps = voxel_map(att.by_axis(), mode)
            for t in tolerances:
                yield f"{name} voxel {mode}", "voxel", t, voxel_pointing(maps, masks, t)
    return _pointing(data, seed, batch_size, max_volumes, explain)


def cam_pointing(model: nn.Module, data: VolumeDataset, name: str, tolerances: Sequence[int] = DEFAULT_TOLERANCES,
                 seed: int = 0, batch_size: int = 8, max_volumes: int | None = None,
                 cam_class: str = "label") -> pd.DataFrame:
    """Pointing rows of HiResCAM on a 3d/acs model (explanation ``hirescam <name>``), see :class:`Settings`."""
    def explain(idx, labels, masks):
        maps = hirescam(model, volume_batch(data, idx), category=list(labels) if cam_class == "label" else None)
        for t in tolerances:
            yield f"hirescam {name}", "voxel", t, voxel_pointing(maps, masks, t)
    return _pointing(data, seed, batch_size, max_volumes, explain)


def random_pointing(data: VolumeDataset, tolerances: Sequence[int] = DEFAULT_TOLERANCES, seed: int = 0,
                    max_volumes: int | None = None) -> pd.DataFrame:
    """Pointing rows of uniform random maps, reproducible per (seed, volume): the empirical chance level."""
    def explain(idx, labels, masks):
        maps = np.stack([np.random.default_rng([seed, int(v)]).random(data.info.shape) for v in idx])
        for t in tolerances:
            yield "random map", "voxel", t, voxel_pointing(maps, masks, t)
    return _pointing(data, seed, max(1, len(data)), max_volumes, explain)  # one batch: rows by tolerance


def summarize_pointing(per_volume: pd.DataFrame, n_boot: int = N_BOOT, level: float = LEVEL,
                       seed: int = 0) -> pd.DataFrame:
    """One row per (explanation, level, tolerance): hit rate and lesion mass with std over seeds and bootstrap CIs."""
    by = ["explanation", "level", "tolerance"]
    tables = []
    for value, name in (("hit", "hit_rate"), ("mass", "mass")):
        table = pool_seeds(per_volume, value, by, n_boot, level, seed).rename(columns={
            "mean": name, "std": f"{name}_std", "ci_low": f"{name}_ci_low", "ci_high": f"{name}_ci_high"})
        tables.append(table.merge(per_volume.groupby(by, sort=False)[f"{value}_chance"].mean().reset_index(), on=by))
    return tables[0].merge(tables[1].drop(columns=["n_seeds", "n_volumes"]), on=by)


# ----------------------------------------------------------------------------- from run folders

@dataclass
class Settings:
    """What :func:`run_benchmark` does, and the options of ``lib25d explain`` (generated from these fields)."""

    split: str = setting("test", "split to explain: train, val or test")
    which: str = setting("final", "final: the last epoch's model (as the paper); best: the best-validation one")
    tolerances: list[int] = setting(list(DEFAULT_TOLERANCES), "voxel pointing-game tolerances: Chebyshev distance "
                                                              "to the lesion, in voxels")
    ks: list[int] = setting(list(DEFAULT_KS), "numbers of slices the deletion test blanks")
    repeats: int = setting(5, "random-slice repeats per k in the deletion test")
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


def run_benchmark(attention_runs: Sequence[str | Path] = (), runs_3d: Sequence[str | Path] = (),
                  runs_acs: Sequence[str | Path] = (), deletion_runs: Sequence[str | Path] = (),
                  settings: Settings | None = None) -> dict[str, pd.DataFrame]:
    """The whole benchmark from run folders (several runs per kind = several seeds) as tidy tables:
    ``sparsity_per_volume`` / ``sparsity``, ``pointing_per_volume`` / ``pointing`` (on data with lesion masks,
    else a warning), ``deletion_per_repeat`` / ``deletion`` (per run), ``deletion_pooled``; absent without runs."""
    o = settings or Settings()
    splits: dict[str, VolumeDataset] = {}  # several runs usually share one dataset split

    @functools.cache
    def load(path: Path, method: str) -> tuple[Run, VolumeDataset]:
        run = load_run(path, o.which, o.device, o.data_root)
        c = run.config
        weighs = method == "attention" and c.method in METHODS and METHODS[c.method].weighs  # any slice weights
        if c.method != method and not weighs:
            expected = f"a {method!r} run" if method != "attention" else \
                f"a run with slice weights ({', '.join(m for m, d in METHODS.items() if d.weighs)})"
            raise ValueError(f"{path} holds a {c.method!r} run where {expected} is expected; "
                             "check which option the folder was passed to")
        key = repr((c.dataset, c.size, c.data_root, sorted(c.dataset_options.items())))
        if key not in splits:
            splits[key] = split_of(c, o.split)
        return run, splits[key]

    out: dict[str, pd.DataFrame] = {}
    sparsity, pointing, deletion, random_seeds = [], [], [], set()
    for path in map(Path, attention_runs):  # attention, gated: any reducer with slice weights
        run, data = load(path, "attention")
        frames = []
        for idx in batches(np.arange(len(data) if o.max_volumes is None else min(len(data), o.max_volumes)),
                           o.batch_size):
            x = volume_batch(data, idx)
            table = sparsity_table(slice_attention(run.model, x), x, o.background, o.threshold)
            frames.append(table.assign(volume=idx, label=labels_of(data, idx)))
        sparsity.append(pd.concat(frames, ignore_index=True).assign(run=str(run.path), method=run.config.method,
                                                                    seed=run.config.seed))
        if _has_masks(path, data):
            s, name = run.config.seed, run.config.method
            pointing.append(attention_pointing(run.model, data, o.tolerances, s, o.batch_size, o.max_volumes, name))
            if s not in random_seeds:  # the random map once per seed, however many methods
                random_seeds.add(s)
                pointing.append(random_pointing(data, o.tolerances, o.seed * 100_003 + s, o.max_volumes).assign(seed=s))
    for method, paths in (("3d", runs_3d), ("acs", runs_acs)):
        for path in map(Path, paths):
            run, data = load(path, method)
            if _has_masks(path, data):
                pointing.append(cam_pointing(run.model, data, method, o.tolerances, run.config.seed,
                                             max(1, o.batch_size // 2), o.max_volumes, o.cam_class))
    if sparsity:
        out["sparsity_per_volume"] = pd.concat(sparsity, ignore_index=True)
        long = out["sparsity_per_volume"].melt(id_vars=["run", "method", "seed", "volume", "label"],
                                               var_name="measure")
        out["sparsity"] = pool_seeds(long, "value", ["method", "measure"], o.n_boot, seed=o.seed)
    if pointing:
        out["pointing_per_volume"] = pd.concat(pointing, ignore_index=True)
        out["pointing"] = summarize_pointing(out["pointing_per_volume"], o.n_boot, seed=o.seed)
    for path in map(Path, deletion_runs):
        run, data = load(path, "attention")
        result = deletion_test(run.model, data, o.ks, o.repeats, o.seed, o.batch_size, o.background, o.max_volumes,
                               o.n_boot)
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
        warnings.warn(f"pointing game skipped for {path}: dataset {data.info.name!r} has no lesion masks")
    return data.masks is not None

