"""The core models: shapes, attention, baselines, weights, parameter counts, chunking."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from lib25d.models import METHODS, build_model, count_parameters, set_encoder_trainable
from lib25d.models.backbone import backbone_network
from lib25d.models.baselines import convert_to_3d, convert_to_acs
from lib25d.models.slicing import SliceLayout, slice_axis

SHAPES = [(1, (28, 28, 28)), (3, (64, 64, 64)), (2, (12, 20, 16))]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("channels,spatial", SHAPES, ids=["28", "64x3ch", "noncubic"])
@pytest.mark.parametrize("num_classes", [2, 5])
def test_forward_backward(method, channels, spatial, num_classes):
    torch.manual_seed(0)
    model = build_model(method, in_channels=channels, num_classes=num_classes)
    x = torch.rand(2, channels, *spatial)
    logits = model(x)
    assert logits.shape == (2, 1 if num_classes == 2 else num_classes)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_every_registry_reference_names_code():
    """The registry names its code as strings (it imports no torch): each must resolve, to the right kind."""
    for name, method in METHODS.items():
        assert callable(method.build), name
        assert method.model is None or callable(method.model), name
        assert isinstance(method.build, type) == (method.family == "2.5d"), name  # reducer class vs converter


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="valid: attention, mean, max, lstm, transformer, gated, 3d, acs"):
        build_model("gru")
    with pytest.raises(ValueError, match="unknown backbone 'resnet7'; valid: resnet18"):
        build_model("attention", backbone="resnet7")


@pytest.mark.parametrize("spatial", [(28, 28, 28), (10, 14, 9)])
def test_attention_weights_sum_to_one_and_split_per_axis(spatial):
    model = build_model("attention", num_classes=3).eval()
    out = model.forward_with_attention(torch.rand(2, 1, *spatial))
    d, h, w = spatial
    assert out.weights.shape == (2, d + h + w)
    assert out.head_weights.shape == (2, 8, d + h + w)
    assert (out.weights >= 0).all() and (out.head_weights >= 0).all()
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(out.head_weights.sum(-1), torch.ones(2, 8))
    torch.testing.assert_close(out.head_weights.mean(1), out.weights)
    axes = out.by_axis()
    assert [tuple(v.shape) for v in axes.values()] == [(2, d), (2, h), (2, w)]
    assert list(axes) == ["axial", "coronal", "sagittal"]
    assert out.by_axis(per_head=True)["coronal"].shape == (2, 8, h)


def test_gated_weights_sum_to_one_split_per_axis_and_learn():
    torch.manual_seed(0)
    model = build_model("gated", num_classes=2)
    out = model.forward_with_attention(torch.rand(2, 1, 10, 14, 9))
    assert out.weights.shape == (2, 33) and out.head_weights.shape == (2, 1, 33) and (out.weights >= 0).all()
    torch.testing.assert_close(out.weights.sum(-1), torch.ones(2))
    assert [tuple(v.shape) for v in out.by_axis().values()] == [(2, 10), (2, 14), (2, 9)]
    out.logits.sum().backward()
    for name in ("V", "U", "w"):  # the gate, the tanh branch and the scoring vector all learn
        assert getattr(model.reducer, name).weight.grad.abs().sum() > 0, name
    assert model.reducer.V.out_features == 128  # Ilse et al.'s hidden width


def test_no_attention_for_mean_says_so():
    out = build_model("mean").forward_with_attention(torch.rand(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match="HiResCAM"):
        out.by_axis()


def test_layout_maps_tokens_to_slices_and_back():
    layout = SliceLayout.for_shape((4, 5, 6))
    assert layout.num_tokens == 15
    assert layout.locate(0) == (0, 0) and layout.locate(4) == (1, 0) and layout.locate(14) == (2, 5)
    assert all(layout.token(*layout.locate(t)) == t for t in range(15))
    only = SliceLayout.for_shape((4, 5, 6), axes=(2,))
    assert only.locate(3) == (2, 3)
    with pytest.raises(IndexError):
        layout.locate(15)


def test_slices_are_the_volume_planes():
    x = torch.arange(2 * 1 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 1, 3, 4, 5)
    s1 = slice_axis(x, 1)  # (B*H, C, D, W)
    assert s1.shape == (8, 1, 3, 5)
    torch.testing.assert_close(s1[4 + 2], x[1, :, :, 2, :])  # batch 1, coronal slice 2
    torch.testing.assert_close(slice_axis(x, 2)[3], x[0, :, :, :, 3])


def test_token_order_matches_slices():
    """Token t must be the feature of the slice that ``layout.locate(t)`` names."""
    model = build_model("attention").eval()
    x = torch.rand(1, 1, 9, 10, 11)
    tokens, layout = model.features(x), model.layout(x)
    for t in (0, 8, 9, 18, 19, 29):
        axis, i = layout.locate(t)
        plane = x.select(2 + axis, i)
        torch.testing.assert_close(tokens[0, t], model.encoder(plane)[0], rtol=1e-4, atol=1e-5)


def test_subset_of_axes():
    model = build_model("attention", axes=(0,)).eval()
    out = model.forward_with_attention(torch.rand(1, 1, 16, 12, 12))
    assert out.weights.shape == (1, 16) and list(out.by_axis()) == ["axial"]


@pytest.mark.parametrize("method", ["attention", "3d", "acs"])
@pytest.mark.parametrize(
    "bad,match",
    [
        (torch.rand(1, 28, 28, 28), "5 dimensions|got 4 dimensions"),
        (torch.rand(1, 2, 28, 28, 28), "expects 1 channel"),
        (torch.rand(1, 1, 28, 4, 28), "too small"),
        (torch.full((1, 1, 16, 16, 16), float("nan")), "NaN"),
    ],
)
def test_bad_input_is_refused(method, bad, match):
    with pytest.raises(ValueError, match=match):
        build_model(method)(bad)


def _circular(model: nn.Module) -> nn.Module:
    """Wrap-around padding: removes the border effect that zero padding adds along depth."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)) and any(p > 0 for p in m.padding):
            m.padding_mode = "circular"
    return model


