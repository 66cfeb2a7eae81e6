"""The spatial method (issue 27): token boxes partition every axis's volume, weights and the voxel map sum to 1,
the map follows a planted lesion, every speed switch trains (float64 comparisons: exact up to summation order on
any processor), the cached warm-up is exact, and ``lib25d train --method spatial`` runs from the command line."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from test_perf import TINY as PERF_TINY
from torch import nn

from lib25d.cli import main
from lib25d.data import load_dataset
from lib25d.explain import Settings, attention_pointing, explain_runs, slice_attention, sparsity_table
from lib25d.explain.voxels import map_agreement, spatial_map, token_hirescam, top_voxels, voxel_deletion
from lib25d.models import METHODS, build_model
from lib25d.models.fast import apply
from lib25d.models.reducers import AttentionPool
from lib25d.models.spatial import SpatialModel25D, build, cell_edges, cut_patches, parse_tokens
from lib25d.run import RunConfig, load_run, train

pytestmark = pytest.mark.usefixtures("one_thread")
DESIGNS = ["layer3", "layer2", "patch:4", "patch:3"]
OFF = dict(channels_last=False, tiny_convs=False, fold_adapter=False, dedupe_slices=False, checkpointing=False)


# ----------------------------------------------------------------------------- tokens and their boxes


def test_cell_edges_cover_every_side_once():
    for n in range(1, 30):
        for g in range(1, n + 1):
            edges = np.asarray(cell_edges(n, g))
            sizes = np.diff(edges)
            assert edges[0] == 0 and edges[-1] == n and sizes.min() >= 1 and sizes.max() - sizes.min() <= 1
    with pytest.raises(ValueError, match="cannot cut 3 voxels into 4"):
        cell_edges(3, 4)


@pytest.mark.parametrize("shape", [(28, 28, 28), (13, 17, 11)])
@pytest.mark.parametrize("tokens", DESIGNS)
def test_token_boxes_partition_each_axis(tokens, shape):
    torch.manual_seed(0)
    model = build("resnet18", None, 1, 1, tokens=tokens).eval()
    with torch.no_grad():
        out = model.forward_with_attention(torch.rand(1, 1, *shape))
    grid = out.grid
    assert out.token_weights.shape == (1, grid.num_tokens) and grid.slices == out.layout
    start = 0
    for count in grid.counts:  # each axis's tokens cover every voxel exactly once
        cover = np.zeros(shape, dtype=int)
        for t in range(start, start + count):
            cover[grid.box(t)] += 1
        assert (cover == 1).all()
        start += count
    with pytest.raises(IndexError):
        grid.box(grid.num_tokens)


@pytest.mark.parametrize("tokens", ["layer3", "patch:3"])
def test_weights_and_voxel_map_sum_to_one_per_volume_and_axis(tokens):
    torch.manual_seed(0)
    model = build("resnet18", None, 1, 3, tokens=tokens).double().eval()
    with torch.no_grad():
        out = model.forward_with_attention(torch.rand(2, 1, 13, 17, 11, dtype=torch.float64))
    ones = torch.ones(2, dtype=torch.float64)
    torch.testing.assert_close(out.token_weights.sum(-1), ones)
    torch.testing.assert_close(out.weights.sum(-1), ones)
    torch.testing.assert_close(out.head_weights.sum(-1), torch.ones(2, 8, dtype=torch.float64))
    torch.testing.assert_close(out.voxels.sum((1, 2, 3)), ones)
    assert out.voxels.shape == (2, 13, 17, 11) and (out.voxels >= 0).all()
    for axis_map, share in zip(out.grid.voxel_maps(out.token_weights), out.by_axis().values()):
        torch.testing.assert_close(axis_map.sum((1, 2, 3)), share.sum(-1))  # each axis: its share of the mass
    # the map, rebuilt token by token: each weight spread evenly over its box
    rebuilt = torch.zeros_like(out.voxels)
    for t in range(out.grid.num_tokens):
        box = out.grid.box(t)
        size = np.prod([s.stop - s.start for s in box])
        rebuilt[(slice(None), *box)] += out.token_weights[:, t, None, None, None] / size
    torch.testing.assert_close(out.voxels, rebuilt, rtol=1e-12, atol=1e-15)
    assert [tuple(v.shape) for v in out.by_axis().values()] == [(2, 13), (2, 17), (2, 11)]


def test_patches_are_the_cells_of_the_slice():
    x = torch.arange(2 * 1 * 7 * 9, dtype=torch.float64).reshape(2, 1, 7, 9) + 1
    patches, grid = cut_patches(x, 3)
    rows, cols = cell_edges(7, 3), cell_edges(9, 3)
    assert grid == (3, 3) and patches.shape == (2 * 9, 1, 3, 3)
    for m in range(2):
        for i in range(3):
            for j in range(3):
                cell = x[m, :, rows[i] : rows[i + 1], cols[j] : cols[j + 1]]
                patch = patches[m * 9 + i * 3 + j]
                torch.testing.assert_close(patch[:, : cell.shape[1], : cell.shape[2]], cell)
                assert patch.sum() == cell.sum()  # the rest is zero padding
    even, _ = cut_patches(x[..., :6, :9], 3)
    torch.testing.assert_close(even[4], x[0, :, 2:4, 3:6])


def test_bad_token_designs_and_backbones_are_refused():
    assert parse_tokens("layer2") == ("layer2", None) and parse_tokens("patch:4") == (None, 4)
    for bad in ("layer5", "patch:0", "patch:x", "grid"):
        with pytest.raises(ValueError, match="unknown spatial tokens"):
            parse_tokens(bad)
    with pytest.raises(ValueError, match="need a torchvision ResNet backbone.*patch:G"):
        build("mobilenet_v3_small", None, 1, 1, tokens="layer3")


# ----------------------------------------------------------------------------- behaves like attention


def test_registry_and_slice_weight_consumers():
    m = METHODS["spatial"]
    assert m.weighs and m.family == "2.5d"
    torch.manual_seed(0)
    model = build_model("spatial", num_classes=2)
    assert isinstance(model, SpatialModel25D) and model.encoder.out_features == 128  # layer2 tokens
    x = torch.rand(3, 1, 16, 16, 16)
    att = slice_attention(model, x)  # the consumers of slice weights: explain, Figure 3, the book
    assert att.weights.shape == (3, 48) and att.head_weights.shape == (3, 8, 48)
    np.testing.assert_allclose(att.weights.sum(-1), 1, rtol=1e-5)
    assert len(sparsity_table(att, x)) == 3
    with pytest.raises(ValueError, match="valid: .*spatial"):
        build_model("spatia")


class CellMax(nn.Module):
    """A constructed slice encoder: per cell of a GxG grid, (max intensity, 1, 0, ...) as a feature map."""

    in_channels, out_features = 1, 8

    def __init__(self, g: int):
        super().__init__()
        self.pool = nn.AdaptiveMaxPool2d(g)

    def forward(self, slices: torch.Tensor) -> torch.Tensor:
        peak = self.pool(slices)
        return torch.cat([peak, torch.ones_like(peak), torch.zeros_like(peak).expand(-1, 6, -1, -1)], dim=1)


class PatchMax(CellMax):
    """The same features for whole patches (the patch design's encoder returns one vector per patch)."""

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return super().forward(patches)[:, :, 0, 0]


def bright_attention(pool: AttentionPool, beta: float = 200.0) -> AttentionPool:
    """The paper's pooling with weights set so that every head scores a token by its max intensity."""
    with torch.no_grad():
        w, b = pool.attn.in_proj_weight, pool.attn.in_proj_bias
        w.zero_(), b.zero_()
        b[:8] = 1.0  # query: the same constant in every head (head width 1)
        w[8:16, 0] = beta  # key: the token's max intensity
        w[16:24] = torch.eye(8)
    return pool


@pytest.mark.parametrize("design", ["map", "patch"])
def test_voxel_map_follows_a_planted_lesion(design):
    model = (
        SpatialModel25D(
            CellMax(4) if design == "map" else PatchMax(1),
            bright_attention(AttentionPool(8)),
            1,
            patches=None if design == "map" else 4,
        )
        .double()
        .eval()
    )
    for centre in [(5, 20, 9), (22, 3, 17), (13, 13, 25)]:
        x = torch.full((1, 1, 28, 28, 28), 0.3, dtype=torch.float64)
        d, h, w = centre
        x[0, 0, d - 1 : d + 2, h - 1 : h + 2, w - 1 : w + 2] = 1.0  # a bright 3^3 lesion
        voxels = spatial_map(model, x)[0]
        peak = np.unravel_index(voxels.argmax(), voxels.shape)
        assert max(abs(p - c) for p, c in zip(peak, centre)) <= 1, (peak, centre)
        inside = np.zeros_like(voxels, dtype=bool)
        inside[d - 1 : d + 2, h - 1 : h + 2, w - 1 : w + 2] = True
        assert voxels[inside].sum() > 20 * inside.mean()  # far more mass on the lesion than its share of voxels


# ----------------------------------------------------------------------------- speed switches


def _step(model, x):
    model.zero_grad()
    out = model(x)
    out.square().sum().backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    return out.detach(), grads


SWITCHES = {
    "channels_last": dict(channels_last=True),
    "tiny_convs": dict(tiny_convs=True),
    "fold_adapter": dict(fold_adapter=True),
    "dedupe_slices": dict(dedupe_slices=True),
    "checkpointing": dict(checkpointing=True),
    "all": dict(channels_last=True, tiny_convs=True, fold_adapter=True, dedupe_slices=True),
}


@pytest.mark.parametrize("tokens,switch", [("layer2", s) for s in SWITCHES] + [("patch:2", "all")])
def test_every_speed_switch_trains_the_same_function(tokens, switch):
    """float64, train mode, chunks of 8 slices for checkpointing: outputs, gradients and BatchNorm statistics
    equal the plain model's (deduplication meets the empty background slices and patches)."""
    torch.manual_seed(0)
    plain = (
        apply(build("resnet18", None, 1, 1, chunk_size=8 if switch == "checkpointing" else None, tokens=tokens), **OFF)
        .double()
        .train()
    )
    fast = apply(copy.deepcopy(plain), **{**OFF, **SWITCHES[switch]})
    x = torch.zeros(2, 1, 12, 14, 12, dtype=torch.float64)  # layer2: 2x2 maps; empty slices and patches around
    x[:, :, 3:9, 4:10, 3:8] = torch.rand(2, 1, 6, 6, 5, dtype=torch.float64)
    a, ga = _step(plain, x)
    b, gb = _step(fast, x)
    torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gb, ga, rtol=1e-8, atol=1e-12 * float(ga.abs().max()))
    for (name, u), v in zip(plain.state_dict().items(), fast.state_dict().values()):
        torch.testing.assert_close(v, u, rtol=1e-9, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    if switch in ("dedupe_slices", "all"):
        unique, total = fast.encoder.last_dedupe
        assert unique < total


def test_compile_switch_runs(monkeypatch):
    """``compile``: the backbone goes through torch.compile (dynamo traces the stage map); the eager backend here,
    so the test does not wait for a C++ build."""
    calls = []
    original = nn.Module.compile

    def eager(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return original(self, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(nn.Module, "compile", eager)
    torch.manual_seed(0)
    model = build_model("spatial", speed=RunConfig(compile=True)).train()
    x = torch.rand(2, 1, 12, 12, 12)
    model(x).sum().backward()
    assert calls == ["StageMap"] and model.encoder.network.conv1.weight.grad is not None


TINY = {**PERF_TINY, "method": "spatial", "device": "cpu"}  # test_perf's cached warm-up run, spatial


def test_cached_warmup_is_exact_for_spatial(tmp_path):
    cached = train(RunConfig(**TINY), tmp_path / "cached", quiet=True)
    plain = train(RunConfig(**TINY, cache_warmup_features=False), tmp_path / "plain", quiet=True)
    assert [h["cached_features"] for h in cached["history"]] == [True, True]
    assert not any(h["cached_features"] for h in plain["history"])
    np.testing.assert_allclose(
        [h["train_loss"] for h in cached["history"]], [h["train_loss"] for h in plain["history"]], rtol=1e-6, atol=0
    )


# ----------------------------------------------------------------------------- command line and measurement


def test_cli_trains_spatial_and_its_map_reads_back(tmp_path, capsys):
    out = tmp_path / "run"
    command = "train --dataset synthetic --size 16 --method spatial --weights none --epochs 2 --warmup-epochs 1"
    options = "--batch-size 4 --device cpu --option n_train=8 --option n_val=4 --option n_test=6 --quiet"
    assert main([*command.split(), *options.split(), "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["method"] == "spatial" and len(result["history"]) == 2
    run = load_run(out, device="cpu")
    data = load_dataset("synthetic", "test", size=16, n_train=8, n_val=4, n_test=6)
    x = np.asarray(data.volumes)
    maps = spatial_map(run.model, x)
    np.testing.assert_allclose(maps.sum((1, 2, 3)), 1, rtol=1e-6)
    rows = attention_pointing(run.model, data, name="spatial")  # the slice-weight benchmark reads it as attention's
    assert {("spatial", "slice"), ("spatial", "voxel sum"), ("spatial", "voxel map")} <= set(
        zip(rows.method, rows.explanation)
    )
    cam = token_hirescam(run.model, x, category=1)
    assert cam.shape == maps.shape and (cam >= 0).all()
    agree = map_agreement(maps, maps, within=x[:, 0] > 0.01)
    assert np.allclose(agree["spearman"], 1) and np.allclose(agree["spearman_within"], 1)
    assert np.allclose(agree["top_overlap"], 1) and (agree["peak_distance"] == 0).all()
    flipped = map_agreement(maps, -maps + maps.max())  # reversed ranks: -1, no shared top voxel
    assert np.allclose(flipped["spearman"], -1) and (flipped["top_overlap"] < 0.2).all()


def test_top_voxels_break_ties_at_random_and_deletion_counts_voxels():
    maps = np.zeros((2, 4, 4, 4))
    maps[:, 1, 1, 1] = 2.0
    maps[:, :2, :2, :2] += 1.0  # a plateau of 7 voxels below the peak
    top = top_voxels(maps, 4, [0, 1])
    assert (top[:, 0] == np.ravel_multi_index((1, 1, 1), (4, 4, 4))).all()
    plateau = set(np.flatnonzero(maps[0].ravel() == 1.0))
    assert set(top[0, 1:]) <= plateau and set(top[1, 1:]) <= plateau and set(top[0]) != set(top[1])
    model = SpatialModel25D(CellMax(2), bright_attention(AttentionPool(8)), 1).eval()
    with torch.no_grad():  # the logit is the attended tokens' max intensity
        model.reducer.attn.out_proj.weight.copy_(torch.eye(8)), model.reducer.attn.out_proj.bias.zero_()
        model.head.weight.zero_(), model.head.bias.zero_()
        model.head.weight[0, 0] = 1.0
    x = torch.full((2, 1, 12, 12, 12), 0.5)
    x[:, :, 2:5, 2:5, 2:5] = 1.0
    rows = voxel_deletion(
        model, x, spatial_map(model, x), classes=[1, 1], volume_ids=[3, 4], fractions=[0.05], repeats=2
    )
    assert list(rows["selection"]) == ["map"] * 2 + ["random"] * 2
    drops = rows.set_index("selection")["logit_drop"]
    assert (drops["map"] > drops["random"].max()).all()  # the bright voxels carry the logit


def test_explain_measures_every_voxel_map_and_the_alignment(tmp_path):
    """``lib25d explain`` on a spatial run and a 3d run of the synthetic set: the spatial run's own map and the
    HiResCAM of its encoder in the pointing game, voxel deletion of both runs' maps, and the alignment table."""
    runs = {}
    for method in ("spatial", "3d"):
        config = RunConfig(**{**TINY, "method": method, "epochs": 1, "warmup_epochs": 0})
        train(config, tmp_path / method, quiet=True)
        runs[method] = tmp_path / method
    settings = Settings(max_volumes=4, n_boot=50, fractions=[0.02, 0.1], repeats=1, batch_size=4)
    tables = explain_runs([runs["spatial"]], runs_3d=[runs["3d"]], settings=settings)
    pointing = set(zip(tables["pointing"].method, tables["pointing"].explanation))
    assert {("spatial", "voxel map"), ("spatial", "hirescam"), ("3d", "hirescam"), ("random", "random map")} <= pointing
    deletion = tables["voxel_deletion"]
    assert set(zip(deletion.method, deletion.explanation)) == {("spatial", "voxel map"), ("3d", "hirescam")}
    per_volume = tables["voxel_deletion_per_volume"]
    lesions = per_volume.volume.nunique()  # the test split's lesion volumes (at most max_volumes)
    assert 1 <= lesions <= 4 and set(deletion.fraction) == {0.02, 0.1} and (deletion.n_volumes == lesions).all()
    np.testing.assert_allclose(deletion.excess_drop, deletion.map_drop - deletion.random_drop, atol=1e-9)
    assert len(per_volume) == 2 * 2 * 2 * lesions  # runs x fractions x (map, random) x volumes
    alignment = tables["alignment"]
    measures = {"spearman", "spearman_within", "top_overlap", "peaks_within_2"}
    assert set(alignment.method) == {"spatial"} and set(alignment.measure) == measures
    assert alignment["mean"].between(-1, 1).all()
