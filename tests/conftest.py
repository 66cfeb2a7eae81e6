"""Shared fixtures: the real AdrenalMNIST3D files, small local weight files, and the smoke study run once
per session (the workflow tests read its book, the cluster test compares its tables with a SLURM run)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torchvision
from studyrun import Study, copy_checkout, snakemake, study_env

REPO = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = REPO.parent / "shared" / "data" / "medmnist"
ADRENAL_FILES = ("adrenalmnist3d.npz", "adrenalmnist3d_64.npz")


def _has_adrenal(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ADRENAL_FILES)


def _download_adrenal() -> Path | None:
    """lib25d's own download (MD5-checked) into medmnist's default folder; None where it fails (no internet)."""
    import medmnist.info

    from lib25d.data.medmnist3d import locate

    root = Path(medmnist.info.DEFAULT_ROOT)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for size in (28, 64):
            locate("adrenal", "val", size=size, root=root, download=True)
    except Exception:  # no network, a proxy, a partial file: the download raises many kinds
        return None
    return root


def find_adrenal(env: str | None, shared: Path, download: Callable[[], Path | None]) -> Path | str:
    """Where the real AdrenalMNIST3D files are: $LIB25D_DATA_ROOT, then ../shared/data/medmnist beside
    the clone, then medmnist's download; else the one message that names all three places."""
    for folder in ([Path(env)] if env else []) + [shared]:
        if _has_adrenal(folder):
            return folder
    downloaded = download()
    if downloaded is not None:
        return downloaded
    return (
        f"the tests need the real AdrenalMNIST3D files {' and '.join(ADRENAL_FILES)}: not in "
        f"$LIB25D_DATA_ROOT ({env or 'unset'}), not in {shared}, and medmnist could not download "
        "them (no internet?); put them in one of these places"
    )


@pytest.fixture(scope="session")
def medmnist_root() -> Path:
    """The real AdrenalMNIST3D files; nowhere is a broken setup, reported once (not a skip)."""
    found = find_adrenal(os.environ.get("LIB25D_DATA_ROOT"), SHARED_MEDMNIST, _download_adrenal)
    if isinstance(found, str):
        pytest.exit(found, returncode=1)
    return found


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


@pytest.fixture(scope="session")
def study(tmp_path_factory, medmnist_root) -> Study:
    """The smoke profile run once, as the README's book command runs it (cores 2, keep going), in a copy
    of the checkout; every test that needs a finished study shares this one."""
    from study.profiles import load_profile

    repo, env = copy_checkout(tmp_path_factory.mktemp("clone")), study_env(medmnist_root)
    done = snakemake(repo, "--configfile", "config/smoke.yaml", "--cores", "2", "--keep-going", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return Study(repo, env, load_profile(repo / "config" / "smoke.yaml"))
