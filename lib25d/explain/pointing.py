"""Where the model looks — what the paper shows on one scan and does not measure.

**Pointing game** (Zhang et al., 2016) on the volumes with a lesion mask: per volume ``hit`` (0/1), ``mass``
(share of the attribution inside the lesion) and the chance of both. Slices (the weights of a reducer that has
them, over all axes or renormalised within one): a hit when the top slice cuts the lesion; chance = the share of
slices that do. Voxels (attention voxel sum/product, HiResCAM of the 3d and acs runs, a random map): a hit when
the peak voxel lies within ``tolerance`` voxels (Chebyshev) of the lesion, 2 because a 28^3 HiResCAM comes from a
2x2x2 map; chance = the (dilated) lesion's share of the volume. Deletion: :mod:`.deletion`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.ndimage import maximum_filter
from torch import nn

from ..data import VolumeDataset
from ..models import AXIS_NAMES, SliceLayout
from ..models.spatial import SpatialModel25D
from .attention import (
    MODES,
    batches,
    labels_of,
    peak_voxels,
    slice_any,
    slice_attention,
    spatial_map,
    split_tokens,
    volume_batch,
    voxel_map,
)
from .cam import hirescam
from .stats import LEVEL, N_BOOT, pool_seeds

DEFAULT_TOLERANCES = (0, 2)
KEYS = ["method", "explanation", "axis", "level", "tolerance"]  # what a row explains: structured, never parsed
POINTING_COLUMNS = [*KEYS, "seed", "volume", "label", "hit", "mass", "hit_chance", "mass_chance"]


def lesion_indices(data: VolumeDataset) -> np.ndarray:
    """Indices of the volumes with a non-empty lesion mask: the only ones the pointing game scores."""
    if data.masks is None:
        raise ValueError(
            f"dataset {data.info.name!r} has no lesion masks, so the pointing game cannot be scored; "
            "use the synthetic dataset or NIfTI scans with masks"
        )
    return np.flatnonzero(np.asarray(data.masks).reshape(len(data), -1).any(axis=1))


def _check_masks(masks: np.ndarray) -> np.ndarray:
    masks = np.asarray(masks, dtype=bool)
    if not masks.reshape(len(masks), -1).any(axis=1).all():
        raise ValueError("some masks are empty: score only volumes with a lesion (lesion_indices)")
    return masks


def slice_pointing(
    weights: np.ndarray, layout: SliceLayout, masks: np.ndarray, axis: str | None = None
) -> dict[str, np.ndarray]:
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
    """Per-volume rows; ``explain(idx, labels, masks)`` yields ((method, explanation, axis, level, tolerance),
    scores) per batch."""
    frames = []
    for idx in batches(lesion_indices(data)[:max_volumes], batch_size):
        labels, masks = labels_of(data, idx), np.asarray(data.masks[idx])
        for key, scores in explain(idx, labels, masks):
            frames.append(
                pd.DataFrame({**dict(zip(KEYS, key)), "seed": seed, "volume": idx, "label": labels, **scores})
            )
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=POINTING_COLUMNS)


def attention_pointing(
    model: nn.Module,
    data: VolumeDataset,
    tolerances: Sequence[int] = DEFAULT_TOLERANCES,
    seed: int = 0,
    batch_size: int = 16,
    max_volumes: int | None = None,
    name: str = "attention",
) -> pd.DataFrame:
    """Pointing rows of a 2.5D model with slice weights (method ``name``, e.g. gated): the top slice of all axes
    (axis ``all``) and of each axis (explanation ``slice``), the voxel maps of its slice profiles (``voxel sum``,
    ``voxel product``) and, for a spatial model, its own voxel map (``voxel map``)."""

    def explain(idx, labels, masks):
        att = slice_attention(model, volume_batch(data, idx))
        yield (name, "slice", "all", "slice", 0), slice_pointing(att.weights, att.layout, masks)
        for axis in (AXIS_NAMES[a] for a in att.layout.axes):
            yield (name, "slice", axis, "slice", 0), slice_pointing(att.weights, att.layout, masks, axis)
        for mode in MODES if len(att.layout.axes) == 3 else ():  # voxel maps need all three axes
            maps = voxel_map(att.by_axis(), mode)
            for t in tolerances:
                yield (name, f"voxel {mode}", "all", "voxel", t), voxel_pointing(maps, masks, t)
        if isinstance(model, SpatialModel25D):  # the attention mass of its (slice, cell) boxes
            maps = spatial_map(model, volume_batch(data, idx))
            for t in tolerances:
                yield (name, "voxel map", "all", "voxel", t), voxel_pointing(maps, masks, t)

    return _pointing(data, seed, batch_size, max_volumes, explain)


def cam_pointing(
    model: nn.Module,
    data: VolumeDataset,
    name: str,
    tolerances: Sequence[int] = DEFAULT_TOLERANCES,
    seed: int = 0,
    batch_size: int = 8,
    max_volumes: int | None = None,
    cam_class: str = "label",
) -> pd.DataFrame:
    """Pointing rows of HiResCAM on a 3d/acs model (method ``name``, explanation ``hirescam``); ``cam_class``:
    the class explained, the label or the predicted one."""

    def explain(idx, labels, masks):
        maps = hirescam(model, volume_batch(data, idx), category=list(labels) if cam_class == "label" else None)
        for t in tolerances:
            yield (name, "hirescam", "all", "voxel", t), voxel_pointing(maps, masks, t)

    return _pointing(data, seed, batch_size, max_volumes, explain)


def random_pointing(
    data: VolumeDataset, tolerances: Sequence[int] = DEFAULT_TOLERANCES, seed: int = 0, max_volumes: int | None = None
) -> pd.DataFrame:
    """Pointing rows of uniform random maps, reproducible per (seed, volume): the empirical chance level."""

    def explain(idx, labels, masks):
        maps = np.stack([np.random.default_rng([seed, int(v)]).random(data.info.shape) for v in idx])
        for t in tolerances:
            yield ("random", "random map", "all", "voxel", t), voxel_pointing(maps, masks, t)

    return _pointing(data, seed, max(1, len(data)), max_volumes, explain)  # one batch: rows by tolerance


def summarize_pointing(
    per_volume: pd.DataFrame, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> pd.DataFrame:
    """One row per (method, explanation, axis, level, tolerance): hit rate and lesion mass with std over seeds and
    bootstrap CIs."""
    by = KEYS
    tables = []
    for value, name in (("hit", "hit_rate"), ("mass", "mass")):
        table = pool_seeds(per_volume, value, by, n_boot, level, seed).rename(
            columns={"mean": name, "std": f"{name}_std", "ci_low": f"{name}_ci_low", "ci_high": f"{name}_ci_high"}
        )
        tables.append(table.merge(per_volume.groupby(by, sort=False)[f"{value}_chance"].mean().reset_index(), on=by))
    return tables[0].merge(tables[1].drop(columns=["n_seeds", "n_volumes"]), on=by)
