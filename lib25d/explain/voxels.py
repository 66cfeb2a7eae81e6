"""Voxel maps of every explanation, measured the same way (issue 27): the spatial model's own attention map, the
summed slice profiles of attention/gated, HiResCAM of the 3d/acs baselines and of the spatial model's own slice
encoder; a voxel deletion test; and how well two maps of one volume agree.

Voxel deletion: set the top-k % voxels of a map to the background (ties broken at random, seeded) and watch the
explained class's logit and probability, against k % random voxels of the same volume; if the map marks what the
prediction rests on, the first drop is larger. Pointing game and lesion mass: :func:`.pointing.voxel_pointing`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from torch import nn

from ..models import METHODS, Model25D, VolumeClassifier
from ..models.spatial import SpatialModel25D
from .attention import (
    EMPTY_THRESHOLD,
    batches,
    eval_mode,
    labels_of,
    model_volumes,
    peak_voxels,
    slice_attention,
    spatial_map,
    spatial_model,
    volume_batch,
    voxel_map,
)
from .cam import ClassTarget, hirescam
from .deletion import class_probability
from .pointing import KEYS, lesion_indices, voxel_pointing
from .stats import N_BOOT, pool_seeds

FRACTIONS = (0.01, 0.02, 0.05, 0.10)


def token_hirescam(
    model: nn.Module, volumes, category: int | Sequence[int] | None = None, per_axis: bool = False
) -> np.ndarray | list[np.ndarray]:
    """HiResCAM of the spatial model at its token layer, the slice encoder's output: ``relu(sum_f dy/dt * t)`` per
    (slice, cell) token, spread over the token's box like the attention, summed over axes ``(B, D, H, W)`` (or one
    map per axis). The retrospective view of the same model, on the same boxes as its attention map."""
    x = model_volumes(spatial_model(model), volumes)
    categories = [category] * len(x) if category is None or isinstance(category, (int, np.integer)) else category
    if len(categories) != len(x):
        raise ValueError(f"{len(categories)} classes for {len(x)} volumes: give one class per volume, one int, or None")
    with eval_mode(model), torch.enable_grad():
        tokens, grid = model.tokens(x)
        tokens = tokens.detach().requires_grad_(True)
        logits = model.classify(tokens)
        target = sum(ClassTarget(None if c is None else int(c))(row) for c, row in zip(categories, logits))
        (grad,) = torch.autograd.grad(target, tokens)
    cam = (grad * tokens).sum(-1).clamp(min=0).detach().double()
    maps = [m.cpu().numpy() for m in grid.voxel_maps(cam)]
    return maps if per_axis else np.sum(maps, axis=0)


def explanation_map(model: nn.Module, volumes, labels: Sequence[int] | None = None) -> np.ndarray:
    """The voxel map ``(B, D, H, W)`` a model of any method gives: spatial its own attention map, attention and
    gated their summed axis profiles (:func:`.attention.voxel_map`), 3d and acs HiResCAM for ``labels``."""
    if isinstance(model, SpatialModel25D):
        return spatial_map(model, volumes)
    if isinstance(model, Model25D):
        return voxel_map(slice_attention(model, volumes).by_axis(), "sum")
    if isinstance(model, VolumeClassifier):
        return hirescam(model, volumes, category=None if labels is None else list(labels)).astype(np.float64)
    raise ValueError(f"no voxel map for a {type(model).__name__}; methods: {', '.join(METHODS)}")


def top_voxels(maps: np.ndarray, count: int, seed: int | Sequence[int] = 0) -> np.ndarray:
    """``(B, count)`` flat indices of each map's largest voxels, ties in random (seeded) order: a plateau of a
    coarse map gives no voxel of it priority."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    seeds = [seed] * len(flat) if np.ndim(seed) == 0 else list(seed)
    out = [np.lexsort((np.random.default_rng(s).random(row.size), -row))[:count] for s, row in zip(seeds, flat)]
    return np.stack(out) if out else np.zeros((0, count), dtype=int)


