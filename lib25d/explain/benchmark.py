"""Where the model looks — what the paper shows on one scan and does not measure.

**Pointing game** (Zhang et al., 2016, on volumes with ground-truth lesion masks). Only volumes
whose mask is non-empty count. Each explanation gets per volume a ``hit`` (0/1), a ``mass``
(share of its attribution inside the lesion) and the chance levels of both:

- slice level (attention weights): a hit when the highest-weighted slice — over all axes
  (``attention slice``) or within one axis (``attention slice (axial)``, ...) — contains a lesion
  voxel; ``mass`` is the attention on lesion slices (renormalised within the axis for one
  axis); chance for both is the share of slices that contain lesion (a random slice hits with
  that probability, uniform attention puts that much mass there).
- voxel level (attention voxel sum/product, HiResCAM of the 3d and acs runs, a uniform random
  map): a hit when the arg-max voxel lies within ``tolerance`` voxels (Chebyshev distance, i.e.
  in the lesion dilated by a (2t+1)^3 cube) of the lesion. ``tolerance=0`` is the strict test;
  the default also reports 2 because a HiResCAM at 28^3 comes from a 2x2x2 feature map and
  the attention maps from whole slices, so a peak just off the lesion rim still points at it.
  Ties (plateaus of upsampled CAMs) resolve to the centre of the plateau and a constant map
  points nowhere (a miss): see :func:`.voxel.peak_voxels`. ``mass`` is the map's share
  inside the (undilated) lesion (0 for an all-zero map); chance is the lesion's volume share
  (for hits: the dilated lesion's share).

HiResCAM explains the true class (``cam_class="label"``: where is the evidence for the lesion)
or, optionally, the predicted class. Intervals: :mod:`.stats` (bootstrap over volumes, pooled
over seeds).

**Deletion** (faithfulness, any dataset): blank (set to the background value) the k slices
with the highest attention of each volume, or k random slices (seeded, several repeats), and
report per k the mean drop of the predicted class's probability and the AUROC after deletion.
If attention marks what the prediction rests on, blanking those slices must hurt more than
blanking random ones.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.ndimage import maximum_filter
from torch import nn

from ..data import VolumeDataset
from ..metrics import evaluate_scores, scores_from_logits
from ..config import setting
from ..train import WHICH, Run, load_run, split_of
from ..models import AXIS_NAMES, SliceLayout
from .attention import (EMPTY_THRESHOLD, eval_mode, model_device, slice_any, slice_attention,
                        sparsity_table, split_tokens, top_k_tokens)
from .cam import hirescam
from .stats import LEVEL, N_BOOT, bootstrap_ci, pool_seeds
from .voxel import MODES, peak_voxels, voxel_map

def volume_batch(data: VolumeDataset, index: np.ndarray | slice) -> torch.Tensor:
    """Volumes ``(B, C, D, H, W)`` float32 for the given indices of a dataset."""
    return torch.as_tensor(np.asarray(data.volumes[index], dtype=np.float32))


def labels_of(data: VolumeDataset, index: np.ndarray | slice) -> np.ndarray:
    return np.asarray(data.labels)[index].reshape(-1)


DEFAULT_TOLERANCES = (0, 2)
DEFAULT_KS = (1, 2, 4, 8)
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
    if masks.ndim != 4:
        raise ValueError(f"masks must be (B, D, H, W), got shape {masks.shape}")
    if not masks.reshape(len(masks), -1).any(axis=1).all():
        raise ValueError("some masks are empty: score only volumes with a lesion (lesion_indices)")
    return masks


def slice_pointing(weights: np.ndarray, layout: SliceLayout, masks: np.ndarray,
                   axis: str | None = None) -> dict[str, np.ndarray]:
    """Slice-level pointing game: ``hit``, ``mass``, ``hit_chance``, ``mass_chance``, each ``(B,)``.

    ``axis=None`` ranks the slices of all axes together; an axis name ranks only that axis's.
    """
    lesion = slice_any(_check_masks(masks), layout)
    w = np.asarray(weights, dtype=np.float64)
    if axis is not None:
        if axis not in AXIS_NAMES:
            raise ValueError(f"unknown axis {axis!r}; valid: {', '.join(AXIS_NAMES)}")
        w, lesion = split_tokens(w, layout)[axis], split_tokens(lesion, layout)[axis]
    top = w.argmax(axis=-1)
    hit = lesion[np.arange(len(w)), top].astype(float)
    mass = (w * lesion).sum(-1) / w.sum(-1)
    chance = lesion.mean(-1)
    return {"hit": hit, "mass": mass, "hit_chance": chance, "mass_chance": chance}


def voxel_pointing(maps: np.ndarray, masks: np.ndarray, tolerance: int = 0) -> dict[str, np.ndarray]:
    """Voxel-level pointing game for maps ``(B, D, H, W)`` (non-negative); see module docstring."""
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
    flat = maps.reshape(len(maps), -1)
    total = flat.sum(axis=1)
    inside = (flat * masks.reshape(len(maps), -1)).sum(axis=1)
    mass = np.divide(inside, total, out=np.zeros_like(total), where=total > 0)
    return {"hit": hit, "mass": mass, "hit_chance": near.reshape(len(maps), -1).mean(1),
            "mass_chance": masks.reshape(len(maps), -1).mean(1)}


def random_maps(shape: tuple[int, int, int], volumes: Iterable[int], seed: int = 0) -> np.ndarray:
    """Uniform random voxel maps, one per volume index, reproducible per (seed, volume)."""
    return np.stack([np.random.default_rng([seed, int(v)]).random(shape) for v in volumes])


def _rows(explanation: str, level: str, tolerance: int, seed: int, volumes: np.ndarray, labels: np.ndarray,
          scores: dict[str, np.ndarray]) -> pd.DataFrame:
    return pd.DataFrame({"explanation": explanation, "level": level, "tolerance": tolerance, "seed": seed,
                         "volume": volumes, "label": labels, **scores})[POINTING_COLUMNS]


def _batches(indices: np.ndarray, batch_size: int) -> Iterable[np.ndarray]:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(indices), batch_size):
        yield indices[start:start + batch_size]


def _targets(data: VolumeDataset, indices: np.ndarray | None, max_volumes: int | None) -> np.ndarray:
    idx = lesion_indices(data) if indices is None else np.asarray(indices, dtype=int)
    return idx if max_volumes is None else idx[:max_volumes]


def attention_pointing(model: nn.Module, data: VolumeDataset, tolerances: Sequence[int] = DEFAULT_TOLERANCES,
                       seed: int = 0, batch_size: int = 16, indices: np.ndarray | None = None,
                       max_volumes: int | None = None) -> pd.DataFrame:
    """Per-volume pointing rows of a 2.5D attention model: slices (all axes, each axis) and voxel sum/product maps."""
    frames = []
    for idx in _batches(_targets(data, indices, max_volumes), batch_size):
        att = slice_attention(model, volume_batch(data, idx))
        masks, labels = np.asarray(data.masks[idx]), labels_of(data, idx)
        frames.append(_rows("attention slice", "slice", 0, seed, idx, labels,
                            slice_pointing(att.weights, att.layout, masks)))
        for axis in (AXIS_NAMES[a] for a in att.layout.axes):
            frames.append(_rows(f"attention slice ({axis})", "slice", 0, seed, idx, labels,
                                slice_pointing(att.weights, att.layout, masks, axis)))
        for mode in MODES if len(att.layout.axes) == 3 else ():  # voxel maps need all three axes
            maps = voxel_map(att.by_axis(), mode)
            for t in tolerances:
                frames.append(_rows(f"attention voxel {mode}", "voxel", t, seed, idx, labels,
                                    voxel_pointing(maps, masks, t)))
    return _concat(frames)


def cam_pointing(model: nn.Module, data: VolumeDataset, name: str, tolerances: Sequence[int] = DEFAULT_TOLERANCES,
                 seed: int = 0, batch_size: int = 8, indices: np.ndarray | None = None,
                 max_volumes: int | None = None, cam_class: str = "label") -> pd.DataFrame:
    """Per-volume pointing rows of HiResCAM on a 3d/acs model (explanation ``hirescam <name>``)."""
    if cam_class not in CAM_CLASSES:
        raise ValueError(f"unknown cam_class {cam_class!r}; valid: {', '.join(CAM_CLASSES)}")
    frames = []
    for idx in _batches(_targets(data, indices, max_volumes), batch_size):
        labels = labels_of(data, idx)
        maps = hirescam(model, volume_batch(data, idx), category=list(labels) if cam_class == "label" else None)
        masks = np.asarray(data.masks[idx])
        for t in tolerances:
            frames.append(_rows(f"hirescam {name}", "voxel", t, seed, idx, labels, voxel_pointing(maps, masks, t)))
    return _concat(frames)


def random_pointing(data: VolumeDataset, tolerances: Sequence[int] = DEFAULT_TOLERANCES, seed: int = 0,
                    indices: np.ndarray | None = None, max_volumes: int | None = None) -> pd.DataFrame:
    """Per-volume pointing rows of a uniform random map: the empirical chance level."""
    idx = _targets(data, indices, max_volumes)
    maps = random_maps(data.info.shape, idx, seed)
    masks, labels = np.asarray(data.masks[idx]), labels_of(data, idx)
    return _concat([_rows("random map", "voxel", t, seed, idx, labels, voxel_pointing(maps, masks, t))
                    for t in tolerances])


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=POINTING_COLUMNS)


def summarize_pointing(per_volume: pd.DataFrame, n_boot: int = N_BOOT, level: float = LEVEL,
                       seed: int = 0) -> pd.DataFrame:
    """One row per (explanation, level, tolerance): hit rate and lesion mass with std over seeds and bootstrap CIs."""
    by = ["explanation", "level", "tolerance"]
    out = None
    for value, name in (("hit", "hit_rate"), ("mass", "mass")):
        table = pool_seeds(per_volume, value, by, n_boot, level, seed).rename(columns={
            "mean": name, "std": f"{name}_std", "ci_low": f"{name}_ci_low", "ci_high": f"{name}_ci_high"})
        chance = per_volume.groupby(by, sort=False)[f"{value}_chance"].mean().rename(f"{value}_chance").reset_index()
        table = table.merge(chance, on=by)
        out = table if out is None else out.merge(table.drop(columns=["n_seeds", "n_volumes"]), on=by)
    return out


# ----------------------------------------------------------------------------- deletion

def blank_slices(volumes: torch.Tensor, tokens: np.ndarray, layout: SliceLayout,
                 background: float = 0.0) -> torch.Tensor:
    """A copy of ``volumes`` with, per volume b, the slices ``tokens[b]`` (token indices) set to ``background``.

    Token t of axis a at index i blanks ``x[b, :, i]`` (a=0), ``x[b, :, :, i]`` (a=1) or ``x[b, ..., i]`` (a=2).
    """
    tokens = np.asarray(tokens).reshape(len(volumes), -1)
    out = volumes.clone()
    for b, row in enumerate(tokens):
        for token in row:
            axis, i = layout.locate(int(token))
            index: list = [b, slice(None), slice(None), slice(None), slice(None)]
            index[2 + axis] = i
            out[tuple(index)] = background
    return out


def random_tokens(num_tokens: int, k: int, volumes: Iterable[int], repeat: int, seed: int = 0) -> np.ndarray:
    """``(B, k)`` distinct random slices per volume, reproducible per (seed, repeat, volume); nested over k."""
    return np.stack([np.random.default_rng([seed, repeat, int(v)]).permutation(num_tokens)[:k] for v in volumes])


def class_probability(logits: torch.Tensor, classes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(probability of ``classes``, classes); ``classes=None`` takes the predicted class. One logit = binary."""
    logits = logits.detach().float().cpu()
    if logits.shape[1] == 1:
        p1 = torch.sigmoid(logits[:, 0]).numpy()
        classes = (p1 > 0.5).astype(int) if classes is None else np.asarray(classes)
        return np.where(classes == 1, p1, 1.0 - p1), classes
    probs = torch.softmax(logits, dim=1).numpy()
    classes = probs.argmax(1) if classes is None else np.asarray(classes)
    return probs[np.arange(len(probs)), classes], classes


