"""Training protocol: result file, resume after interruption, refusal, warm-up, metrics, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lib25d.run.loop as train_mod
from lib25d.cli import main
from lib25d.data import load_dataset
from lib25d.metrics import evaluate_scores, scores_from_logits
from lib25d.models import build_model
from lib25d.run import RunConfig, train
from lib25d.run.folder import CHECKPOINT, RESULT

TINY = dict(
    dataset="synthetic",
    size=16,
    weights=None,
    epochs=3,
    warmup_epochs=1,
    batch_size=8,
    lr=1e-3,
    device="cpu",
    dataset_options={"n_train": 16, "n_val": 8, "n_test": 8, "seed": 3},
)


def tiny(**changes) -> RunConfig:
    return RunConfig(**{**TINY, **changes})


def losses(result):
    return [(h["train_loss"], h["val_loss"], h["val_auc"]) for h in result["history"]]


def test_result_file_records_everything(tmp_path):
    result = train(tiny(), tmp_path / "run", quiet=True)
    saved = json.loads((tmp_path / "run" / RESULT).read_text())
    assert list(saved)[0] == "config" and saved["config"]["method"] == "attention"
    assert saved["data"]["identity"]["dataset"] == "synthetic" and saved["data"]["samples"]["test"] == 8
    assert [h["phase"] for h in saved["history"]] == ["warm-up", "full", "full"]
    for which in ("final", "best_val"):
        m = saved["metrics"][which]["test"]
        assert 0 <= m["acc"] <= 1 and 0 <= m["auc"] <= 1
    assert saved["metrics"]["final"]["epoch"] == 3
    assert len(saved["timing"]["epoch_seconds"]) == 3 and saved["memory"]["bytes"] > 0
    env = saved["environment"]
    assert env["versions"]["torch"].startswith("2.") and "revision" in env["git"] and env["device"].startswith("cpu")
    assert len(saved["predictions"]["final"]) == 8
    # the stored test metrics are those of the stored predictions
    labels, scores = np.array(saved["predictions"]["labels"]), np.array(saved["predictions"]["final"])
    assert evaluate_scores(labels, scores, "binary-class")["acc"] == pytest.approx(
        saved["metrics"]["final"]["test"]["acc"]
    )
    assert result["metrics"] == saved["metrics"]


def test_same_seed_same_numbers_and_seed_matters(tmp_path):
    a = train(tiny(epochs=2), tmp_path / "a", quiet=True)
    b = train(tiny(epochs=2), tmp_path / "b", quiet=True)
    c = train(tiny(epochs=2, seed=1), tmp_path / "c", quiet=True)
    assert losses(a) == losses(b)
    assert losses(a) != losses(c)


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    full = train(tiny(), tmp_path / "full", quiet=True)

    def crash(epoch, record):
        if epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny(), tmp_path / "cut", quiet=True, on_epoch_end=crash)
    assert not (tmp_path / "cut" / RESULT).exists()
    assert len(torch.load(tmp_path / "cut" / CHECKPOINT, weights_only=False)["history"]) == 2
    resumed = train(tiny(), tmp_path / "cut", resume=True, quiet=True)
    assert losses(resumed) == losses(full)
    assert resumed["metrics"] == full["metrics"]


def test_existing_run_is_never_overwritten(tmp_path):
    train(tiny(epochs=1), tmp_path / "run", quiet=True)
    before = (tmp_path / "run" / RESULT).read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(tiny(epochs=1), tmp_path / "run", quiet=True)
    with pytest.raises(ValueError, match="different settings \\(batch_size\\)"):
        train(tiny(epochs=1, batch_size=4), tmp_path / "run", resume=True, quiet=True)
    assert (tmp_path / "run" / RESULT).read_bytes() == before


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    real = train_mod.loss_function
    state = {"poison": False}

    def poisoned(num_classes):
        fn = real(num_classes)
        return lambda logits, y: fn(logits, y) * (float("nan") if state["poison"] else 1.0)

    monkeypatch.setattr(train_mod, "loss_function", poisoned)
    with pytest.raises(FloatingPointError, match="epoch 2/3, step 1/2.*keeps epoch 1"):
        train(tiny(), tmp_path / "run", quiet=True, on_epoch_end=lambda e, r: state.update(poison=True))
    assert len(torch.load(tmp_path / "run" / CHECKPOINT, weights_only=False)["history"]) == 1


def test_warmup_trains_only_new_modules(tmp_path):
    torch.manual_seed(0)
    initial = build_model("attention").state_dict()
    train(tiny(epochs=1), tmp_path / "warm", quiet=True)
    after = torch.load(tmp_path / "warm" / CHECKPOINT, weights_only=False)["model"]
    enc = [k for k in initial if k.startswith("encoder.")]
    assert enc and all(torch.equal(initial[k], after[k]) for k in enc)  # BatchNorm statistics too
    assert not torch.equal(initial["head.weight"], after["head.weight"])
    train(tiny(epochs=1, warmup_epochs=0), tmp_path / "cold", quiet=True)
    cold = torch.load(tmp_path / "cold" / CHECKPOINT, weights_only=False)["model"]
    assert not torch.equal(initial["encoder.network.conv1.weight"], cold["encoder.network.conv1.weight"])


def test_metrics_equal_medmnist_evaluator_on_real_predictions(medmnist_root):
    from medmnist import Evaluator

    data = load_dataset("adrenal", "test", root=medmnist_root)
    torch.manual_seed(0)
    model = build_model("acs").eval()
    with torch.no_grad():
        logits = torch.cat(
            [
                model(torch.stack([data[i][0] for i in range(s, min(s + 64, len(data)))]))
                for s in range(0, len(data), 64)
            ]
        )
    scores = scores_from_logits(logits)
    ours = evaluate_scores(data.labels, scores, data.info.task)
    auc, acc = Evaluator("adrenalmnist3d", "test", root=str(medmnist_root)).evaluate(scores)
    assert (ours["auc"], ours["acc"]) == (auc, acc)  # MedMNIST's own numbers stay the headline
    from sklearn.metrics import balanced_accuracy_score, recall_score

    labels, predicted = data.labels, scores > 0.5
    assert ours["balanced_acc"] == balanced_accuracy_score(labels, predicted)
    assert ours["recall"] == list(recall_score(labels, predicted, average=None))
    assert ours["balanced_acc"] == np.mean(ours["recall"]) and "auc_note" not in ours
    assert 0 < acc < 1


def test_a_validation_split_of_one_class_says_why_auroc_is_undefined(tmp_path):
    """Small real cohorts often hold one class in a split: its AUROC is undefined, said in words, and the
    best-validation model is then chosen by the validation loss."""
    import nibabel

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        split, label = ("train", i % 2) if i < 8 else ("val", 1) if i < 10 else ("test", i % 2)
        image = rng.random((16, 16, 16)).astype(np.float32) + 2 * label * (np.arange(16) > 8)
        nibabel.Nifti1Image(image, np.eye(4)).to_filename(tmp_path / f"{i}.nii.gz")
        rows.append(f"{i}.nii.gz,{label},{split}")
    (tmp_path / "scans.csv").write_text("image,label,split\n" + "\n".join(rows) + "\n")
    config = tiny(dataset=f"nifti:{tmp_path / 'scans.csv'}", dataset_options={}, epochs=2)
    result = train(config, tmp_path / "run", quiet=True)
    note = "undefined: split 'val' holds one class (1)"
    assert all(np.isnan(h["val_auc"]) for h in result["history"])
    assert result["metrics"]["final"]["val"]["auc_note"] == note
    best = result["metrics"]["best_val"]
    assert best["criterion"] == f"val_loss (validation AUROC {note})"
    assert best["epoch"] == 1 + int(np.argmin([h["val_loss"] for h in result["history"]]))
    assert not np.isnan(result["metrics"]["final"]["test"]["auc"])
    assert set(result["metrics"]["final"]["test"]) == {"auc", "acc", "balanced_acc", "recall", "loss"}


def test_multiclass_run(tmp_path):
    opts = {**TINY["dataset_options"], "num_classes": 3}
    result = train(tiny(epochs=1, dataset_options=opts, method="mean"), tmp_path / "mc", quiet=True)
    assert np.array(result["predictions"]["final"]).shape == (8, 3)
    assert result["data"]["task"] == "multi-class"


def test_cli_train_evaluate_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = [
        "train",
        "--dataset",
        "synthetic",
        "--size",
        "16",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
        "--option",
        "n_train=16",
        "--option",
        "n_val=8",
        "--option",
        "n_test=8",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "final" in printed and "test AUROC" in printed and (out / RESULT).exists()
    saved = json.loads((out / RESULT).read_text())
    assert saved["config"]["dataset_options"] == {"n_train": 16, "n_val": 8, "n_test": 8}
    assert main(["evaluate", str(out), "--device", "cpu"]) == 0
    reported = float(capsys.readouterr().out.split("AUROC ")[1].split()[0])
    assert reported == pytest.approx(saved["metrics"]["final"]["test"]["auc"], abs=1e-4)
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (
        main(["train", "--method", "gru", "--out", str(tmp_path / "x"), "--weights", "none", "--dataset", "synthetic"])
        == 2
    )
    assert "valid: attention, mean" in capsys.readouterr().err
    assert (
        main(
            [
                "train",
                "--dataset",
                "organ",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "y"),
                "--weights",
                "none",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "organmnist3d.npz" in err and str(tmp_path) in err


def test_train_help_documents_every_setting(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in (
        "--dataset",
        "--size",
        "--method",
        "--backbone",
        "--weights",
        "--seed",
        "--epochs",
        "--batch-size",
        "--lr",
        "--warmup-epochs",
        "--device",
        "--data-root",
        "--num-workers",
        "--chunk-size",
        "--no-amp",
        "--option",
        "--out",
        "--resume",
        "--quiet",
    ):
        assert flag in text, flag


def test_loader_workers_auto_by_device():
    from lib25d.run.protocol import loader_workers

    auto = RunConfig()
    assert auto.num_workers == -1
    assert loader_workers(auto, torch.device("cpu")) == 0  # CPU: workers would share the model's cores
    assert 1 <= loader_workers(auto, torch.device("cuda")) <= 4  # CUDA: batches prepared beside the GPU
    assert loader_workers(auto.replace(num_workers=3), torch.device("cpu")) == 3


def test_auroc_interval_is_a_seeded_bootstrap_over_volumes():
    from lib25d.metrics import auroc_interval, mean_auroc_interval

    labels = np.array([0, 1] * 50)
    assert auroc_interval(labels, labels.astype(float)) == (1.0, 1.0)  # perfect ranking in every resample
    noise = np.random.default_rng(0).random(100)
    low, high = auroc_interval(labels, noise)
    assert low < 0.5 < high and (low, high) == auroc_interval(labels, noise)  # a coin: the interval holds 0.5
    assert mean_auroc_interval(labels, [noise, noise]) == (low, high)  # two identical seeds: the same interval
    both = mean_auroc_interval(labels, [noise, labels.astype(float)])  # mean of a coin and a perfect ranking
    assert low < both[0] and both[1] <= 1.0 and both[0] > 0.5
    assert np.isnan(auroc_interval(np.zeros(5), np.ones(5))).all()  # one class: undefined
    with pytest.raises(ValueError, match="4 labels but 3 scores"):
        auroc_interval(np.zeros(4), np.ones(3))


@pytest.mark.parametrize("task,classes", [("binary-class", 2), ("multi-class", 4)])
def test_resampled_aurocs_are_medmnists_getauc_in_every_resample(task, classes):
    """The bootstrap ranks all resamples at once; each value must be what getAUC (sklearn) says, ties
    included, and the interval the percentiles of those per-resample values."""
    from medmnist.evaluator import getAUC

    from lib25d.metrics import mean_auroc_interval, resampled_aurocs

    rng = np.random.default_rng(1)
    labels = rng.integers(0, classes, 60)
    scores = rng.integers(0, 5, 60) / 4.0 if task == "binary-class" else rng.dirichlet(np.ones(classes), 60).round(1)
    idx = rng.integers(0, 60, (200, 60))
    fast = resampled_aurocs(labels, scores, idx, task)
    slow = [getAUC(labels[i], scores[i], task) if len(np.unique(labels[i])) == classes else np.nan for i in idx]
    np.testing.assert_allclose(fast, slow, rtol=1e-12, atol=1e-12)
    assert np.isnan(resampled_aurocs(np.zeros(4), np.ones(4), np.zeros((1, 4), int), "binary-class")).all()
    runs = [scores, rng.permutation(scores)]
    values = np.mean(
        [[getAUC(labels[i], s[i], task) for s in runs] for i in np.random.default_rng(0).integers(0, 60, (300, 60))],
        axis=1,
    )
    np.testing.assert_allclose(
        mean_auroc_interval(labels, runs, task, n_boot=300), np.quantile(values, [0.025, 0.975]), rtol=1e-12
    )