def test_inflated_3d_equals_2d_on_depth_constant_volume(resnet18_file):
    net2d, _ = backbone_network("resnet18", resnet18_file)
    net3d = convert_to_3d(backbone_network("resnet18", resnet18_file)[0])
    # fp64 compute; the inflated kernels (w / k) were still rounded to fp32, hence 1e-5
    net2d, net3d = _circular(net2d).eval().double(), _circular(net3d).eval().double()
    image = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    volume = image[:, :, None].expand(-1, -1, 16, -1, -1).contiguous()
    with torch.no_grad():
        torch.testing.assert_close(net3d(volume), net2d(image), rtol=1e-5, atol=1e-6)


def test_acs_keeps_every_pretrained_tensor(resnet18_file):
    net2d, _ = backbone_network("resnet18", resnet18_file)
    before = {k: v.clone() for k, v in net2d.state_dict().items()}
    acs = convert_to_acs(net2d)
    after = acs.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(after[key], value), key


def test_local_weights_reach_encoder_and_both_baselines(resnet18_file):
    reference = torch.load(resnet18_file)
    body = {k: v for k, v in reference.items() if not k.startswith("fc.")}
    enc = build_model("attention", weights=resnet18_file).encoder.network.state_dict()
    acs = build_model("acs", weights=resnet18_file).encoder[1].state_dict()
    i3d = build_model("3d", weights=resnet18_file).encoder[1].state_dict()
    for key, value in body.items():
        assert torch.equal(enc[key], value), key
        assert torch.equal(acs[key], value), key
        if value.dim() == 4:  # inflated: k copies along depth, each divided by k
            k = i3d[key].shape[2]
            assert torch.equal(i3d[key], torch.stack([value] * k, dim=2) / k), key
        else:
            assert torch.equal(i3d[key], value), key


def test_random_weights_differ_from_file(resnet18_file):
    torch.manual_seed(99)
    enc = build_model("attention").encoder.network.state_dict()
    assert not torch.equal(enc["conv1.weight"], torch.load(resnet18_file)["conv1.weight"])


def test_imagenet_weights_come_from_torch_cache(tmp_path, monkeypatch, resnet18_file):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(url, *args, **kwargs):
        raise OSError(f"no network for {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    spec = torchvision.models.ResNet18_Weights.DEFAULT
    with pytest.raises(RuntimeError, match="not in the cache"):
        build_model("attention", weights="imagenet")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    (tmp_path / "hub" / "checkpoints" / spec.url.split("/")[-1]).write_bytes(resnet18_file.read_bytes())
    enc = build_model("attention", weights="imagenet").encoder.network.state_dict()
    assert torch.equal(enc["conv1.weight"], torch.load(resnet18_file)["conv1.weight"])


def test_bad_weights_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_model("attention", weights=tmp_path / "missing.pt")
    wrong = tmp_path / "r34.pt"
    torch.save(torchvision.models.resnet34().state_dict(), wrong)
    with pytest.raises(ValueError, match="do not fit torchvision's resnet18"):
        build_model("attention", weights=wrong)


def test_parameter_counts_match_paper_table2():
    paper = {"attention": 12.2e6, "3d": 33.2e6, "acs": 11.2e6}
    for method, expected in paper.items():
        n = count_parameters(build_model(method))
        assert abs(n - expected) / expected < 0.01, (method, n)


@pytest.mark.parametrize("method", ["attention", "lstm", "acs"])
def test_frozen_encoder_only_new_modules_get_gradients(method):
    model = build_model(method, in_channels=2, num_classes=3)
    set_encoder_trainable(model, False)
    model(torch.rand(2, 2, 16, 16, 16)).sum().backward()
    new = {id(p) for m in model.new_modules() for p in m.parameters()}
    for name, p in model.named_parameters():
        if id(p) in new:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert count_parameters(model) == sum(p.numel() for m in model.new_modules() for p in m.parameters())


def test_chunked_encoding_equals_all_at_once():
    torch.manual_seed(0)
    model = build_model("attention").eval()
    x = torch.rand(2, 1, 20, 20, 20)
    with torch.no_grad():
        full = model.forward_with_attention(x)
        model.encoder.chunk_size = 7
        chunked = model.forward_with_attention(x)
    torch.testing.assert_close(chunked.logits, full.logits, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(chunked.weights, full.weights, rtol=1e-5, atol=1e-6)
