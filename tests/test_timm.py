"""timm backbones (``timm:<name>``) with random weights, offline: a convolutional one and a ViT; and the
gated attention-MIL reducer trained end to end through the CLI."""

from __future__ import annotations

import copy
import json
import socket

import pytest
import timm
import torch
from safetensors.torch import save_file

from lib25d.cli import main
from lib25d.explain import Settings, explain_runs
from lib25d.models import build_model
from lib25d.models.backbone import check_backbone
from lib25d.models.fast import apply
from lib25d.run import RunConfig

CONV, VIT = "timm:convnext_atto", "timm:test_vit"  # test_vit: timm's smallest ViT (patch 16, built for 160x160)
OFF = dict(channels_last=False, tiny_convs=False, fold_adapter=False, dedupe_slices=False, checkpointing=False)

pytestmark = pytest.mark.usefixtures("one_thread", "offline")


@pytest.fixture
def offline(monkeypatch):
    """No test here may reach the network: timm must never download."""

    def refuse(*args, **kwargs):
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("backbone", [CONV, VIT])
@pytest.mark.parametrize("side", [24, 32])
def test_forward_backward_and_feature_width(backbone, side):
    torch.manual_seed(0)
    model = build_model("attention", backbone=backbone, num_classes=3)
    net = model.encoder.network
    assert model.encoder.out_features == net.model.num_features
    x = torch.rand(2, 1, side, side, side)
    assert model.features(x).shape == (2, 3 * side, net.model.num_features)
    logits = model(x)
    assert logits.shape == (2, 3)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_vit_runs_at_the_slice_size_with_interpolated_position_embeddings():
    net = build_model("mean", backbone=VIT).encoder.network
    embed = net.model.patch_embed
    assert embed.dynamic_img_pad and net.model.dynamic_img_size and net.fixed is None and net.min_side == 0
    grids = []
    embed.register_forward_hook(lambda m, args, out: grids.append(tuple(out.shape[1:3])))  # NHWC when dynamic
    for side in (24, 32, 48):  # built for 160: position embeddings resampled to each grid, 24 padded to 32
        x = torch.rand(3, 3, side, side)
        assert net.fit(x) is x
        assert net(x).shape == (3, net.model.num_features)
    assert grids == [(2, 2), (2, 2), (3, 3)]


def test_convolutional_model_resizes_slices_below_its_stride():
    net = build_model("mean", backbone=CONV).encoder.network
    assert net.min_side == 32 and net.fixed is None  # ConvNeXt: 4 x 2 x 2 x 2; at 28 the last map would be 0x0
    assert net.fit(torch.rand(1, 3, 24, 24)).shape[-2:] == (32, 32)
    assert net.fit(torch.rand(1, 3, 16, 40)).shape[-2:] == (32, 80)  # scaled up, aspect kept
    x = torch.rand(1, 3, 40, 36)
    assert net.fit(x) is x


@pytest.mark.parametrize("backbone,suffix", [(CONV, ".pt"), (VIT, ".safetensors")])
def test_local_weights_file_reaches_the_encoder(tmp_path, backbone, suffix):
    name = backbone[5:]
    torch.manual_seed(7)
    state = timm.create_model(name).state_dict()  # with its classifier, as a checkpoint would have it
    path = tmp_path / f"{name}{suffix}"
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    torch.manual_seed(0)
    loaded = build_model("attention", backbone=backbone, weights=path).encoder.network.model.state_dict()
    assert loaded.keys() <= state.keys()
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_wrong_weights_and_imagenet_are_refused_in_one_line(tmp_path):
    wrong = tmp_path / "resnet10t.pt"
    torch.save(timm.create_model("resnet10t").state_dict(), wrong)
    with pytest.raises(ValueError, match="do not fit timm's convnext_atto") as err:
        build_model("attention", backbone=CONV, weights=wrong)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="timm backbones take weights from a local file") as err:
        build_model("attention", backbone=CONV, weights="imagenet")
    assert "\n" not in str(err.value) and "torch.save(timm.create_model('convnext_atto', pretrained=True)" in str(
        err.value
    )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("attention", backbone=CONV, weights=tmp_path / "missing.safetensors")