class Deletion(NamedTuple):
    per_repeat: pd.DataFrame  # one row per (selection, k, repeat)
    summary: pd.DataFrame     # one row per (selection, k)


def _check_ks(ks: Sequence[int], num_tokens: int) -> tuple[int, ...]:
    ks = tuple(sorted({int(k) for k in ks}))
    if not ks or ks[0] < 1 or ks[-1] > num_tokens:
        raise ValueError(f"k values must lie in 1..{num_tokens} (the number of slices), got {ks}")
    return ks


@torch.no_grad()
def deletion_test(model: nn.Module, data: VolumeDataset, ks: Sequence[int] = DEFAULT_KS, repeats: int = 5,
                  seed: int = 0, batch_size: int = 16, background: float = 0.0, max_volumes: int | None = None,
                  n_boot: int = N_BOOT, level: float = LEVEL) -> Deletion:
    """Blank the top-k attention slices versus k random slices; see module docstring.

    Selections: ``none`` (k=0, the intact volumes), ``attention`` (deterministic, repeat 0) and
    ``random`` (``repeats`` seeded draws). ``max_volumes`` uses the first n volumes of ``data``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    n = len(data) if max_volumes is None else min(len(data), max_volumes)
    keys = [("none", 0, 0)]
    logits: dict[tuple, list[torch.Tensor]] = {}
    drops: dict[tuple, list[np.ndarray]] = {}
    device = model_device(model)
    for idx in _batches(np.arange(n), batch_size):
        x = volume_batch(data, idx).to(device)
        att = slice_attention(model, x)
        before = torch.as_tensor(att.logits)
        p0, predicted = class_probability(before)
        ks = _check_ks(ks, att.layout.num_tokens)
        picks = {("attention", 0): top_k_tokens(att.weights, ks[-1])}
        for r in range(repeats):
            picks[("random", r)] = random_tokens(att.layout.num_tokens, ks[-1], idx, r, seed)
        _store(logits, drops, ("none", 0, 0), before, np.zeros(len(idx)))
        with eval_mode(model):
            for k in ks:
                for (selection, r), tokens in picks.items():
                    after = model(blank_slices(x, tokens[:, :k], att.layout, background)).float().cpu()
                    _store(logits, drops, (selection, k, r), after, p0 - class_probability(after, predicted)[0])
    labels, task = np.asarray(data.labels)[:n], data.info.task
    rows = []
    for key in logits:
        d = np.concatenate(drops[key])
        metrics = evaluate_scores(labels, scores_from_logits(torch.cat(logits[key])), task)
        rows.append({"selection": key[0], "k": key[1], "repeat": key[2], "n": n, "prob_drop": float(d.mean()),
                     "auc": metrics["auc"], "acc": metrics["acc"]})
    per_repeat = pd.DataFrame(rows)
    return Deletion(per_repeat, _summarize_deletion(per_repeat, drops, n_boot, level, seed))


def _store(logits: dict, drops: dict, key: tuple, out: torch.Tensor, drop: np.ndarray) -> None:
    logits.setdefault(key, []).append(out)
    drops.setdefault(key, []).append(np.asarray(drop, dtype=np.float64))


def _summarize_deletion(per_repeat: pd.DataFrame, drops: dict, n_boot: int, level: float, seed: int) -> pd.DataFrame:
    rows = []
    for (selection, k), group in per_repeat.groupby(["selection", "k"], sort=False):
        per_volume = np.mean([np.concatenate(drops[(selection, k, r)]) for r in group["repeat"]], axis=0)
        lo, hi = bootstrap_ci(per_volume, n_boot, level, seed)
        rows.append({"selection": selection, "k": k, "repeats": len(group), "n": int(group["n"].iloc[0]),
                     "prob_drop": float(group["prob_drop"].mean()),
                     "prob_drop_std": float(group["prob_drop"].std(ddof=1)) if len(group) > 1 else float("nan"),
                     "prob_drop_ci_low": lo, "prob_drop_ci_high": hi,
                     "auc": float(group["auc"].mean()),
                     "auc_std": float(group["auc"].std(ddof=1)) if len(group) > 1 else float("nan"),
                     "acc": float(group["acc"].mean())})
    return pd.DataFrame(rows)


def pool_deletion(summaries: pd.DataFrame) -> pd.DataFrame:
    """Several runs' deletion summaries (column ``seed``) -> mean and std over seeds per (selection, k)."""
    grouped = summaries.groupby(["selection", "k"], sort=False)
    out = grouped.agg(n_seeds=("seed", "nunique"), prob_drop=("prob_drop", "mean"),
                      prob_drop_seed_std=("prob_drop", "std"), auc=("auc", "mean"), auc_seed_std=("auc", "std"),
                      acc=("acc", "mean"))
    return out.reset_index()


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
    """The whole benchmark from run folders (several runs per kind = several seeds) as tidy tables.

    Keys: ``sparsity_per_volume`` / ``sparsity`` (attention runs), ``pointing_per_volume`` /
    ``pointing`` (attention, 3d, acs runs and a random map, on datasets with lesion masks),
    ``deletion_per_repeat`` / ``deletion`` (per run, columns ``run``, ``seed``) and
    ``deletion_pooled`` (over seeds). A part whose runs are not given is absent; runs on data
    without lesion masks are left out of the pointing game with a warning.
    """
    o = settings or Settings()
    runs = _RunCache(o.split, o.which, o.device, o.data_root)
    out: dict[str, pd.DataFrame] = {}
    sparsity, pointing = [], []
    for path in map(Path, attention_runs):
        run, data = runs.get(path, "attention")
        sparsity.append(_sparsity_rows(run, data, o.batch_size, o.max_volumes, o.background, o.threshold))
        if _has_masks(path, data):
            s = run.config.seed
            pointing.append(attention_pointing(run.model, data, o.tolerances, s, o.batch_size, max_volumes=o.max_volumes))
            pointing.append(random_pointing(data, o.tolerances, o.seed * 100_003 + s, max_volumes=o.max_volumes)
                            .assign(seed=s))
    for method, paths in (("3d", runs_3d), ("acs", runs_acs)):
        for path in map(Path, paths):
            run, data = runs.get(path, method)
            if _has_masks(path, data):
                pointing.append(cam_pointing(run.model, data, method, o.tolerances, run.config.seed,
                                             max(1, o.batch_size // 2), max_volumes=o.max_volumes,
                                             cam_class=o.cam_class))
    if sparsity:
        out["sparsity_per_volume"] = pd.concat(sparsity, ignore_index=True)
        long = out["sparsity_per_volume"].melt(id_vars=["run", "seed", "volume", "label"], var_name="measure")
        out["sparsity"] = pool_seeds(long, "value", ["measure"], o.n_boot, seed=o.seed)
    if pointing:
        out["pointing_per_volume"] = pd.concat(pointing, ignore_index=True)
        out["pointing"] = summarize_pointing(out["pointing_per_volume"], o.n_boot, seed=o.seed)
    per_repeat, summaries = [], []
    for path in map(Path, deletion_runs):
        run, data = runs.get(path, "attention")
        result = deletion_test(run.model, data, o.ks, o.repeats, o.seed, o.batch_size, o.background, o.max_volumes,
                               o.n_boot)
        per_repeat.append(result.per_repeat.assign(run=str(path), seed=run.config.seed))
        summaries.append(result.summary.assign(run=str(path), seed=run.config.seed))
    if summaries:
        out["deletion_per_repeat"] = pd.concat(per_repeat, ignore_index=True)
        out["deletion"] = pd.concat(summaries, ignore_index=True)
        out["deletion_pooled"] = pool_deletion(out["deletion"])
    return out


def volumes_to_draw(data: VolumeDataset, requested: Sequence[int] | None = None) -> list[int]:
    """The volumes Figure 3 is drawn for: as requested, else the first with a lesion mask, else the
    first of a non-zero class (the CLI and the book's Figure 3 page pick the same one)."""
    if requested:
        bad = [i for i in requested if not 0 <= i < len(data)]
        if bad:
            raise ValueError(f"volume {bad[0]} is outside 0..{len(data) - 1} (the {data.split} split's size)")
        return list(requested)
    if data.masks is not None and np.asarray(data.masks).any():
        return [int(lesion_indices(data)[0])]
    nonzero = np.flatnonzero(np.asarray(data.labels).reshape(-1))
    return [int(nonzero[0]) if len(nonzero) else 0]


class _RunCache:
    """Loads each run once and each dataset split once (several runs usually share one)."""

    def __init__(self, split: str, which: str, device: str, data_root: str | None):
        self.split, self.which, self.device, self.data_root = split, which, device, data_root
        self.runs: dict[Path, Run] = {}
        self.data: dict[str, VolumeDataset] = {}

    def get(self, path: Path, method: str) -> tuple[Run, VolumeDataset]:
        if path not in self.runs:
            self.runs[path] = load_run(path, self.which, self.device, self.data_root)
        run = self.runs[path]
        if run.config.method != method:
            raise ValueError(f"{path} holds a {run.config.method!r} run where a {method!r} run is expected; "
                             "check which option the folder was passed to")
        c = run.config
        key = repr((c.dataset, c.size, c.data_root, sorted(c.dataset_options.items())))
        if key not in self.data:
            self.data[key] = split_of(c, self.split)
        return run, self.data[key]


def _has_masks(path: Path, data: VolumeDataset) -> bool:
    if data.masks is None:
        warnings.warn(f"pointing game skipped for {path}: dataset {data.info.name!r} has no lesion masks")
    return data.masks is not None


def _sparsity_rows(run: Run, data: VolumeDataset, batch_size: int, max_volumes: int | None, background: float,
                   threshold: float) -> pd.DataFrame:
    n = len(data) if max_volumes is None else min(len(data), max_volumes)
    frames = []
    for idx in _batches(np.arange(n), batch_size):
        x = volume_batch(data, idx)
        table = sparsity_table(slice_attention(run.model, x), x, background, threshold)
        frames.append(table.assign(volume=idx, label=labels_of(data, idx)))
    table = pd.concat(frames, ignore_index=True)
    return table.assign(run=str(run.path), seed=run.config.seed)
