"""Explanations: attention read-out, sparsity, voxel maps, HiResCAM, pointing game, deletion, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lib25d.data import load_dataset
from lib25d.explain import (
    ClassTarget,
    SliceAttention,
    attention_entropy,
    background_share,
    blank_slices,
    bootstrap_ci,
    default_cam_layer,
    deletion_test,
    effective_slices,
    empty_slices,
    figure3,
    head_figure,
    hirescam,
    lesion_figure,
    pointing_figure,
    pool_seeds,
    slice_attention,
    slice_pointing,
    sparsity_table,
    summarize_pointing,
    top_k_tokens,
    voxel_map,
    voxel_pointing,
)
from lib25d.explain.attention import peak_voxels
from lib25d.explain.cam import cam_layer_name, upsample_cam
from lib25d.explain.cli import register
from lib25d.explain.deletion import class_probability, random_tokens
from lib25d.models import Model25D, SliceLayout, build_model
from lib25d.models.reducers import AttentionPool
from lib25d.run import RunConfig

TINY = {"n_train": 4, "n_val": 4, "n_test": 4}  # 12^3 volumes: small enough for 2 shared CPU cores
TINY_SIZE = 12


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def attention_model():
    torch.manual_seed(0)
    return build_model("attention")


@pytest.fixture(scope="module")
def baselines():
    torch.manual_seed(0)
    return {method: build_model(method) for method in ("3d", "acs")}


@pytest.fixture(scope="module")
def tiny_data():
    return load_dataset("synthetic", "test", size=TINY_SIZE, **TINY)


def hand_made(weights: np.ndarray, spatial=(4, 3, 2)) -> SliceAttention:
    weights = np.asarray(weights, dtype=np.float64)[None]
    return SliceAttention(
        weights, np.repeat(weights[:, None], 2, axis=1), SliceLayout.for_shape(spatial), np.zeros((1, 1))
    )


# ----------------------------------------------------------------------------- attention


def test_attention_arrays_shapes_sums_and_axis_split(attention_model):
    d, h, w = 10, 12, 9
    att = slice_attention(attention_model, np.random.default_rng(0).random((2, 1, d, h, w), dtype=np.float32))
    assert att.weights.shape == (2, d + h + w) and att.head_weights.shape == (2, 8, d + h + w)
    np.testing.assert_allclose(att.weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(att.head_weights.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(att.head_weights.mean(1), att.weights, atol=1e-6)
    axes = att.by_axis()
    assert {k: v.shape for k, v in axes.items()} == {"axial": (2, d), "coronal": (2, h), "sagittal": (2, w)}
    assert {k: v.shape for k, v in att.by_axis(per_head=True).items()} == {
        "axial": (2, 8, d),
        "coronal": (2, 8, h),
        "sagittal": (2, 8, w),
    }
    np.testing.assert_array_equal(axes["coronal"], att.weights[:, d : d + h])
    assert att.logits.shape == (2, 1) and attention_model.training  # eval for the read-out, then restored


def test_top_k_over_all_axes_and_per_axis():
    # layout 4 axial + 3 coronal + 2 sagittal; largest: coronal 1, sagittal 0, axial 2
    w = np.array([0.05, 0.05, 0.2, 0.0, 0.05, 0.4, 0.0, 0.25, 0.0])
    att = hand_made(w)
    top = top_k_tokens(att.weights, 3)[0]
    assert [att.layout.locate(t) for t in top] == [(1, 1), (2, 0), (0, 2)]  # (axis, index)
    assert att.weights[0, top[0]] == pytest.approx(0.4)
    per_axis = {name: top_k_tokens(a, 2) for name, a in att.by_axis().items()}
    assert per_axis["axial"].tolist() == [[2, 0]] and per_axis["coronal"].tolist() == [[1, 0]]
    assert per_axis["sagittal"].tolist() == [[0, 1]]
    with pytest.raises(ValueError, match="k=10 is outside 1..9"):
        top_k_tokens(att.weights, 10)


def test_entropy_and_effective_slices_on_hand_made_weights():
    n = 84
    uniform, one_hot = np.full((1, n), 1 / n), np.eye(n)[[5]]
    assert attention_entropy(uniform)[0] == pytest.approx(np.log(n))
    assert effective_slices(uniform)[0] == pytest.approx(n)
    assert attention_entropy(one_hot)[0] == pytest.approx(0.0)
    assert effective_slices(one_hot)[0] == pytest.approx(1.0)
    half = np.zeros((1, n))
    half[0, :2] = 0.5
    assert effective_slices(half)[0] == pytest.approx(2.0)
    with pytest.raises(ValueError, match="sum to 1"):
        attention_entropy(np.full((1, n), 0.5))


def test_background_share_on_hand_made_volume():
    x = np.zeros((1, 1, 4, 3, 2), dtype=np.float32)
    x[0, 0, 1, 2, 0] = 0.8  # one bright voxel: axial 1, coronal 2, sagittal 0 are not empty
    x[0, 0, 3, 0, 1] = 0.005  # faint: background at the default threshold, tissue at threshold 0.001
    layout = SliceLayout.for_shape((4, 3, 2))
    empty = empty_slices(x, layout)
    assert empty[0].tolist() == [True, False, True, True, True, True, False, False, True]
    faint = empty_slices(x, layout, threshold=0.001)
    assert faint[0].tolist() == [True, False, True, False, False, True, False, False, False]
    # 0.5 on the non-empty axial slice 1, 0.3 on empty axial 0, 0.2 on empty coronal 0
    w = np.array([[0.3, 0.5, 0, 0, 0.2, 0, 0, 0, 0]])
    assert background_share(w, empty)[0] == pytest.approx(0.5)
    # a background of 1 (e.g. inverted intensities): every slice holds a voxel far from it
    assert not empty_slices(x, layout, background=1.0).any()
    table = sparsity_table(hand_made(w[0]), x)
    assert table.loc[0, "background_share"] == pytest.approx(0.5)
    assert table.loc[0, "empty_slice_share"] == pytest.approx(6 / 9)


def test_attention_refused_for_models_without_it_and_bad_volumes(attention_model, baselines):
    x = torch.rand(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match="MeanPool.*no attention weights.*HiResCAM"):
        slice_attention(build_model("mean"), x)
    with pytest.raises(ValueError, match="VolumeClassifier has no slice attention.*hirescam"):
        slice_attention(baselines["3d"], x)
    with pytest.raises(ValueError, match="expects 1 channel\\(s\\) but the volume has 2"):
        slice_attention(attention_model, torch.rand(1, 2, 8, 8, 8))
    with pytest.raises(ValueError, match="\\(B, C, D, H, W\\)"):
        slice_attention(attention_model, torch.rand(8, 8, 8))


# ----------------------------------------------------------------------------- voxel maps


def test_voxel_maps_shape_sum_and_peak():
    rng = np.random.default_rng(0)
    a, b, c = rng.random((2, 5)), rng.random((2, 6)), rng.random((2, 7))
    a[:, 3], b[:, 1], c[:, 4] = 2.0, 2.0, 2.0  # every profile peaks at one known index
    for mode in ("sum", "product"):
        m = voxel_map({"axial": a, "coronal": b, "sagittal": c}, mode)
        assert m.shape == (2, 5, 6, 7)
        np.testing.assert_allclose(m.sum(axis=(1, 2, 3)), 1.0)
        assert np.unravel_index(m[0].argmax(), m[0].shape) == (3, 1, 4)
    prod = voxel_map({"axial": a[0], "coronal": b[0], "sagittal": c[0]}, "product")
    assert prod.shape == (5, 6, 7)
    np.testing.assert_allclose(prod, np.einsum("d,h,w->dhw", a[0], b[0], c[0]) / (a[0].sum() * b[0].sum() * c[0].sum()))
    with pytest.raises(ValueError, match="missing sagittal"):
        voxel_map({"axial": a, "coronal": b})
    with pytest.raises(ValueError, match="unknown voxel map mode 'max'"):
        voxel_map({"axial": a, "coronal": b, "sagittal": c}, "max")


# ----------------------------------------------------------------------------- HiResCAM


@pytest.mark.parametrize("method", ["3d", "acs"])
@pytest.mark.parametrize("size,layer", [(28, "layer3"), (64, "layer4")])
def test_hirescam_is_not_blank(baselines, method, size, layer):
    model = baselines[method]
    torch.manual_seed(0)
    x = torch.rand(1, 1, size, size, size)
    assert default_cam_layer(model, x.shape) is getattr(model.encoder[-1], layer)
    cam = hirescam(model, x)
    assert cam.shape == (1, size, size, size) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert cam.std() > 0.01 and len(np.unique(cam)) > 100  # not blank, not constant


def test_cam_layer_rule_and_blank_layer_refused(attention_model, baselines):
    assert [cam_layer_name((s, s, s)) for s in (8, 16, 28, 32, 63, 64, 128)] == [
        "layer1",
        "layer2",
        "layer3",
        "layer3",
        "layer3",
        "layer4",
        "layer4",
    ]
    assert cam_layer_name((1, 1, 64, 28, 64)) == "layer3"  # the shortest side decides
    with pytest.raises(ValueError, match="1x1x1.*blank.*layer3"):
        hirescam(baselines["3d"], torch.rand(1, 1, 28, 28, 28), layer="layer4")
    with pytest.raises(ValueError, match="3d and acs baselines"):
        hirescam(attention_model, torch.rand(1, 1, 28, 28, 28))
    with pytest.raises(ValueError, match="expects 1 channel"):
        hirescam(baselines["3d"], torch.rand(1, 3, 28, 28, 28))


def test_upsampling_keeps_cells_in_place_and_non_negative():
    # grad-cam 1.5.x zooms with a corner-aligned cubic spline: this cell would peak at voxel (0, 27, 0) and
    # ring below zero; trilinear on voxel centres keeps the peak inside the cell's own octant
    cam = np.zeros((1, 2, 2, 2), dtype=np.float32)
    cam[0, 0, 1, 0] = 1.0
    up = upsample_cam(cam, (28, 28, 28))[0]
    assert up.min() >= 0
    d, h, w = np.unravel_index(up.argmax(), up.shape)
    assert d < 14 and h >= 14 and w < 14 and (d, h, w) != (0, 27, 0)
    assert up[:14, 14:, :14].sum() > up.sum() / 2


def test_class_target_explains_the_chosen_or_predicted_class():
    pos, neg = torch.tensor([2.0]), torch.tensor([-3.0])
    assert ClassTarget()(pos).item() == 2.0 and ClassTarget()(neg).item() == 3.0  # predicted: always positive
    assert ClassTarget(1)(neg).item() == -3.0 and ClassTarget(0)(pos).item() == -2.0
    multi = torch.tensor([0.1, 2.0, -1.0])
    assert ClassTarget()(multi).item() == 2.0 and ClassTarget(2)(multi).item() == -1.0
    with pytest.raises(ValueError, match="classes 0 and 1"):
        ClassTarget(2)(pos)


# ----------------------------------------------------------------------------- figures


def test_figure3_panels_name_the_peak_slice_and_cam_peak(tmp_path):
    volume = np.random.default_rng(0).random((1, 10, 12, 14)).astype(np.float32)
    profiles = {"axial": np.full(10, 0.01), "coronal": np.full(12, 0.01), "sagittal": np.full(14, 0.01)}
    profiles["sagittal"][5] = 0.5
    cam = np.zeros((10, 12, 14))
    cam[7, 3, 9] = 1.0
    fig = figure3(volume, profiles, cam, title="t", save=tmp_path / "f.png")
    titles = [ax.get_title() for ax in fig.axes]
    assert "highest attention: sagittal slice 5 (weight 0.500)" in titles
    assert "HiResCAM (3D) peak: axial slice 7" in titles and "middle axial slice (5)" in titles
    assert (tmp_path / "f.png").stat().st_size > 0
    heads = head_figure({k: np.tile(v, (8, 1)) for k, v in profiles.items()})
    assert len([ax for ax in heads.axes if ax.get_title()]) == 3
    with pytest.raises(ValueError, match="coronal attention has 11 values but the volume has 12"):
        figure3(volume, {**profiles, "coronal": np.ones(11)})


def test_lesion_figure_marks_the_lesion_slices_and_the_most_attended_one(tmp_path):
    volume = np.random.default_rng(0).random((1, 10, 12, 14)).astype(np.float32)
    profiles = {"axial": np.full(10, 0.01), "coronal": np.full(12, 0.01), "sagittal": np.full(14, 0.01)}
    profiles["coronal"][4] = 0.3
    mask = np.zeros((10, 12, 14), dtype=bool)
    mask[2:4, 4:6, 7] = True
    fig = lesion_figure(volume, profiles, mask, save=tmp_path / "l.png")
    assert fig.axes[0].get_title() == "most attended: coronal slice 4" and (tmp_path / "l.png").stat().st_size > 0
    shaded = [len(ax.patches) - len(profiles[name]) for ax, name in zip(fig.axes[1:], ("axial", "coronal", "sagittal"))]
    assert shaded == [2, 2, 1]  # one red band per slice that cuts the lesion
    with pytest.raises(ValueError, match="mask of shape"):
        lesion_figure(volume, profiles, mask[:5])


def test_pointing_figure_puts_hit_rate_beside_chance():
    summary = pd.DataFrame(
        {
            "method": ["attention", "attention", "random"],
            "explanation": ["slice", "slice", "random map"],
            "axis": ["all", "axial", "all"],
            "level": ["slice", "slice", "voxel"],
            "hit_rate": [0.9, 0.6, 0.1],
            "hit_rate_ci_low": [0.8, 0.4, 0.0],
            "hit_rate_ci_high": [1.0, 0.8, 0.2],
            "hit_chance": [0.25, 0.25, 0.01],
        }
    )
    ax = pointing_figure(summary).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["all axes", "axial"]
    assert [round(b.get_height(), 2) for b in ax.patches] == [0.9, 0.6, 0.25, 0.25]
    with pytest.raises(ValueError, match="no slice-level rows"):
        pointing_figure(summary[summary.level == "voxel"])


# ----------------------------------------------------------------------------- pointing game


def lesion_case() -> tuple[np.ndarray, SliceLayout]:
    masks = np.zeros((2, 6, 6, 6), dtype=bool)
    masks[:, 2, 3, 4] = True  # lesion only in axial slice 2, coronal slice 3, sagittal slice 4
    return masks, SliceLayout.for_shape((6, 6, 6))


def test_slice_pointing_hits_when_attention_peaks_on_the_lesion():
    masks, layout = lesion_case()
    on = np.full((2, 18), 0.5 / 17)
    on[:, 2] = 0.5  # axial slice 2: through the lesion
    off = np.full((2, 18), 0.5 / 17)
    off[:, 6 + 5] = 0.5  # coronal slice 5: beside it
    assert slice_pointing(on, layout, masks)["hit"].tolist() == [1.0, 1.0]
    assert slice_pointing(off, layout, masks)["hit"].tolist() == [0.0, 0.0]
    assert slice_pointing(off, layout, masks, axis="axial")["hit"].tolist() == [0.0, 0.0]  # uniform: first slice
    scores = slice_pointing(on, layout, masks)
    np.testing.assert_allclose(scores["mass"], 0.5 + 2 * 0.5 / 17)
    np.testing.assert_allclose(scores["mass_chance"], 3 / 18)
    axial = slice_pointing(on, layout, masks, axis="axial")  # mass renormalised within the axis
    np.testing.assert_allclose(axial["mass"], 0.5 / (0.5 + 5 * 0.5 / 17))
    np.testing.assert_allclose(axial["hit_chance"], 1 / 6)
    with pytest.raises(ValueError, match="some masks are empty"):
        slice_pointing(on, layout, np.zeros_like(masks))


def test_voxel_pointing_with_tolerance():
    masks, _ = lesion_case()
    inside = np.zeros((2, 6, 6, 6))
    inside[:, 2, 3, 4] = 1.0
    near = np.zeros((2, 6, 6, 6))
    near[:, 2, 3, 2] = 1.0  # two voxels from the lesion along W
    assert voxel_pointing(inside, masks)["hit"].tolist() == [1.0, 1.0]
    assert voxel_pointing(inside, masks)["mass"].tolist() == [1.0, 1.0]
    assert voxel_pointing(near, masks)["hit"].tolist() == [0.0, 0.0]
    assert voxel_pointing(near, masks, tolerance=1)["hit"].tolist() == [0.0, 0.0]
    assert voxel_pointing(near, masks, tolerance=2)["hit"].tolist() == [1.0, 1.0]
    assert voxel_pointing(near, masks, tolerance=2)["hit_chance"][0] == pytest.approx(5 * 5 * 4 / 216)  # W clipped at 5
    assert voxel_pointing(np.zeros((2, 6, 6, 6)), masks)["mass"].tolist() == [0.0, 0.0]  # blank map


def test_peaks_resolve_plateaus_to_their_centre_and_blank_maps_point_nowhere():
    masks = np.zeros((1, 28, 28, 28), dtype=bool)
    masks[0, 3, 3, 3] = True
    plateau = np.zeros((1, 28, 28, 28))
    plateau[0, :7, :7, :7] = 1.0  # an upsampled 2x2x2 CAM's corner cell: first-in-memory would say (0, 0, 0)
    assert peak_voxels(plateau).tolist() == [[3, 3, 3]]
    assert voxel_pointing(plateau, masks)["hit"].tolist() == [1.0]
    corner = np.zeros((1, 28, 28, 28), dtype=bool)
    corner[0, 0, 0, 0] = True
    assert peak_voxels(np.ones((1, 28, 28, 28))).tolist() == [[-1, -1, -1]]
    assert voxel_pointing(np.ones((1, 28, 28, 28)), corner)["hit"].tolist() == [0.0]  # blank: a miss


def test_summary_pools_seeds_with_bootstrap_over_volumes():
    rows = [
        {
            "method": e,
            "explanation": "voxel sum",
            "axis": "all",
            "level": "voxel",
            "tolerance": 0,
            "seed": s,
            "volume": v,
            "label": 1,
            "hit": float(hit),
            "mass": 0.1 * s,
            "hit_chance": 0.2,
            "mass_chance": 0.05,
        }
        for e, hits in (("good", [1, 1, 1, 1]), ("mixed", [1, 0, 1, 0]))
        for s in (0, 1)
        for v, hit in enumerate(hits)
    ]
    table = summarize_pointing(pd.DataFrame(rows), n_boot=200)
    good, mixed = table.set_index("method").loc["good"], table.set_index("method").loc["mixed"]
    assert good["hit_rate"] == 1.0 and good["hit_rate_ci_low"] == 1.0
    assert good["n_seeds"] == 2 and good["n_volumes"] == 4
    assert mixed["hit_rate"] == 0.5 and mixed["hit_rate_ci_low"] < 0.5 < mixed["hit_rate_ci_high"]
    assert good["mass"] == pytest.approx(0.05) and good["mass_std"] == pytest.approx(np.std([0, 0.1], ddof=1))
    assert good["hit_chance"] == pytest.approx(0.2)
    assert bootstrap_ci(np.arange(10.0), seed=3) == bootstrap_ci(np.arange(10.0), seed=3)
    with pytest.raises(ValueError, match="lacks column"):
        pool_seeds(pd.DataFrame({"x": [1]}), "hit", ["explanation"])


# ----------------------------------------------------------------------------- deletion


def test_blanking_changes_exactly_the_chosen_slices():
    x = torch.rand(2, 1, 5, 6, 7) + 0.5
    layout = SliceLayout.for_shape((5, 6, 7))
    tokens = np.array([[1, 5 + 2], [5 + 6 + 3, 0]])  # vol 0: axial 1, coronal 2; vol 1: sagittal 3, axial 0
    out = blank_slices(x, tokens, layout)
    expected = torch.zeros_like(x, dtype=torch.bool)
    expected[0, :, 1], expected[0, :, :, 2] = True, True
    expected[1, :, :, :, 3], expected[1, :, 0] = True, True
    assert torch.equal(out == 0, expected)
    assert torch.equal(out[~expected], x[~expected])
    assert (x > 0).all()  # the input is left alone


def test_class_probability_keeps_the_class_predicted_before_deletion():
    p, classes = class_probability(torch.tensor([[2.0], [-1.0]]))
    assert classes.tolist() == [1, 0]
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    np.testing.assert_allclose(p, [sigmoid(2.0), 1 - sigmoid(-1.0)], rtol=1e-6)
    after, _ = class_probability(torch.tensor([[-2.0], [1.0]]), classes)  # both flipped by the deletion
    np.testing.assert_allclose(after, 1 - p, rtol=1e-6)
    multi, cls = class_probability(torch.tensor([[0.0, 3.0, 0.0]]))
    assert cls.tolist() == [1] and multi[0] == pytest.approx(np.exp(3) / (np.exp(3) + 2))


def test_random_slices_are_seeded_distinct_and_nested():
    a = random_tokens(30, 8, [0, 1, 2], repeat=0, seed=5)
    assert a.shape == (3, 8) and all(len(set(row)) == 8 for row in a)
    np.testing.assert_array_equal(a, random_tokens(30, 8, [0, 1, 2], repeat=0, seed=5))
    np.testing.assert_array_equal(a[1:, :4], random_tokens(30, 4, [1, 2], repeat=0, seed=5))  # batch-independent
    assert not np.array_equal(a, random_tokens(30, 8, [0, 1, 2], repeat=1, seed=5))


class SliceStats(nn.Module):
    """A tiny slice encoder whose features (mean and max intensity, projected) move when a slice is blanked."""

    in_channels, out_features = 1, 8

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(2, self.out_features)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        return 20 * self.proj(torch.stack([slices.mean((1, 2, 3)), slices.amax((1, 2, 3))], dim=1))


@pytest.fixture(scope="module")
def stats_model():
    torch.manual_seed(0)
    return Model25D(SliceStats(), AttentionPool(8), num_outputs=1).eval()


def test_deletion_table_shape_and_values(stats_model, tiny_data):
    per_repeat, summary = deletion_test(stats_model, tiny_data, ks=(1, 2), repeats=2, batch_size=3, n_boot=50)
    assert len(per_repeat) == 1 + 2 * (1 + 2)
    assert list(summary[["selection", "k"]].itertuples(index=False, name=None)) == [
        ("none", 0),
        ("attention", 1),
        ("random", 1),
        ("attention", 2),
        ("random", 2),
    ]
    assert summary.set_index(["selection", "k"]).loc[("random", 2), "repeats"] == 2
    assert {"prob_drop", "prob_drop_std", "prob_drop_ci_low", "auc", "acc"} <= set(summary.columns)
    assert (summary["n"] == 4).all() and summary.loc[0, "prob_drop"] == 0.0
    # recompute two entries by hand: top-2 attention slices and repeat 1 of the random slices
    x = torch.as_tensor(np.asarray(tiny_data.volumes))
    att = slice_attention(stats_model, x)
    p0 = torch.sigmoid(torch.as_tensor(att.logits[:, 0]))
    predicted = p0 > 0.5
    for selection, repeat, tokens in (
        ("attention", 0, np.argsort(-att.weights, axis=1)[:, :2]),
        ("random", 1, random_tokens(att.layout.num_tokens, 2, range(4), 1, 0)),
    ):
        with torch.no_grad():
            p = torch.sigmoid(stats_model(blank_slices(x, tokens, att.layout))[:, 0])
        drop = torch.where(predicted, p0 - p, (1 - p0) - (1 - p)).mean().item()
        row = per_repeat.query(f"selection == '{selection}' and k == 2 and repeat == {repeat}").iloc[0]
        assert row["prob_drop"] == pytest.approx(drop, abs=1e-7)
        assert selection == "random" or drop > 1e-3  # blanking the two most attended slices moves the prediction
    with pytest.raises(ValueError, match="no attention weights"):
        deletion_test(build_model("mean"), tiny_data, ks=(1,), repeats=1)
    with pytest.raises(ValueError, match="k values must lie in 1..36"):
        deletion_test(stats_model, tiny_data, ks=(0, 2))


def test_deletion_on_real_adrenal_volumes(stats_model, medmnist_root):
    data = load_dataset("adrenal", "test", root=medmnist_root)
    per_repeat, summary = deletion_test(stats_model, data, ks=(1, 8), repeats=3, max_volumes=24, n_boot=50)
    assert len(per_repeat) == 1 + 2 * (1 + 3) and (summary["n"] == 24).all()
    assert summary["auc"].notna().all()  # both classes among the first 24 test volumes
    assert summary.query("k == 8")["prob_drop"].abs().max() > 1e-4  # blanking 8 slices moves the prediction


# ----------------------------------------------------------------------------- runs and CLI


def fake_run(folder, method: str):
    """A run folder as 'lib25d train' writes it, with random weights: no training in tests."""
    config = RunConfig(
        dataset="synthetic", size=TINY_SIZE, method=method, weights=None, epochs=1, dataset_options=dict(TINY)
    )
    torch.manual_seed(0)
    model = build_model(method)
    folder.mkdir()
    torch.save({"config": config.to_dict(), "model": model.state_dict()}, folder / "checkpoint.pt")
    return folder


def test_cli_explain_writes_figures_and_tables(tmp_path, capsys):
    with pytest.raises(SystemExit):  # every generated option's help formats (a "%" once broke it)
        build_explain_help()
    assert "--n-boot" in capsys.readouterr().out
    runs = {m: fake_run(tmp_path / m, m) for m in ("attention", "3d", "acs")}
    parser = argparse.ArgumentParser(prog="lib25d")
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "explain"
    args = parser.parse_args(
        [
            "explain",
            "--attention-run",
            str(runs["attention"]),
            "--run-3d",
            str(runs["3d"]),
            "--run-acs",
            str(runs["acs"]),
            "--deletion-run",
            str(runs["attention"]),
            "--out",
            str(out),
            "--max-volumes",
            "2",
            "--ks",
            "1",
            "2",
            "--repeats",
            "1",
            "--n-boot",
            "50",
            "--device",
            "cpu",
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "pointing" in printed and "deletion" in printed and "hirescam" in printed
    volume = int(np.flatnonzero(load_dataset("synthetic", "test", size=TINY_SIZE, **TINY).masks.any(axis=(1, 2, 3)))[0])
    for name in (
        f"figure3_volume{volume}.png",
        f"heads_volume{volume}.png",
        "pointing.csv",
        "pointing.json",
        "deletion.csv",
        "deletion.json",
        "sparsity.csv",
        "pointing_per_volume.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    pointing = pd.read_csv(out / "pointing.csv")
    assert set(zip(pointing["method"], pointing["explanation"], pointing["axis"])) == {
        ("attention", "slice", "all"),
        ("attention", "slice", "axial"),
        ("attention", "slice", "coronal"),
        ("attention", "slice", "sagittal"),
        ("attention", "voxel sum", "all"),
        ("attention", "voxel product", "all"),
        ("3d", "hirescam", "all"),
        ("acs", "hirescam", "all"),
        ("random", "random map", "all"),
    }
    assert (pointing["n_volumes"] == 2).all()
    assert len(json.loads((out / "deletion.json").read_text())) == 1 + 2 * 2
    with pytest.raises(ValueError, match="holds a '3d' run where a 'acs' run is expected"):
        args.func(
            parser.parse_args(
                [
                    "explain",
                    "--attention-run",
                    str(runs["attention"]),
                    "--run-acs",
                    str(runs["3d"]),
                    "--out",
                    str(out),
                    "--no-figures",
                    "--max-volumes",
                    "1",
                ]
            )
        )
    with pytest.raises(FileNotFoundError, match="no checkpoint.pt"):
        args.func(parser.parse_args(["explain", "--attention-run", str(tmp_path), "--out", str(out)]))


def build_explain_help():
    parser = argparse.ArgumentParser(prog="lib25d")
    register(parser.add_subparsers(dest="command"))
    parser.parse_args(["explain", "--help"])