def test_unknown_timm_name_lists_close_matches(capsys, tmp_path):
    with pytest.raises(ValueError, match="unknown timm model 'convnext_atoo'; close matches: convnext_atto"):
        check_backbone("timm:convnext_atoo")
    with pytest.raises(ValueError, match="close matches: vit_tiny_patch16"):
        build_model("attention", backbone="timm:vit_tiny")
    assert (
        main(
            [
                "train",
                "--backbone",
                "timm:convnext_atoo",
                "--dataset",
                "synthetic",
                "--out",
                str(tmp_path / "r"),
                "--quiet",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "convnext_atto" in err and "timm.list_models()" in err


@pytest.mark.parametrize("method", ["3d", "acs"])
def test_volume_methods_refuse_timm(method):
    with pytest.raises(ValueError, match="torchvision ResNet-family backbone.*valid: resnet18.*2.5D methods only"):
        build_model(method, backbone=CONV)


def test_speed_switches_keep_the_numbers_on_timm_backbones():
    """Dedupe (no BatchNorm: a per-slice function in both modes), the folded adapter and the rest, float64."""
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 16, 20, 24, dtype=torch.float64)
    x[:, :, 4:10, 6:14, 5:15] = torch.rand(2, 1, 6, 8, 10, dtype=torch.float64)
    for backbone in (CONV, VIT):
        model = build_model("gated", backbone=backbone).double()
        plain = apply(copy.deepcopy(model), **OFF)
        fast = apply(
            copy.deepcopy(model),
            **{**OFF, "dedupe_slices": True, "fold_adapter": True, "channels_last": True, "tiny_convs": True},
        )
        assert fast.encoder.fold_stem is not None
        for mode in ("eval", "train"):
            a, b = getattr(plain, mode)(), getattr(fast, mode)()
            with torch.no_grad():
                torch.testing.assert_close(b(x), a(x), rtol=1e-10, atol=1e-12)
            unique, total = fast.encoder.last_dedupe
            assert unique < total, (backbone, mode)


def test_train_gated_with_a_timm_backbone_from_the_cli(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--dataset",
            "synthetic",
            "--size",
            "16",
            "--method",
            "gated",
            "--backbone",
            CONV,
            "--weights",
            "none",
            "--epochs",
            "1",
            "--warmup-epochs",
            "0",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--option",
            "n_train=8",
            "--option",
            "n_val=4",
            "--option",
            "n_test=4",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["method"] == "gated" and result["config"]["backbone"] == CONV
    assert 0 <= result["metrics"]["final"]["test"]["auc"] <= 1 and "timm" in result["environment"]["versions"]


def fake_run(folder, method: str):
    """A run folder as 'lib25d train' writes it, random weights (resnet18): no training."""
    config = RunConfig(
        dataset="synthetic",
        size=12,
        method=method,
        weights=None,
        epochs=1,
        dataset_options={"n_train": 4, "n_val": 4, "n_test": 4},
    )
    torch.manual_seed(0)
    folder.mkdir()
    torch.save({"config": config.to_dict(), "model": build_model(method).state_dict()}, folder / "checkpoint.pt")
    return folder


def test_gated_runs_are_explained_beside_attention(tmp_path):
    """Any reducer with slice weights is read like attention: its own pointing rows, one random map per seed."""
    runs = [fake_run(tmp_path / m, m) for m in ("attention", "gated")]
    tables = explain_runs(runs, settings=Settings(max_volumes=2, n_boot=20, device="cpu"))
    pointing = tables["pointing"]
    rows = set(zip(pointing.method, pointing.explanation, pointing.axis))
    assert {
        ("attention", "slice", "all"),
        ("gated", "slice", "all"),
        ("gated", "slice", "axial"),
        ("gated", "voxel sum", "all"),
    } <= rows
    per_volume = tables["pointing_per_volume"]
    assert (per_volume.method == "random").sum() == 2 * 2  # 2 volumes x 2 tolerances, not twice over
    assert set(tables["sparsity"]["method"]) == {"attention", "gated"}
    with pytest.raises(ValueError, match="'mean' run where a run with slice weights \\(attention, gated, spatial\\)"):
        explain_runs([fake_run(tmp_path / "mean", "mean")], settings=Settings(max_volumes=1, device="cpu"))