def _class_scores(logits: torch.Tensor, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logit for the class, its probability) per row; one logit = binary, class 0 reads the negative logit."""
    logits, idx = logits.double(), torch.as_tensor(classes)
    if logits.shape[1] == 1:
        z = torch.where(idx == 1, logits[:, 0], -logits[:, 0])
    else:
        z = logits[torch.arange(len(logits)), idx]
    return z.numpy(), class_probability(logits, classes)[0]


@torch.no_grad()
def voxel_deletion(
    model: nn.Module,
    volumes,
    maps: np.ndarray,
    classes: Sequence[int],
    volume_ids: Sequence[int],
    fractions: Sequence[float] = FRACTIONS,
    repeats: int = 3,
    seed: int = 0,
    background: float = 0.0,
) -> pd.DataFrame:
    """Per volume and fraction: the drop of the class's logit and probability when the map's top voxels are set to
    ``background`` (``selection`` "map") and when as many random voxels are (``random``, mean of ``repeats`` draws,
    seeded per (seed, volume, repeat)); ``volume_ids`` seed the draws and tie-breaks and label the rows."""
    x = model_volumes(model, volumes)
    maps = np.asarray(maps)
    if maps.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"maps {maps.shape} do not match volumes {tuple(x.shape)}: one (D, H, W) map per volume")
    if repeats < 1 or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"need repeats >= 1 and fractions in (0, 1], got {repeats} and {list(fractions)}")
    classes, size = np.asarray(classes), int(np.prod(x.shape[2:]))
    with eval_mode(model):
        z0, p0 = _class_scores(model(x).float().cpu(), classes)
        rows = []
        for f in fractions:
            k = max(1, round(f * size))
            picks = {"map": [top_voxels(maps, k, [[seed, int(v)] for v in volume_ids])]}
            picks["random"] = [
                np.stack([np.random.default_rng([seed, int(v), r]).permutation(size)[:k] for v in volume_ids])
                for r in range(repeats)
            ]
            for selection, draws in picks.items():
                dz, dp = [], []
                for chosen in draws:
                    cut = x.clone().flatten(2)
                    cut[torch.arange(len(x))[:, None], :, torch.as_tensor(chosen)] = background
                    z, p = _class_scores(model(cut.view_as(x)).float().cpu(), classes)
                    dz.append(z0 - z), dp.append(p0 - p)
                rows.append(
                    pd.DataFrame(
                        {
                            "selection": selection,
                            "fraction": f,
                            "volume": list(volume_ids),
                            "logit_drop": np.mean(dz, axis=0),
                            "prob_drop": np.mean(dp, axis=0),
                        }
                    )
                )
    return pd.concat(rows, ignore_index=True)


def _spearman(u: np.ndarray, v: np.ndarray) -> float:
    return spearmanr(u, v)[0] if u.size > 1 and u.std() > 0 and v.std() > 0 else np.nan


def map_agreement(a: np.ndarray, b: np.ndarray, top: float = 0.01, within: np.ndarray | None = None) -> pd.DataFrame:
    """Per volume, how two voxel maps ``(B, D, H, W)`` of the same volumes agree: Spearman rank correlation over all
    voxels (ties averaged; with a boolean ``within``, e.g. the body, also over its voxels alone: ``spearman_within``),
    the share of ``a``'s top ``top`` voxels that are among ``b``'s (ties broken at random, seeded; chance = ``top``),
    and the Chebyshev distance between the two maps' peaks (plateau centres)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"two maps of the same volumes are needed, (B, D, H, W) each; got {a.shape} and {b.shape}")
    k = max(1, round(top * a[0].size))
    ta, tb = top_voxels(a, k, list(range(len(a)))), top_voxels(b, k, list(range(len(b))))
    pa, pb = peak_voxels(a), peak_voxels(b)
    out = pd.DataFrame(
        {
            "spearman": [_spearman(u.ravel(), v.ravel()) for u, v in zip(a, b)],
            "top_overlap": [len(np.intersect1d(u, v)) / k for u, v in zip(ta, tb)],
            "peak_distance": np.abs(pa - pb).max(axis=1),
        }
    )
    if within is not None:
        within = np.asarray(within, dtype=bool).reshape(a.shape)
        out["spearman_within"] = [_spearman(u[m], v[m]) for u, v, m in zip(a, b, within)]
    return out


