"""Dataset registry, VolumeDataset checks and MedMNIST 3D loading from the real shared Adrenal files."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path

import medmnist
import medmnist.info
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from lib25d.data import MEDMNIST, DatasetInfo, VolumeDataset, available_datasets, dataset_info, load_dataset, medmnist3d

COUNTS = {"train": 1188, "val": 98, "test": 298}
ADRENAL = medmnist.INFO["adrenalmnist3d"]


@pytest.fixture(scope="module")
def shared_root(medmnist_root) -> Path:
    """The real files (conftest finds them; their absence is a broken setup, not a reason to skip)."""
    return medmnist_root


@pytest.fixture
def no_env_root(monkeypatch, tmp_path):
    """Neither the environment nor medmnist's default may point at real data by accident."""
    monkeypatch.delenv(medmnist3d.ENV_ROOT, raising=False)
    monkeypatch.setattr(medmnist.info, "DEFAULT_ROOT", str(tmp_path / "medmnist-default"))


# --- MedMNIST: the real Adrenal files -------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_adrenal_splits_shapes_counts_and_values(shared_root, split):
    ds = load_dataset("adrenal", split, root=shared_root)
    n = COUNTS[split]
    assert len(ds) == n and ds.volumes.shape == (n, 1, 28, 28, 28)
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert set(np.unique(ds.labels)) == {0, 1}
    vols = np.asarray(ds.volumes)
    assert vols.dtype == np.float32
    assert vols.min() == 0.0 and vols.max() == 1.0, "uint8 voxels must be scaled to [0, 1]"
    x, y = ds[n - 1]
    assert x.dtype == torch.float32 and x.shape == (1, 28, 28, 28) and isinstance(y, int)
    assert ds.masks is None and ds.split == split


def test_adrenal_items_match_medmnist_class(shared_root):
    ref = medmnist.AdrenalMNIST3D(split="val", root=str(shared_root), size=28)
    ds = load_dataset("adrenal", "val", root=shared_root)
    for i in (0, 17, 97):
        img, target = ref[i]
        x, y = ds[i]
        np.testing.assert_allclose(x.numpy(), img, atol=1e-6)
        assert y == int(target[0])


def test_adrenal_size_64(shared_root):
    ds = load_dataset("adrenal", "val", size=64, root=shared_root)
    assert ds.volumes.shape == (98, 1, 64, 64, 64) and ds[0][0].shape == (1, 64, 64, 64)
    assert ds.info.shape == (64, 64, 64)
    assert ds.info.identity["md5"] == ADRENAL["MD5_64"]
    assert ds.info.identity["file"].endswith("adrenalmnist3d_64.npz")


def test_adrenal_info_and_dataset_info_agree(shared_root):
    ds = load_dataset("adrenal", "test", root=shared_root)
    info = ds.info
    assert info.name == "adrenal" and info.task == "binary-class" and info.num_classes == 2
    assert info.class_names == ["normal", "hyperplasia"] and info.in_channels == 1 and info.shape == (28, 28, 28)
    assert info.identity == {
        "dataset": "adrenalmnist3d",
        "size": 28,
        "file": str(shared_root / "adrenalmnist3d.npz"),
        "md5": ADRENAL["MD5"],
    }
    assert dataset_info("adrenal", root=shared_root) == info
    json.dumps(info.to_dict())


def test_dataset_info_needs_no_file(no_env_root):
    organ = dataset_info("organ", size=64)
    assert organ.task == "multi-class" and organ.num_classes == 11 and organ.shape == (64, 64, 64)
    # ordered by integer key: '10' (pancreas) comes last, not after '1'
    assert organ.class_names[:3] == ["liver", "kidney-right", "kidney-left"] and organ.class_names[-1] == "pancreas"
    assert dataset_info("fracture").num_classes == 3
    for name in ("nodule", "vessel", "synapse"):
        assert dataset_info(name).task == "binary-class"


def test_env_var_root(shared_root, monkeypatch, tmp_path):
    monkeypatch.setenv("LIB25D_DATA_ROOT", str(shared_root))
    assert len(load_dataset("adrenal", "val")) == 98
    # an explicit root wins over the environment
    monkeypatch.setenv("LIB25D_DATA_ROOT", str(tmp_path))
    assert len(load_dataset("adrenal", "val", root=shared_root)) == 98
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        load_dataset("adrenal", "val")


