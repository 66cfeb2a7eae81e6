"""The random scenes behind the synthetic set: everything random about n volumes, drawn up front (:class:`Scene`),
and rendering them, a pure function, into volumes and lesion masks (see :mod:`.synthetic` for what they show).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_DISTRACTORS = 4
LESION_REACH = 1.25  # outer extent of every lesion kind, in lesion radii (+ half a voxel)
_WAVES = 3  # cosine products in each smooth random field
_CHUNK_VOXELS = 1 << 21  # volumes rendered together: bounds temporary memory at 64^3


def _lerp(easy: float, hard: float, t: float) -> float:
    return easy + (hard - easy) * t


@dataclass(frozen=True)
class Scene:
    """Everything random about n volumes with M distractor slots, drawn up front so rendering is a pure function."""

    labels: np.ndarray  # (n,) int64
    body_centre: np.ndarray  # (n, 3) voxels
    body_radii: np.ndarray  # (n, 3) voxels
    base: np.ndarray  # (n,) body intensity
    waves: np.ndarray  # (n, [boundary|texture], wave, axis, (frequency, phase))
    wave_amp: np.ndarray  # (n, 2, wave)
    d_centre: np.ndarray  # (n, M, 3)
    d_radii: np.ndarray  # (n, M, 3)
    d_contrast: np.ndarray  # (n, M), 0 for an inactive slot
    l_centre: np.ndarray  # (n, 3)
    l_radius: np.ndarray  # (n,)
    l_contrast: float
    noise_std: float
    noise_seed: int


def sample_scenes(rng: np.random.Generator, n: int, shape: tuple[int, int, int], num_classes: int, t: float) -> Scene:
    """Draw a :class:`Scene`; the draw order fixes the volumes a seed gives (see ``synthetic.GENERATOR``)."""
    side = np.asarray(shape, dtype=np.float64)
    labels = rng.permutation(np.arange(n) % num_classes).astype(np.int64)
    centre = side / 2 + rng.uniform(-0.08, 0.08, (n, 3)) * side
    radii = rng.uniform(0.2, 0.3, (n, 3)) * side
    base = rng.uniform(0.45, 0.6, n)
    freq = rng.uniform(1.0, 3.0, (n, 2, _WAVES, 3))
    phase = rng.uniform(0, 2 * np.pi, (n, 2, _WAVES, 3))
    waves = np.stack([freq, phase], axis=-1)
    wave_amp = rng.uniform(0.5, 1.0, (n, 2, _WAVES)) / np.sqrt(_WAVES)
    l_radius = np.full(n, _lerp(0.12, 0.065, t) * side.min())
    l_radius *= rng.uniform(0.85, 1.15, n)
    # lesion centre deep enough in the body that (almost) all of the lesion is inside it
    room = np.maximum(radii - LESION_REACH * l_radius[:, None], 0.0)
    l_centre = centre + _in_unit_ball(rng, n) * 0.7 * room
    m = MAX_DISTRACTORS
    count = rng.integers(1, 2 + round(_lerp(1, 3, t)), n)  # easy 1..2, hard 1..4
    active = np.arange(m)[None, :] < count[:, None]
    is_tube = rng.random((n, m)) < 0.5
    thin = np.maximum(0.9, rng.uniform(0.45, 0.65, (n, m)) * l_radius[:, None])
    long = thin * rng.uniform(3.0, 4.5, (n, m))
    axis = rng.integers(0, 3, (n, m))
    tube_radii = np.where(np.arange(3) == axis[..., None], long[..., None], thin[..., None])
    blob_radii = (rng.uniform(1.7, 2.5, (n, m)) * l_radius[:, None])[..., None] * rng.uniform(0.85, 1.15, (n, m, 3))
    d_radii = np.where(is_tube[..., None], tube_radii, blob_radii)
    l_contrast = _lerp(0.45, 0.2, t)
    tube_contrast = rng.uniform(0.6, 1.0, (n, m)) * l_contrast
    blob_contrast = rng.uniform(0.25, 0.45, (n, m)) * l_contrast * rng.choice([-1.0, 1.0], (n, m))
    d_contrast = np.where(active, np.where(is_tube, tube_contrast, blob_contrast), 0.0)
    d_centre = centre[:, None] + _in_unit_ball(rng, n * m).reshape(n, m, 3) * 0.7 * radii[:, None]
    return Scene(
        labels,
        centre,
        radii,
        base,
        waves,
        wave_amp,
        d_centre,
        d_radii,
        d_contrast,
        l_centre,
        l_radius,
        l_contrast,
        noise_std=_lerp(0.03, 0.09, t),
        noise_seed=int(rng.integers(2**32)),
    )


def _in_unit_ball(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v * rng.random((n, 1)) ** (1 / 3)


def _axes(shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Voxel coordinates as broadcastable (1, D, 1, 1), (1, 1, H, 1), (1, 1, 1, W) arrays."""
    return [
        np.arange(s, dtype=np.float32).reshape([1] + [s if i == a else 1 for i in range(3)])
        for a, s in enumerate(shape)
    ]


def _per_volume(values: np.ndarray) -> np.ndarray:
    """(c,) values as float32 (c, 1, 1, 1), to broadcast against a batch of volumes."""
    return values[:, None, None, None].astype(np.float32)


