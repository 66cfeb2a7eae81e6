"""The paper profile rehearsed: config/paper.yaml through the same Snakefile to a built book, with only the
schedule, the data size and the seeds made small. What would crash hours into a 270-run GPU grid crashes
here in minutes. It runs in its own copy of the checkout, apart from the smoke study (conftest).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision
from studyrun import Page, copy_checkout, html_dir, snakemake, study_env

from study.profiles import load_profile

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

REHEARSAL = {  # --config overrides of config/paper.yaml; everything else is the paper's
    "results": "results/rehearsal",
    "seeds": [0],
    "threads": 1,  # two jobs at a time on 2 cores (4 threads would run them one by one)
    "defaults": {"epochs": 2, "warmup_epochs": 1},
    "datasets": {"adrenal": {"dataset_options": {"subset": 8}}},
    "bench": {"sizes": [16], "repeats": 1, "batch_size": 2, "in_process": True},
    "notebooks": {"tutorial": {"epochs": 1, "n_train": 16, "adrenal_subset": 16}},
}


@pytest.fixture(scope="module")
def rehearsal(medmnist_root, tmp_path_factory):
    """config/paper.yaml through the same Snakefile to a built book, in its own copy of the checkout, ImageNet
    weights from a random file in the TORCH_HOME layout."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (torch_home / "hub" / "checkpoints").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), torch_home / "hub" / "checkpoints" / Path(url).name)
    repo = copy_checkout(tmp_path_factory.mktemp("clone"))
    env = study_env(medmnist_root, TORCH_HOME=str(torch_home))
    overrides = [f"{key}={json.dumps(value)}" for key, value in REHEARSAL.items()]
    done = snakemake(
        repo, "--configfile", "config/paper.yaml", "--config", *overrides, "--cores", "2", "--keep-going", env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return load_profile(repo / "config" / "paper.yaml", overrides=REHEARSAL)


def test_paper_profile_rehearsal_builds_the_book(rehearsal):
    profile = rehearsal
    assert profile.defaults["weights"] == "imagenet" and profile.defaults["batch_size"] == 64
    adrenal = profile.runs(datasets=["adrenal"])
    assert len(adrenal) == 9 and len(profile.runs()) == 54  # six datasets x nine methods (gated, spatial), one seed
    for run in adrenal:  # the data that is here trains with the paper's settings
        status = json.loads((profile.run_dir(run.run_id) / "status.json").read_text())
        assert status["status"] == "ok", status
        result = json.loads((profile.run_dir(run.run_id) / "result.json").read_text())
        assert result["config"]["weights"] == "imagenet" and result["config"]["warmup_epochs"] == 1
    html = Page(html_dir(profile) / "book" / "table1.html")
    cells = {tuple(row[:2]): row[2] for row in html.rows if len(row) > 2}
    assert not cells[("adrenal", "attention")].startswith("missing")
    assert cells[("organ", "3d")].startswith("missing (organmnist3d.npz not found")  # offline: shown, not dropped
    assert "Profile paper" in html.text and "imagenet" in html.text
    assert (html_dir(profile) / "book" / "reproduce.html").is_file()