def test_medmnist_default_root_is_the_fallback(shared_root, monkeypatch):
    monkeypatch.delenv("LIB25D_DATA_ROOT", raising=False)
    monkeypatch.setattr(medmnist.info, "DEFAULT_ROOT", str(shared_root))
    assert len(load_dataset("adrenal", "test")) == 298


@pytest.mark.parametrize(
    "size, file, url", [(28, "adrenalmnist3d.npz", "url"), (64, "adrenalmnist3d_64.npz", "url_64")]
)
def test_missing_file_message(tmp_path, size, file, url):
    with pytest.raises(FileNotFoundError) as err:
        load_dataset("adrenal", "train", size=size, root=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    for part in (file, str(tmp_path), "LIB25D_DATA_ROOT", "--data-root", "download=True", ADRENAL[url]):
        assert part in msg, f"{part!r} missing from: {msg}"


def test_failed_download_becomes_clear_error(tmp_path, monkeypatch):
    calls = []

    def offline(self):
        calls.append(self.root)
        raise RuntimeError("Automatic download failed!\n  multi-line medmnist text")

    monkeypatch.setattr(medmnist.AdrenalMNIST3D, "download", offline)
    root = tmp_path / "new-root"
    with pytest.raises(FileNotFoundError, match="download failed") as err:
        load_dataset("adrenal", "val", root=root, download=True)
    assert calls == [str(root)] and root.is_dir()
    assert "adrenalmnist3d.npz" in str(err.value) and "\n" not in str(err.value)


def test_truncated_file_fails_md5(shared_root, tmp_path):
    data = (shared_root / "adrenalmnist3d.npz").read_bytes()
    (tmp_path / "adrenalmnist3d.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        load_dataset("adrenal", "train", root=tmp_path)
    assert "delete" in str(err.value) and ADRENAL["MD5"] in str(err.value)


def test_corrupt_byte_fails_md5(shared_root, tmp_path):
    data = bytearray((shared_root / "adrenalmnist3d_64.npz").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "adrenalmnist3d_64.npz").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        load_dataset("adrenal", "val", size=64, root=tmp_path)


def test_md5_is_cached_per_path_mtime_size(shared_root, tmp_path, monkeypatch):
    shutil.copy(shared_root / "adrenalmnist3d.npz", tmp_path / "adrenalmnist3d.npz")
    hashed = []
    real = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda fh, digest: hashed.append(fh.name) or real(fh, digest))
    load_dataset("adrenal", "val", root=tmp_path)
    load_dataset("adrenal", "test", root=tmp_path)
    assert hashed == [str((tmp_path / "adrenalmnist3d.npz").resolve())]
    st = (tmp_path / "adrenalmnist3d.npz").stat()
    os.utime(tmp_path / "adrenalmnist3d.npz", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    load_dataset("adrenal", "val", root=tmp_path)
    assert len(hashed) == 2, "a touched file must be hashed again"


def test_flag_alias(shared_root):
    assert load_dataset("adrenalmnist3d", "val", root=shared_root).info.name == "adrenal"


# --- names, splits, options -----------------------------------------------------------------


def test_available_datasets():
    # the MedMNIST 3D datasets in medmnist.INFO's own order, then ours
    assert available_datasets() == ["organ", "nodule", "adrenal", "fracture", "vessel", "synapse", "synthetic"]


def test_the_torch_free_name_table_is_medmnists_own():
    """lib25d.data.registry writes the six names out (medmnist's package imports torch); they must stay what
    medmnist.INFO lists as 3D, flags and order alike."""
    assert list(MEDMNIST.values()) == [flag for flag in medmnist.INFO if flag.endswith("mnist3d")]


@pytest.mark.parametrize("bad", ["adrenal3d", "", "mnist", "ADRENALMNIST"])
def test_unknown_name_lists_valid_names(bad):
    for call in (lambda: load_dataset(bad, "train"), lambda: dataset_info(bad)):
        with pytest.raises(ValueError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg
        for name in [*available_datasets(), "nifti:"]:
            assert name in msg


def test_unknown_split_lists_valid_splits(shared_root):
    with pytest.raises(ValueError, match="train, val, test"):
        load_dataset("adrenal", "valid", root=shared_root)
    with pytest.raises(ValueError, match="train, val, test"):
        load_dataset("synthetic", "training")


def test_bad_size_and_options(shared_root):
    with pytest.raises(ValueError, match="28 or 64"):
        load_dataset("adrenal", "val", size=32, root=shared_root)
    with pytest.raises(ValueError, match="no option\\(s\\) seed; it takes only subset"):
        load_dataset("adrenal", "val", root=shared_root, seed=3)
    with pytest.raises(ValueError, match="no option\\(s\\) n_trian; valid: n_train, n_val"):
        load_dataset("synthetic", "val", n_trian=3)
    with pytest.raises(ValueError, match="CSV"):
        load_dataset("nifti:", "train")


# --- VolumeDataset and DatasetInfo ----------------------------------------------------------


def _info(num_classes: int = 2, shape=(4, 5, 6), channels: int = 1) -> DatasetInfo:
    task = "binary-class" if num_classes == 2 else "multi-class"
    return DatasetInfo("toy", task, num_classes, [str(i) for i in range(num_classes)], channels, shape)


def test_volume_dataset_items_and_batches():
    vols = np.random.default_rng(0).random((6, 2, 4, 5, 6)).astype(np.float32)
    ds = VolumeDataset(vols, np.array([0, 1, 0, 1, 1, 0]), _info(channels=2), "train")
    x, y = ds[1]
    assert x.shape == (2, 4, 5, 6) and x.dtype == torch.float32 and y == 1
    x.zero_()
    assert vols[1].any(), "items must be copies: editing a batch may not change the dataset"
    xb, yb = next(iter(DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 2, 4, 5, 6) and yb.dtype == torch.int64


def test_volume_dataset_rejects_empty_split():
    with pytest.raises(ValueError, match="'toy' split 'val' is empty"):
        VolumeDataset(np.zeros((0, 1, 4, 5, 6), np.float32), np.zeros(0, np.int64), _info(), "val")


@pytest.mark.parametrize("label", [2, -1])
def test_volume_dataset_rejects_labels_out_of_range(label):
    with pytest.raises(ValueError, match=rf"label {label} at index 2 is outside \[0, 2\)"):
        VolumeDataset(np.zeros((3, 1, 4, 5, 6), np.float32), np.array([0, 1, label]), _info(), "train")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_volume_dataset_names_first_nonfinite_volume(bad):
    vols = np.zeros((80, 1, 4, 5, 6), np.float32)
    vols[70, 0, 1, 2, 3] = bad  # beyond the first check chunk
    vols[75, 0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match="volume 70 holds NaN or inf"):
        VolumeDataset(vols, np.zeros(80, np.int64), _info(), "test")


def test_volume_dataset_rejects_wrong_shapes():
    with pytest.raises(ValueError, match="expected"):
        VolumeDataset(np.zeros((3, 4, 5, 6), np.float32), np.zeros(3, np.int64), _info(), "train")
    with pytest.raises(ValueError, match="masks"):
        VolumeDataset(
            np.zeros((3, 1, 4, 5, 6), np.float32),
            np.zeros(3, np.int64),
            _info(),
            "train",
            masks=np.zeros((3, 4, 5, 5), bool),
        )


def test_dataset_info_validates():
    with pytest.raises(ValueError, match="binary"):
        DatasetInfo("x", "binary-class", 3, ["a", "b", "c"], 1, (4, 4, 4))
    with pytest.raises(ValueError, match="class names"):
        DatasetInfo("x", "multi-class", 3, ["a", "b"], 1, (4, 4, 4))
    with pytest.raises(ValueError, match="task"):
        DatasetInfo("x", "multi-label", 3, ["a", "b", "c"], 1, (4, 4, 4))
    info = _info(shape=[4, 5, 6])
    assert info.shape == (4, 5, 6)
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.num_classes = 3


def test_subset_is_stratified_seeded_and_recorded(medmnist_root):
    full = load_dataset("adrenal", "train", root=medmnist_root)
    a = load_dataset("adrenal", "train", root=medmnist_root, subset=40)
    b = load_dataset("adrenal", "train", root=medmnist_root, subset=40)
    assert len(a) == 40 and np.array_equal(a.labels, b.labels)
    assert np.array_equal(np.asarray(a.volumes), np.asarray(b.volumes))
    share = full.labels.mean()
    assert abs(a.labels.mean() - share) < 0.05
    assert a.info.identity["subset"] == 40
    syn = load_dataset("synthetic", "test", size=16, n_test=20, subset=6)
    assert len(syn) == 6 and syn.masks.shape == (6, 16, 16, 16)
