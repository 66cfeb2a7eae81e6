"""The synthetic planted-lesion generator: reproducible, balanced, and solvable only via the lesion."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from lib25d.data import dataset_info, load_dataset, make_synthetic, scenes
from lib25d.data import synthetic as syn


def test_same_seed_gives_identical_arrays():
    a = make_synthetic(24, num_classes=3, seed=5)
    b = make_synthetic(24, num_classes=3, seed=5)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_different_seeds_differ():
    va, _, _ = make_synthetic(16, seed=0)
    vb, _, _ = make_synthetic(16, seed=1)
    assert not np.array_equal(va, vb)
    assert not np.isclose(va, vb).all(axis=(1, 2, 3, 4)).any(), "no volume may repeat across seeds"


def test_types_shapes_and_range():
    vols, labels, masks = make_synthetic(10, shape=(16, 20, 24), seed=2)
    assert vols.dtype == np.float32 and vols.shape == (10, 1, 16, 20, 24)
    assert labels.dtype == np.int64 and labels.shape == (10,)
    assert masks.dtype == bool and masks.shape == (10, 16, 20, 24)
    assert vols.min() >= 0.0 and vols.max() <= 1.0


@pytest.mark.parametrize("num_classes", [2, 5])
def test_masks_nonempty_exactly_for_lesion_classes(num_classes):
    _, labels, masks = make_synthetic(60, num_classes=num_classes, difficulty="hard", seed=3)
    np.testing.assert_array_equal(masks.any(axis=(1, 2, 3)), labels > 0)


@pytest.mark.parametrize("num_classes", [2, 5])
def test_lesion_signal_lies_inside_mask(num_classes):
    shape = (28, 28, 28)
    params = scenes.sample_scenes(np.random.default_rng(7), 40, shape, num_classes, 0.5)
    with_lesion, masks = scenes.render(params, shape)
    without, _ = scenes.render(params, shape, lesion=False)
    changed = (with_lesion != without)[:, 0]
    assert not (changed & ~masks).any(), "the lesion changed voxels outside its mask"
    np.testing.assert_array_equal(changed.any(axis=(1, 2, 3)), params.labels > 0)
    # the mask sits inside the body: the lesion-free scene is nonzero there
    assert (without[:, 0][masks] > 0).all()


@pytest.mark.parametrize("n, k", [(50, 5), (7, 2), (64, 2)])
def test_classes_are_balanced(n, k):
    _, labels, _ = make_synthetic(n, num_classes=k, seed=4)
    counts = np.bincount(labels, minlength=k)
    assert counts.sum() == n and counts.max() - counts.min() <= 1


def test_multiclass_lesion_kinds_differ():
    vols, labels, masks = make_synthetic(100, num_classes=5, difficulty="easy", seed=5)
    v = vols[:, 0]

    def lesion_minus_body(k: int) -> float:
        idx = np.flatnonzero(labels == k)
        return float(np.mean([v[i][masks[i]].mean() - np.median(v[i][(v[i] > 0.2) & ~masks[i]]) for i in idx]))

    assert lesion_minus_body(1) > 0.15  # bright sphere
    assert lesion_minus_body(2) < -0.1  # dark sphere

    def box_fill(k: int) -> float:  # share of the bounding box the lesion fills: ~0.5 sphere, ~1 cube
        fills = []
        for i in np.flatnonzero(labels == k):
            idx = np.argwhere(masks[i])
            fills.append(len(idx) / np.prod(idx.max(axis=0) - idx.min(axis=0) + 1))
        return float(np.mean(fills))

    assert box_fill(1) < 0.7 and box_fill(4) > 0.85
    hollow = []  # the shell is bright on its rim and not in its middle
    for i in np.flatnonzero(labels == 3):
        centre = tuple(np.round(np.argwhere(masks[i]).mean(axis=0)).astype(int))
        hollow.append(v[i][masks[i]].max() - v[i][centre])
    assert np.mean(hollow) > 0.2
    assert dataset_info("synthetic", num_classes=5).class_names == list(syn.KIND_NAMES)


def test_about_half_the_slices_are_empty_background():
    vols, _, _ = make_synthetic(40, seed=6)
    for axis in (2, 3, 4):
        other = tuple(a for a in (1, 2, 3, 4) if a != axis)
        empty = (vols.max(axis=other) == 0).mean()
        assert 0.25 < empty < 0.75, f"axis {axis}: {empty:.2f} of slices empty"


def test_distractors_never_look_like_lesions():
    p = scenes.sample_scenes(np.random.default_rng(8), 200, (28, 28, 28), 2, 0.8)
    active = p.d_contrast != 0
    assert active.any(axis=1).all(), "every volume has at least one distractor"
    aspect = p.d_radii.max(axis=2) / p.d_radii.min(axis=2)
    large = p.d_radii.min(axis=2) > 1.4 * p.l_radius[:, None]
    faint = np.abs(p.d_contrast) < 0.5 * p.l_contrast
    assert ((aspect >= 3) | (large & faint))[active].all()


def test_task_is_learnable_from_the_lesion_but_not_from_global_intensity():
    vols, labels, _ = make_synthetic(200, difficulty="easy", seed=9)
    local_peak = torch.nn.functional.avg_pool3d(torch.from_numpy(vols), 3, 1).amax(dim=(1, 2, 3, 4)).numpy()
    assert roc_auc_score(labels, local_peak) > 0.8
    vols, labels, _ = make_synthetic(200, difficulty="medium", seed=9)
    assert roc_auc_score(labels, vols.mean(axis=(1, 2, 3, 4))) < 0.7


def test_difficulty_shrinks_lesions_and_validates():
    sizes = {}
    for d in ("easy", "hard"):
        _, labels, masks = make_synthetic(40, difficulty=d, seed=10)
        sizes[d] = masks[labels == 1].sum(axis=(1, 2, 3)).mean()
    assert sizes["easy"] > 2 * sizes["hard"]
    make_synthetic(4, difficulty=0.3)
    for bad in ("extreme", 1.5, -0.1):
        with pytest.raises(ValueError, match="difficulty"):
            make_synthetic(4, difficulty=bad)
    with pytest.raises(ValueError, match="num_classes"):
        make_synthetic(4, num_classes=6)
    with pytest.raises(ValueError, match="shape"):
        make_synthetic(4, shape=(4, 28, 28))


def test_load_dataset_splits_are_deterministic_and_disjoint():
    kw = dict(n_train=40, n_val=12, n_test=16, seed=3)
    train, val, test = (load_dataset("synthetic", s, **kw) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (40, 12, 16)
    again = load_dataset("synthetic", "val", **kw)
    np.testing.assert_array_equal(val.volumes, again.volumes)
    np.testing.assert_array_equal(val.masks, again.masks)
    flat = {s: d.volumes.reshape(len(d), -1) for s, d in (("train", train), ("val", val), ("test", test))}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        same = (flat[a][:, None] == flat[b][None]).all(axis=2)
        assert not same.any(), f"{a} and {b} share a volume"
    assert not np.array_equal(train.volumes[:12], val.volumes)
    assert load_dataset("synthetic", "val", **{**kw, "seed": 4}).volumes.tolist() != val.volumes.tolist()


def test_load_dataset_item_info_and_size():
    ds = load_dataset("synthetic", "val", size=32, n_val=6, num_classes=3, difficulty="hard", seed=1)
    x, y = ds[0]
    assert x.dtype == torch.float32 and x.shape == (1, 32, 32, 32) and isinstance(y, int)
    assert ds.masks.shape == (6, 32, 32, 32)
    assert ds.info.task == "multi-class" and ds.info.num_classes == 3
    assert ds.info.identity["seed"] == 1 and ds.info.identity["difficulty"] == "hard"
    assert ds.info == dataset_info("synthetic", size=32, n_val=6, num_classes=3, difficulty="hard", seed=1)
    assert load_dataset("synthetic", "test", n_test=4, shape=(16, 20, 24)).volumes.shape == (4, 1, 16, 20, 24)
    assert dataset_info("synthetic").task == "binary-class"
    with pytest.raises(ValueError, match="'synthetic' split 'val' is empty"):
        load_dataset("synthetic", "val", n_val=0)


def test_generation_is_fast():
    make_synthetic(8)  # warm-up
    start = time.perf_counter()
    make_synthetic(256)
    assert time.perf_counter() - start < 4.0