def map_name(model: nn.Module) -> str:
    """How pointing rows name a model's voxel map (:func:`explanation_map`): 'voxel map', 'voxel sum' or 'hirescam'."""
    if isinstance(model, SpatialModel25D):
        return "voxel map"
    return "voxel sum" if isinstance(model, Model25D) else "hirescam"


def voxel_measures(
    model: nn.Module,
    data,
    name: str,
    seed: int = 0,
    tolerances: Sequence[int] = (0, 2),
    fractions: Sequence[float] = FRACTIONS,
    repeats: int = 2,
    batch_size: int = 16,
    background: float = 0.0,
    max_volumes: int | None = None,
) -> dict[str, pd.DataFrame]:
    """What the pointing game of :mod:`.pointing` lacks, per lesion volume of ``data`` (explained class: the label):
    ``voxel_deletion`` by the model's voxel map; for a spatial model also ``pointing`` rows of HiResCAM of its own
    slice encoder (``(name, 'hirescam', 'all', 'voxel', t)``, as :mod:`.pointing` writes them) and ``alignment`` of
    its attention map with that HiResCAM (Spearman also within the body: background voxels, where HiResCAM is 0,
    would otherwise set the ranks). ``name``: the run's method; ``seed``: its training seed (labels the rows, seeds
    the random voxels)."""
    pointing, deletion, alignment = [], [], []
    for idx in batches(lesion_indices(data)[:max_volumes], batch_size):
        x, labels, masks = volume_batch(data, idx), labels_of(data, idx), np.asarray(data.masks[idx])
        own = explanation_map(model, x, labels)
        rows = voxel_deletion(model, x, own, labels, idx, fractions, repeats, seed, background)
        deletion.append(rows.assign(method=name, explanation=map_name(model)))
        if isinstance(model, SpatialModel25D):
            cam = token_hirescam(model, x, list(labels))
            body = (x.abs() > EMPTY_THRESHOLD).any(dim=1).numpy()  # voxels that are not background
            alignment.append(map_agreement(own, cam, within=body).assign(method=name, volume=idx, label=labels))
            for t in tolerances:
                key = dict(zip(KEYS, (name, "hirescam", "all", "voxel", t)))
                pointing.append(pd.DataFrame({**key, "volume": idx, "label": labels, **voxel_pointing(cam, masks, t)}))
    out = {"pointing": pointing, "voxel_deletion": deletion, "alignment": alignment}
    return {k: pd.concat(v, ignore_index=True).assign(seed=seed) for k, v in out.items() if v}


def summarize_voxel_deletion(per_volume: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (method, explanation, fraction): the logit drop when the map's top voxels are deleted (``map_drop``), when
    as many random ones are (``random_drop``) and the difference (``excess_drop``: > 0 where the map marks what the
    prediction rests on), each the mean over seeds with its bootstrap interval over volumes."""
    by = ["method", "explanation", "fraction"]
    wide = per_volume.pivot_table(index=[*by, "seed", "volume"], columns="selection", values="logit_drop")
    wide = wide.reset_index().assign(excess=lambda w: w["map"] - w["random"])
    tables = []
    for column in ("map", "random", "excess"):
        base = f"{column}_drop"  # mean, std, interval: the column names tables.readable() folds into one
        names = {"mean": base, **{k: f"{base}_{k}" for k in ("std", "ci_low", "ci_high")}}
        tables.append(pool_seeds(wide, column, by, n_boot, seed=seed).rename(columns=names))
    out = tables[0]
    for t in tables[1:]:
        out = out.merge(t.drop(columns=["n_seeds", "n_volumes"]), on=by)
    return out


def summarize_alignment(per_volume: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (method, measure): Spearman over all voxels and within the body, top-1 % overlap, and the share of volumes
    whose two peaks lie within 2 voxels; mean over seeds with bootstrap intervals over volumes."""
    rows = per_volume.assign(peaks_within_2=(per_volume.peak_distance <= 2).astype(float))
    measures = [c for c in ("spearman", "spearman_within", "top_overlap", "peaks_within_2") if c in rows]
    long = rows.melt(id_vars=["method", "seed", "volume"], value_vars=measures, var_name="measure")
    return pool_seeds(long, "value", ["method", "measure"], n_boot, seed=seed)
