"""Faults and misuse: divergence, refused starts, two processes on one folder, kill -9 anywhere.

Kills are injected (``LIB25D_FAULT``, see :func:`lib25d.run.faults.fault_point`), not timed: the
process dies with SIGKILL exactly while a file is half written or inside an epoch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train import TINY  # the same tiny synthetic run the training tests use

from lib25d.run import RunConfig, train
from lib25d.run.folder import CHECKPOINT, RESULT, claim

CLI = [
    sys.executable,
    "-m",
    "lib25d.cli",
    "train",
    "--dataset",
    "synthetic",
    "--size",
    "16",
    "--weights",
    "none",
    "--epochs",
    "3",
    "--warmup-epochs",
    "1",
    "--batch-size",
    "4",
    "--lr",
    "1e-3",
    "--device",
    "cpu",
    "--quiet",
    "--option",
    "n_train=16",
    "--option",
    "n_val=8",
    "--option",
    "n_test=8",
    "--option",
    "seed=3",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**changes) -> RunConfig:
    return RunConfig(**{**TINY, **changes})


def cli(out: Path, *extra: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LIB25D_FAULT", None)
    if fault:
        env["LIB25D_FAULT"] = fault
    return subprocess.run([*CLI, "--out", str(out), *extra], capture_output=True, text=True, env=env, timeout=600)


def numbers(result: dict) -> tuple:
    """What must not change when a run is interrupted and resumed."""
    history = [(h["epoch"], h["train_loss"], h["val_loss"], h["val_auc"]) for h in result["history"]]
    return history, result["metrics"], result["predictions"]


# -- divergence ----------------------------------------------------------------------------------
def test_divergence_stops_at_once_and_resume_with_smaller_lr_continues(tmp_path):
    out = tmp_path / "run"
    train(tiny(epochs=1), out, quiet=True)
    with pytest.raises(FloatingPointError, match=r"diverged: non-finite .*epoch 2/3.*keeps epoch 1.*--resume --lr"):
        train(tiny(lr=1e9), out, resume=True, quiet=True)
    assert len(torch.load(out / CHECKPOINT, weights_only=False)["history"]) == 1  # the good epoch is kept
    result = train(tiny(lr=1e-4), out, resume=True, quiet=True)
    assert [h["lr"] for h in result["history"]] == [1e-3, 1e-4, 1e-4]


def test_divergence_before_any_epoch_leaves_no_folder(tmp_path):
    with pytest.raises(FloatingPointError, match="nothing was kept: start again with a smaller learning rate"):
        train(tiny(lr=1e9, warmup_epochs=0), tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


# -- refused starts ------------------------------------------------------------------------------
def test_names_are_checked_before_data_and_a_refused_run_leaves_no_folder(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'attn'; valid: attention"):
        train(
            tiny(method="attn", dataset="adrenal", data_root=str(tmp_path / "none"), dataset_options={}, size=28),
            tmp_path / "a",
        )
    with pytest.raises(ValueError, match="unknown backbone"):
        train(tiny(backbone="resnet1"), tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="adrenalmnist3d.npz"):
        train(
            tiny(dataset="adrenal", data_root=str(tmp_path / "none"), dataset_options={}, size=28),
            tmp_path / "c" / "deeper",
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_out_that_is_a_file_is_named(tmp_path):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(FileExistsError, match="taken is an existing file, not a folder: choose another --out"):
        train(tiny(), tmp_path / "taken")


# -- one process per folder ----------------------------------------------------------------------
def test_a_second_run_into_a_held_folder_is_refused_at_once(tmp_path):
    out = tmp_path / "run"
    train(tiny(epochs=1), out, quiet=True)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with claim(out):
        done = cli(out, "--resume")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"in use by another lib25d run (pid {os.getpid()})" in done.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == {**before, ".lock": (out / ".lock").read_bytes()}


def test_two_processes_started_together_exactly_one_runs(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([*CLI, "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    done = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in done) == [0, 2], done
    loser = next(err for rc, err in done if rc == 2)
    assert "in use by another lib25d run" in loser or "already holds a run" in loser
    result = json.loads((out / RESULT).read_text())
    assert len(result["history"]) == 3 and result["metrics"]["final"]["epoch"] == 3


# -- kill -9 anywhere, then --resume -------------------------------------------------------------
@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    assert cli(out).returncode == 0
    return json.loads((out / RESULT).read_text())


@pytest.mark.parametrize(
    "fault", ["step@3", "step@9", "write:checkpoint.pt@2", "write:best.pt@1", "write:result.json@1"]
)
def test_kill_9_then_resume_gives_the_uninterrupted_numbers(fault, uninterrupted, tmp_path):
    out = tmp_path / "run"
    killed = cli(out, fault=fault)
    assert killed.returncode == -9, killed.stderr  # really killed there, not finished
    assert not (out / RESULT).exists()
    resumed = cli(out, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert numbers(json.loads((out / RESULT).read_text())) == numbers(uninterrupted)
    assert not list(out.glob(".*.tmp"))  # what the killed write left is gone


def test_outputs_that_turn_nan_while_the_loss_stays_finite_stop_like_a_nan_loss(tmp_path):
    """lr 1000 on the tiny set: the training loss stays finite, the model's outputs overflow; sklearn alone
    would end the run with a bare "Input contains NaN"."""
    out = tmp_path / "run"
    train(tiny(epochs=1), out, quiet=True)
    with pytest.raises(
        FloatingPointError,
        match=r"diverged: non-finite predictions on split 'val' \(\d+ of 8 "
        r"volumes\) after epoch 2/3.*keeps epoch 1.*--resume --lr 100\b",
    ) as err:
        train(tiny(lr=1000.0), out, resume=True, quiet=True)
    assert "\n" not in str(err.value)
    assert len(torch.load(out / CHECKPOINT, weights_only=False)["history"]) == 1  # the good epoch is kept
