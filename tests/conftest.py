"""Shared fixtures: the real AdrenalMNIST3D files and small local weight files."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"


@pytest.fixture(scope="session")
def medmnist_root() -> Path:
    if not (SHARED_MEDMNIST / "adrenalmnist3d.npz").is_file():
        pytest.fail(f"real AdrenalMNIST3D files expected in {SHARED_MEDMNIST} (../shared beside the repo)")
    return SHARED_MEDMNIST


@pytest.fixture(scope="session")
def resnet18_file(tmp_path_factory) -> Path:
    """A local 'pretrained' file: torchvision resnet18 with seeded random weights."""
    torch.manual_seed(1234)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread: tiny workloads gain nothing from more, and lose a lot on a busy machine.
    Test modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