def _squared(axes: list[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Separable sum over axes of ((x - c) / r)^2 for a batch: (c, 3) -> (c, D, H, W)."""
    total = 0.0
    for a, x in enumerate(axes):
        d = (x - _per_volume(centre[:, a])) / _per_volume(radii[:, a])
        total = total + d * d
    return total


def _field(axes: list[np.ndarray], shape, waves: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Smooth random field: sum of products of 1D cosines (cheap because separable)."""
    total = 0.0
    for k in range(waves.shape[1]):
        prod = _per_volume(amp[:, k])
        for a, x in enumerate(axes):
            u = 2 * x / shape[a] - 1  # [-1, 1] along each axis
            prod = prod * np.cos(_per_volume(waves[:, k, a, 0]) * np.pi * u + _per_volume(waves[:, k, a, 1]))
        total = total + prod
    return total


def _box(centre: np.ndarray, half: np.ndarray, shape) -> tuple[tuple[slice, ...], list[np.ndarray]] | None:
    """Slices of the box reaching ``half`` voxels around ``centre``, and offsets from the centre inside it:
    lesions and distractors are small, so drawing each in its own box is far cheaper."""
    lo = np.maximum(np.floor(centre - half).astype(int), 0)
    hi = np.minimum(np.ceil(centre + half).astype(int) + 1, shape)
    if (hi <= lo).any():
        return None
    offsets = [
        (np.arange(a, b, dtype=np.float32) - np.float32(c)).reshape([-1 if i == ax else 1 for i in range(3)])
        for ax, (a, b, c) in enumerate(zip(lo, hi, centre))
    ]
    return tuple(slice(a, b) for a, b in zip(lo, hi)), offsets


def _lesion(kind: int, centre: np.ndarray, r: float, shape) -> tuple[tuple[slice, ...], np.ndarray, np.ndarray] | None:
    """(box, signal in [-1, 1], filled region) of one lesion; the region covers all of its signal."""
    thick, mid, side = max(1.0, 0.4 * r), r, 0.72 * r  # shell reaches 1.2 r, cube corners 1.25 r
    half = {1: r, 2: r, 3: mid + thick / 2, 4: side}[kind] + 1.0
    box = _box(centre, np.full(3, half), shape)
    if box is None:
        return None
    sl, (dz, dy, dx) = box
    if kind == 4:
        cheb = np.maximum(np.maximum(np.abs(dz), np.abs(dy)), np.abs(dx))
        return sl, np.clip(side + 0.5 - cheb, 0, 1), cheb < side + 0.5
    dist = np.sqrt(dz * dz + dy * dy + dx * dx)
    if kind == 3:
        return sl, np.clip(thick / 2 + 0.5 - np.abs(dist - mid), 0, 1), dist < mid + thick / 2 + 0.5
    ball = np.clip(r + 0.5 - dist, 0, 1)
    return sl, (ball if kind == 1 else -ball), dist < r + 0.5


def _distractor(centre: np.ndarray, radii: np.ndarray, shape) -> tuple[tuple[slice, ...], np.ndarray] | None:
    """(box, profile in [0, 1]) of one soft ellipsoid: clip((1 - e) * r_min + 0.5, 0, 1)."""
    rmin = float(radii.min())
    box = _box(centre, radii * (1 + 0.5 / rmin) + 1.0, shape)
    if box is None:
        return None
    sl, d = box
    e = np.sqrt(sum((x / np.float32(r)) ** 2 for x, r in zip(d, radii)))
    return sl, np.clip((1 - e) * rmin + 0.5, 0, 1)


def render(p: Scene, shape: tuple[int, int, int], lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Volumes (n, 1, D, H, W) in [0, 1] and lesion masks (n, D, H, W); lesion=False draws the same scene without it."""
    n = len(p.labels)
    axes = _axes(shape)
    vols = np.empty((n, 1, *shape), dtype=np.float32)
    masks = np.zeros((n, *shape), dtype=bool)
    noise_rng = np.random.default_rng(p.noise_seed)
    step = max(1, _CHUNK_VOXELS // int(np.prod(shape)))
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        boundary = _field(axes, shape, p.waves[sl, 0], p.wave_amp[sl, 0])
        texture = _field(axes, shape, p.waves[sl, 1], p.wave_amp[sl, 1])
        body = np.clip((1 - _squared(axes, p.body_centre[sl], p.body_radii[sl]) + 0.15 * boundary) * 3, 0, 1)
        img = body * (_per_volume(p.base[sl]) + 0.08 * texture)
        for i in range(sl.start, sl.stop):
            _draw_objects(img[i - start], body[i - start], masks[i], p, i, shape, lesion)
        noise = noise_rng.standard_normal(img.shape, dtype=np.float32)
        img += np.float32(p.noise_std) * noise * (body > 0)
        vols[sl, 0] = np.clip(img, 0, 1)
    return vols, masks


def _draw_objects(img: np.ndarray, body: np.ndarray, mask: np.ndarray, p: Scene, i: int, shape, lesion: bool) -> None:
    """Add volume ``i``'s distractors (kept inside the body) and, for lesion classes, its lesion and mask."""
    for j in np.flatnonzero(p.d_contrast[i]):
        drawn = _distractor(p.d_centre[i, j], p.d_radii[i, j], shape)
        if drawn is not None:
            img[drawn[0]] += np.float32(p.d_contrast[i, j]) * drawn[1] * body[drawn[0]]
    if lesion and p.labels[i] > 0:
        drawn = _lesion(int(p.labels[i]), p.l_centre[i], float(p.l_radius[i]), shape)
        if drawn is not None:
            box, signal, region = drawn
            inside = body[box] > 0  # a lesion never leaks into the empty background
            img[box] += np.float32(p.l_contrast) * signal * inside
            mask[box] = region & inside
