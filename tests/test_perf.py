"""Performance switches keep the numbers: deduplication, channels_last, tiny convolutions,
chunking with checkpointing, the cached warm-up; and ``python -m study bench`` writes its JSON.

Tolerances: deduplication in eval mode, checkpointing and the cached warm-up change nothing
(bitwise equal, asserted with ``torch.equal``). Train-mode deduplication (counted BatchNorm),
channels_last and the tiny-convolution matrix products change the float summation order only:
they are checked in float64, where that leaves ~1e-12, on any processor (in float32 a random
network's train-mode BatchNorm amplifies rounding by orders of magnitude, seed by seed; see
tests/test_parity.py). No test measures time. The GPU check runs this file on CUDA in float32 and
under bf16 autocast, with the floors of ``tests/numerics.py``; the bench tests run on the CPU only.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
from numerics import NUMERICS as N

from lib25d.data import load_dataset
from lib25d.models import build_model
from lib25d.models.fast import CountedBatchNorm2d, TinyConv2d, TinyConv3d, apply, unique_slices, use_tiny_convs
from lib25d.run import SPEED_FIELDS, RunConfig, train
from lib25d.run.folder import CHECKPOINT
from lib25d.run.protocol import autocast_for
from study.__main__ import main
from study.bench.cli import SCHEMA
from study.bench.compare import compare_frame
from study.bench.table2 import table2_frame
from study.bench.timing import parse_size

OFF = dict(channels_last=False, tiny_convs=False, fold_adapter=False, dedupe_slices=False, checkpointing=False)


pytestmark = pytest.mark.usefixtures("one_thread")
cpu_only = pytest.mark.skipif(
    not N.default,
    reason="bench's CPU command line and JSON: the default suite's; the GPU check runs bench on the device itself",
)


def configured(model, **switches):
    return apply(copy.deepcopy(model), **{**OFF, **switches})


@pytest.fixture(scope="module")
def adrenal_batch(medmnist_root):
    data = load_dataset("adrenal", "test", root=medmnist_root)
    return torch.stack([data[i][0] for i in range(3)]).to(N.device)


# -- deduplication -------------------------------------------------------------------------------
def test_dedupe_gives_identical_outputs_on_real_adrenal(adrenal_batch):
    torch.manual_seed(0)
    model = build_model("attention").to(N.device).eval()
    for others in ({}, {"channels_last": True, "tiny_convs": True}):
        plain, dedup = configured(model, **others), configured(model, dedupe_slices=True, **others)
        with torch.no_grad(), N.autocast():
            a, b = plain.forward_with_attention(adrenal_batch), dedup.forward_with_attention(adrenal_batch)
        unique, total = dedup.encoder.last_dedupe
        assert total == 3 * 28 and unique < 0.75 * total  # the last (sagittal) call; empty background slices
        N.same(a.logits, b.logits, "logits")
        N.same(a.weights, b.weights, "attention weights")


def test_dedupe_is_exact_on_synthetic_duplicates_in_eval_and_train_mode():
    torch.manual_seed(0)
    x = torch.zeros(2, 3, 12, 20, 16)  # non-cubic: one encoder call per axis
    x[0, :, 3:9, 5:15, 4:12] = torch.rand(3, 6, 10, 8)
    x[1] = x[0]  # the whole second volume repeats the first
    x[1, :, 10] = torch.rand(3, 20, 16)
    x = x.to(N.device)
    model = build_model("mean", in_channels=3, num_classes=3).to(N.device).eval()
    plain, dedup = configured(model), configured(model, dedupe_slices=True)
    with torch.no_grad(), N.autocast():
        N.same(plain(x), dedup(x))
    assert dedup.encoder.last_dedupe[0] < dedup.encoder.last_dedupe[1]
    found = unique_slices(x[:, :, 0])
    assert found is None or torch.equal(found[0][found[1]], x[:, :, 0])
    # BatchNorm on batch statistics (training): deduplicated too, each distinct slice counted by its
    # multiplicity: the same outputs, gradients and running statistics as the full batch (float64)
    plain, dedup = plain.to(N.dtype).train(), dedup.to(N.dtype).train()
    xd = x.to(N.dtype)
    with N.autocast():
        a, b = plain(xd), dedup(xd)
    assert dedup.encoder.last_dedupe[0] < dedup.encoder.last_dedupe[1]
    N.close(b, a, rtol=1e-10, atol=1e-12)
    a.to(N.dtype).square().sum().backward()
    b.to(N.dtype).square().sum().backward()
    N.close_all(
        ((name, q.grad, p.grad) for (name, p), q in zip(plain.named_parameters(), dedup.parameters())),
        rtol=1e-9,
        atol=1e-12,
    )
    sa, sb = plain.state_dict(), dedup.state_dict()
    N.close_all(((k, sb[k], sa[k]) for k in sa), rtol=1e-10, atol=1e-12)
    # with chunks smaller than the batch each chunk's statistics differ: no deduplication then
    dedup.encoder.last_dedupe = None
    dedup.encoder.chunk_size = 8
    dedup(xd)
    assert dedup.encoder.last_dedupe is None
    dedup.encoder.chunk_size = None
    x = x.float()
    dedup = dedup.float()
    # input gradients (saliency) need one row per slice: no deduplication either
    dedup.eval()
    xg = x.clone().requires_grad_()
    dedup(xg).sum().backward()
    assert dedup.encoder.last_dedupe is None and xg.grad.abs().sum() > 0
    # forward hooks (Grad-CAM style) see one activation row per slice
    rows = []
    handle = dedup.encoder.network.layer1.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    with torch.no_grad():
        dedup(x)
    handle.remove()
    assert rows == [2 * 12, 2 * 20, 2 * 16]


def test_dedupe_when_only_some_axes_repeat_slices_trains():
    """A CT whose every axial slice holds body but whose coronal and sagittal ones repeat (air): native BatchNorm
    on the axial call, counted on the others, in one step. Its backward must run and equal the plain model's."""
    torch.manual_seed(0)
    x = torch.zeros(2, 1, 10, 16, 16, dtype=torch.float64)
    x[:, :, :, 4:12, 4:12] = torch.rand(2, 1, 10, 8, 8, dtype=torch.float64)  # every axial slice distinct
    model = build_model("attention").double().train()
    plain, dedup = configured(model), configured(model, dedupe_slices=True)
    a, b = plain(x), dedup(x)
    a.sum().backward()
    b.sum().backward()
    assert dedup.encoder.last_dedupe[0] < dedup.encoder.last_dedupe[1]  # the sagittal call was deduplicated
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    for (name, p), q in zip(plain.named_parameters(), dedup.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-9, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    for k, v in plain.state_dict().items():
        torch.testing.assert_close(dedup.state_dict()[k], v, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_counted_batch_norm_is_precise_in_float32(offset):
    """Activations far from zero (a large mean, a small spread) must not lose the variance to
    cancellation: float32 counted BatchNorm stays as close to the float64 truth as native BatchNorm."""
    torch.manual_seed(0)
    x = (torch.randn(200, 8, 4, 4) + offset).to(N.device)
    counts = torch.randint(1, 4, (200,)).to(N.device)
    full = x.repeat_interleave(counts, 0)
    truth = torch.nn.functional.batch_norm(full.double(), None, None, training=True)
    native = torch.nn.functional.batch_norm(full, None, None, training=True)
    counted = CountedBatchNorm2d(8, affine=False).to(N.device).train()
    counted.counts = counts
    ours = counted(x).repeat_interleave(counts, 0)
    assert (ours.double() - truth).abs().max() <= max(1e-6, 2 * float((native.double() - truth).abs().max()))


def test_counted_batch_norm_under_bf16_autocast():
    """bf16 activations (CPU autocast, or CUDA's with the device switch): statistics in float32 as native
    BatchNorm keeps them, the running buffers stay float32, the output is bf16; rows counted twice
    equal the repeated batch."""
    torch.manual_seed(0)
    x = torch.randn(6, 4, 5, 5).to(N.device, torch.bfloat16)
    counts = torch.tensor([1, 2, 1, 3, 1, 1], device=N.device)
    plain, counted = torch.nn.BatchNorm2d(4).to(N.device).train(), CountedBatchNorm2d(4).to(N.device).train()
    counted.counts = counts
    a, b = plain(x.repeat_interleave(counts, 0)), counted(x)
    assert b.dtype == torch.bfloat16 and counted.running_mean.dtype == torch.float32
    torch.testing.assert_close(b.repeat_interleave(counts, 0).float(), a.float(), rtol=1e-2, atol=1e-2)
    torch.testing.assert_close(counted.running_mean, plain.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(counted.running_var, plain.running_var, rtol=1e-5, atol=1e-6)
    # a deduplicated training step of the whole model under the autocast that --bf16-cpu turns on
    model = apply(build_model("attention").to(N.device), **{**OFF, "dedupe_slices": True}).train()
    x = torch.rand(2, 1, 12, 12, 12)
    x[:, :, :4], x[:, :, :, :4], x[:, :, :, :, :4] = 0, 0, 0  # empty slices on every axis: counted rows
    x = x.to(N.device)
    with autocast_for(N.device, amp=True, bf16_cpu=True):
        loss = model(x).float().square().mean()
    loss.backward()
    unique, total = model.encoder.last_dedupe
    assert torch.isfinite(loss) and unique < total
    assert all(b.dtype != torch.bfloat16 for b in model.buffers())


# -- tiny convolutions and channels_last ---------------------------------------------------------
@pytest.mark.parametrize(
    "dims,spatial,kernel,stride,padding",
    [
        (2, (1, 1), 3, 1, 1),
        (2, (2, 2), 3, 2, 1),
        (2, (2, 2), 1, 2, 0),
        (2, (3, 2), 3, 2, 1),
        (2, (2, 2), 3, 1, 1),
        (2, (2, 3), 3, 1, 1),
        (2, (3, 3), 3, 1, 1),
        (2, (2, 2), 1, 1, 0),
        (3, (1, 1, 1), 3, 1, 1),
        (3, (2, 2, 2), 3, 2, 1),
        (3, (2, 2, 2), 3, 1, 1),
        (2, (4, 4), 3, 1, 1),
    ],
)
def test_tiny_conv_is_the_same_function(dims, spatial, kernel, stride, padding):
    torch.manual_seed(0)
    conv_cls = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    conv = conv_cls(16, 8, kernel, stride=stride, padding=padding, bias=True).to(N.device, N.dtype)
    tiny = copy.deepcopy(conv)
    assert use_tiny_convs(tiny) == 1 and isinstance(tiny, (TinyConv2d, TinyConv3d))
    last = torch.channels_last if dims == 2 else torch.channels_last_3d
    for fmt in (torch.contiguous_format, last):  # the product reads channels_last input in place
        conv.zero_grad(), tiny.zero_grad()
        x = torch.randn(5, 16, *spatial, dtype=torch.float64).to(N.device, N.dtype)
        x = x.contiguous(memory_format=fmt).requires_grad_()
        xt = x.detach().clone(memory_format=fmt).requires_grad_()
        with N.autocast():
            out, out_t = conv(x), tiny(xt)
        N.close(out_t, out, rtol=1e-12, atol=1e-12)
        out.to(N.dtype).square().sum().backward()
        out_t.to(N.dtype).square().sum().backward()
        N.close(xt.grad, x.grad, rtol=1e-12, atol=1e-12)
        N.close(tiny.weight.grad, conv.weight.grad, rtol=1e-12, atol=1e-12)
        N.close(tiny.bias.grad, conv.bias.grad, rtol=1e-12, atol=1e-12)
    assert list(tiny.state_dict()) == list(conv.state_dict())
    use_tiny_convs(tiny, False)
    assert type(tiny) is conv_cls


def _grads(model, x):
    model.zero_grad()
    with N.autocast():
        out = model(x)
    out.to(x.dtype).square().sum().backward()
    return out.detach(), torch.cat([p.grad.flatten() for p in model.parameters()])


def test_channels_last_and_tiny_convs_are_the_same_function():
    """float64, train mode, 28^3 (layer3 on 2x2 and layer4 on 1x1 maps: the tiny-convolution
    cases; the adapter folded into conv1): ~1e-12 anywhere."""
    torch.manual_seed(0)
    model = build_model("attention").train().to(N.device, N.dtype)
    x = torch.rand(1, 1, 28, 28, 28, dtype=torch.float64).to(N.device, N.dtype)
    plain_out, plain_grad = _grads(configured(model), x)
    fast = configured(model, channels_last=True, tiny_convs=True, fold_adapter=True)
    fast_out, fast_grad = _grads(fast, x)
    assert fast.encoder.network.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert isinstance(fast.encoder.network.layer4[1].conv2, TinyConv2d)
    assert list(fast.state_dict()) == list(model.state_dict())
    N.close(fast_out, plain_out, rtol=1e-10, atol=1e-12)
    N.close(fast_grad, plain_grad, rtol=1e-8, atol=1e-12 * float(plain_grad.abs().max()))


@pytest.mark.parametrize("backbone,in_channels", [("resnet18", 2), ("mobilenet_v3_small", 1), ("resnet18", 3)])
def test_folded_adapter_is_the_same_function(backbone, in_channels):
    """The 1x1 channel adapter folded into the first convolution: same outputs, gradients (the
    adapter's included) and running statistics; with 3 input channels there is no adapter to fold."""
    torch.manual_seed(0)
    model = build_model("mean", backbone=backbone, in_channels=in_channels).train().to(N.device, N.dtype)
    x = torch.rand(2, in_channels, 12, 12, 12, dtype=torch.float64).to(N.device, N.dtype)
    plain, folded = configured(model), configured(model, fold_adapter=True)
    assert (folded.encoder.fold_stem is None) == (in_channels == 3)
    torch.manual_seed(1)  # mobilenet's classifier keeps a Dropout: the same mask for both
    plain_out, plain_grad = _grads(plain, x)
    torch.manual_seed(1)
    fold_out, fold_grad = _grads(folded, x)
    N.close(fold_out, plain_out, rtol=1e-10, atol=1e-12)
    N.close(fold_grad, plain_grad, rtol=1e-8, atol=1e-12 * float(plain_grad.abs().max()))
    N.close_all(
        ((name, b, a) for (name, a), b in zip(plain.state_dict().items(), folded.state_dict().values())),
        rtol=1e-10,
        atol=1e-12,
    )


def test_tiny_convs_in_the_3d_baseline():
    torch.manual_seed(0)
    model = build_model("3d").to(N.device).eval()
    fast = apply(copy.deepcopy(model), tiny_convs=True, channels_last=True, dedupe_slices=True)
    x = torch.rand(2, 1, 28, 28, 28).to(N.device)
    with torch.no_grad(), N.autocast():
        N.close(fast(x), model(x), rtol=1e-4, atol=1e-5)


# -- chunking with checkpointing -----------------------------------------------------------------
def test_checkpointing_gives_the_same_gradients_and_statistics():
    torch.manual_seed(0)
    model = apply(build_model("attention", chunk_size=20).to(N.device), channels_last=True, tiny_convs=True).train()
    ckpt = apply(copy.deepcopy(model), checkpointing=True)
    x = torch.rand(2, 1, 16, 20, 20).to(N.device)
    out_a, grad_a = _grads(model, x)
    out_b, grad_b = _grads(ckpt, x)
    N.same(out_a, out_b, "outputs")
    N.same(grad_a, grad_b, "gradients")
    sa, sb = model.state_dict(), ckpt.state_dict()
    for k in sa:  # running statistics updated once per chunk
        N.same(sa[k], sb[k], k)
    # in eval mode, chunks (with checkpointing) equal the whole batch at once
    model.eval(), ckpt.eval()
    whole = copy.deepcopy(model)
    whole.encoder.chunk_size = None
    with N.autocast():
        N.close(ckpt(x), whole(x), rtol=1e-5, atol=1e-6)


# -- cached warm-up ------------------------------------------------------------------------------
TINY = dict(
    dataset="synthetic",
    size=16,
    weights=None,
    epochs=2,
    warmup_epochs=2,
    warmup_bn="frozen",
    batch_size=4,
    lr=1e-3,
    dataset_options={"n_train": 10, "n_val": 4, "n_test": 4, "seed": 5},
    **N.run_settings(),
)


def _curve(result) -> torch.Tensor:
    return torch.tensor([(h["train_loss"], h["val_loss"]) for h in result["history"]], dtype=torch.float64)


def _numbers(metrics) -> torch.Tensor:
    """Every number of a result's metrics (lists such as per-class recall included), in a fixed order;
    the words beside them (the best-epoch criterion, an AUROC note) are compared by `_words`."""
    if isinstance(metrics, dict):
        parts = [_numbers(metrics[k]) for k in sorted(metrics)]
    elif isinstance(metrics, list):
        parts = [_numbers(v) for v in metrics]
    else:
        parts = [torch.tensor([float(metrics)], dtype=torch.float64)] if isinstance(metrics, (int, float)) else []
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


def _words(metrics) -> list:
    """The non-numeric leaves of a result's metrics, with their paths."""
    flat = pd.json_normalize(metrics).iloc[0].sort_index()
    return [(k, v) for k, v in flat.items() if isinstance(v, str)]


def test_cached_warmup_equals_uncached_and_resumes(tmp_path):
    cached = train(RunConfig(**TINY), tmp_path / "cached", quiet=True)
    plain = train(RunConfig(**TINY, cache_warmup_features=False), tmp_path / "plain", quiet=True)
    assert [h["cached_features"] for h in cached["history"]] == [True, True]
    assert not any(h["cached_features"] for h in plain["history"])
    assert cached["config"]["cache_warmup_features"] and cached["config"]["channels_last"]
    N.close(_curve(cached), _curve(plain), rtol=1e-6, atol=0)
    wa = torch.load(tmp_path / "cached" / CHECKPOINT, weights_only=False)["model"]
    wb = torch.load(tmp_path / "plain" / CHECKPOINT, weights_only=False)["model"]
    N.close_all(((k, wa[k], wb[k]) for k in wa), rtol=1e-5, atol=1e-6)

    def crash(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(RunConfig(**TINY), tmp_path / "cut", quiet=True, on_epoch_end=crash)
    resumed = train(RunConfig(**TINY), tmp_path / "cut", resume=True, quiet=True)
    # the cache is rebuilt for epoch 2: same numbers
    N.same(_curve(resumed), _curve(cached), "loss curves", computed=torch.float32)
    N.same(_numbers(resumed["metrics"]), _numbers(cached["metrics"]), "metrics", computed=torch.float32)
    assert _words(resumed["metrics"]) == _words(cached["metrics"])


def test_cached_warmup_of_a_3d_baseline(tmp_path):
    config = dict(TINY, method="3d")
    a = train(RunConfig(**config), tmp_path / "a", quiet=True)
    b = train(RunConfig(**config, cache_warmup_features=False), tmp_path / "b", quiet=True)
    assert [h["cached_features"] for h in a["history"]] == [True, True]
    N.close(_curve(a), _curve(b), rtol=1e-6, atol=0)


def test_straightforward_config_and_resume_across_switches(tmp_path):
    fast = RunConfig()
    slow = fast.straightforward()
    assert all(getattr(fast, f) for f in ("channels_last", "tiny_convs", "dedupe_slices", "cache_warmup_features"))
    assert not any(getattr(slow, f) for f in SPEED_FIELDS) and not slow.amp
    assert fast.speed() == {
        "channels_last": True,
        "tiny_convs": True,
        "fold_adapter": True,
        "dedupe_slices": True,
        "cache_warmup_features": True,
        "checkpointing": False,
        "compile": False,
    }
    config = RunConfig(**dict(TINY, epochs=1, warmup_epochs=1))
    train(config, tmp_path / "run", quiet=True)
    # performance switches may differ on resume (same numbers); the run is complete, nothing to redo
    train(config.replace(epochs=1, channels_last=False, dedupe_slices=False), tmp_path / "run", resume=True, quiet=True)


# -- python -m study bench ----------------------------------------------------------------------------------
@cpu_only
def test_bench_table2_json_schema(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--table2",
                "--sizes",
                "16",
                "--methods",
                "attention",
                "--batch-size",
                "1",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )  # a subprocess
    printed = capsys.readouterr().out
    assert "attention" in printed and "% of peak" in printed
    data = json.loads(out.read_text())
    assert data["schema"] == SCHEMA
    section = data["table2"]
    assert section["environment"]["device"].startswith("cpu") and section["matmul_peak_gflops"]["fp32"] > 0
    (row,) = section["rows"]
    assert row["error"] is None, row["error"]
    assert row["method"] == "attention" and row["size"] == "16" and row["batch_size"] == 1
    assert abs(row["params_m"] - 12.2) < 0.1
    assert row["memory_kind"] == "process_peak_rss" and row["peak_memory_gib"] > 0.1  # torch alone takes more
    for key in (
        "train_step_s",
        "epoch_s",
        "train_volumes_per_s",
        "infer_volumes_per_s",
        "achieved_gflops",
        "fraction_of_peak",
    ):
        assert row[key] > 0, key
    assert row["flops_per_step"] > 0 and row["epoch_volumes"] == 1188
    assert row["settings"]["channels_last"] and not row["settings"]["checkpointing"]
    assert row["command"].startswith("python -m study bench --table2")
    frame = table2_frame(out)  # what the book shows: the paper's parameters beside ours (from the CSV)
    assert list(frame["method"]) == ["attention"] and frame["params (M) paper"][0] == "12.2"
    assert frame["s / epoch paper"][0] == "—"  # the paper's epoch is a 128x224x224 one
    # a later run of another method keeps this row (the notebook reads one merged table)
    assert (
        main(
            [
                "bench",
                "--table2",
                "--sizes",
                "16",
                "--methods",
                "mean",
                "--batch-size",
                "1",
                "--repeats",
                "1",
                "--warmup-steps",
                "0",
                "--no-inference",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--in-process",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert [r["method"] for r in json.loads(out.read_text())["table2"]["rows"]] == ["attention", "mean"]


@cpu_only
def test_bench_compare_json_schema(tmp_path, medmnist_root, capsys):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"schema": SCHEMA, "table2": {"rows": []}}))
    assert (
        main(
            [
                "bench",
                "--compare",
                "--subset",
                "4",
                "--batch-size",
                "2",
                "--steps",
                "1",
                "--repeats",
                "1",
                "--large-shape",
                "10x12x12",
                "--compare-chunk-size",
                "8",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--in-process",
                "--data-root",
                str(medmnist_root),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "inference over the Adrenal test split" in printed and "checkpointing costs" in printed
    data = json.loads(out.read_text())
    assert "table2" in data  # other sections are kept
    section = data["compare"]
    assert section["inference"]["identical_predictions"]
    assert len(section["training"]["losses"]["authors"]) == len(section["training"]["losses"]["lib25d"]) == 2
    assert section["training"]["loss_max_abs_diff"] < 1e-3  # same weights, same batches: same losses
    assert section["memory"]["case"]["settings"]["checkpointing"] and section["memory"]["peak_gib"] > 0
    assert section["settings"]["lib25d"]["channels_last"] and "authors" in section["settings"]["before"]
    # the book's view: one row per figure, values from this file, the command that measured them
    frame = compare_frame(out).set_index("figure")
    assert len(frame) == 8 and frame["value"].notna().sum() == 6  # bf16 not asked for
    assert frame["value"].dropna().gt(0).all()
    assert frame.loc["full-epoch training vs the authors' design, 28^3 (x)", "value"] == pytest.approx(
        section["training"]["speedup"]
    )
    assert frame["command"].dropna().str.startswith("python -m study bench --compare").all()
    # a part that was not measured is missing, not a number; a later run keeps the parts it did not measure
    del data["compare"]["inference"]
    assert compare_frame(data)["value"].isna().sum() == 3
    assert (
        main(
            [
                "bench",
                "--compare",
                "--parts",
                "inference",
                "--subset",
                "4",
                "--batch-size",
                "2",
                "--repeats",
                "1",
                "--device",
                "cpu",
                "--threads",
                "1",
                "--data-root",
                str(medmnist_root),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    assert compare_frame(out)["value"].notna().sum() == 6


@cpu_only
def test_bench_options(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--table2",
        "--compare",
        "--sizes",
        "--methods",
        "--batch-size",
        "--device",
        "--repeats",
        "--json",
        "--steps",
        "--threads",
        "--large-chunk-size",
        "--parts",
        "--large-shape",
    ):
        assert flag in text, flag
    assert parse_size("28") == (28, 28, 28) and parse_size("128x224x224") == (128, 224, 224)
    with pytest.raises(ValueError, match="DxHxW"):
        parse_size("28x28")
    assert main(["bench", "--device", "cpu"]) == 2
    assert "--table2, --compare" in capsys.readouterr().err
