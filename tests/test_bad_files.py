"""Bad input files fail with one line naming the file and the problem, never a traceback.

Each test builds its bad file in tmp_path: non-finite voxels (NIfTI, MedMNIST-style files,
arrays), damaged NIfTI scans and cache entries, unreadable CSVs, weights files that are not
state dicts (or do not fit), profile YAML files and result records.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import nibabel
import numpy as np
import pytest
import torch
import torchvision

from lib25d.data import DatasetInfo, VolumeDataset, dataset_info, load_dataset, medmnist3d
from lib25d.data import scans as nifti
from lib25d.models import build_model
from lib25d.models.backbone import backbone_network
from study import results as R
from study import tables as T
from study.profiles import ProfileError, from_dict, load_profile

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_thread")


def write_nii(path: Path, xyz: np.ndarray) -> Path:
    nibabel.Nifti1Image(np.asarray(xyz, dtype=np.float32), np.eye(4)).to_filename(path)
    return path


def ramp(shape=(6, 7, 8)) -> np.ndarray:
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def scans(tmp_path: Path, bad: np.ndarray | None = None, name: str = "bad.nii.gz") -> tuple[Path, Path]:
    """CSV with a good scan (line 2) and ``name`` (line 3, train volume 1), from ``bad`` if given."""
    write_nii(tmp_path / "good.nii.gz", ramp())
    if bad is not None:
        write_nii(tmp_path / name, bad)
    csv = tmp_path / "scans.csv"
    csv.write_text(f"image,label,split\ngood.nii.gz,0,train\n{name},1,train\n")
    return csv, tmp_path / name


def one_line_message(err: pytest.ExceptionInfo, *parts: str) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    for part in parts:
        assert part in text, (part, text)
    return text


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def assert_one_error_line(proc: subprocess.CompletedProcess, prefix: str, *parts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(prefix), lines[0]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return lines[0]


# -- non-finite voxels ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("normalize", [None, "zscore"])  # None: min-max, which turned NaN scans into zeros
def test_nifti_scan_with_nonfinite_voxels_is_refused_with_file_and_row(tmp_path, value, normalize):
    bad = ramp()
    bad[1, 2, 3] = value
    csv, scan = scans(tmp_path, bad)
    with pytest.raises(ValueError) as err:
        load_dataset(f"nifti:{csv}", "train", normalize=normalize)
    one_line_message(err, str(scan), "NaN or inf", f"CSV {csv} line 3", "volume 1")


def test_nifti_cache_written_before_the_check_is_not_used(tmp_path, monkeypatch):
    """Old code cached a NaN scan min-max scaled to zeros; that entry must not bypass the check."""
    bad = ramp()
    bad[0, 0, 0] = np.nan
    csv, scan = scans(tmp_path, bad)
    rows, _ = nifti.read_table(csv)
    opts = nifti.ScanOptions.make()
    cache = tmp_path / nifti.CACHE_FOLDER
    cache.mkdir()
    with monkeypatch.context() as m:
        m.setattr(nifti, "CACHE_VERSION", 1)
        stale = cache / f"{nifti._cache_key(rows[1], opts)}.npz"
    np.savez(stale, volume=np.zeros((1, 8, 7, 6), np.float32))
    with pytest.raises(ValueError) as err:
        load_dataset(f"nifti:{csv}", "train")
    one_line_message(err, str(scan), "NaN or inf")


def test_nifti_cache_entry_holding_nan_is_redone_and_refused(tmp_path):
    bad = ramp()
    bad[0, 0, 0] = np.nan
    csv, scan = scans(tmp_path, bad)
    rows, _ = nifti.read_table(csv)
    cache = tmp_path / nifti.CACHE_FOLDER
    cache.mkdir()
    entry = cache / f"{nifti._cache_key(rows[1], nifti.ScanOptions.make(normalize='zscore'))}.npz"
    np.savez(entry, volume=np.full((1, 8, 7, 6), np.nan, np.float32))
    with pytest.raises(ValueError) as err:
        load_dataset(f"nifti:{csv}", "train", normalize="zscore")
    one_line_message(err, str(scan), "NaN or inf", "line 3")


def _fake_medmnist(tmp_path: Path, monkeypatch, arrays: dict[str, np.ndarray]) -> Path:
    """A non-official adrenal file accepted by the MD5 check (its own MD5 stands in for the official one)."""
    path = tmp_path / medmnist3d.file_name("adrenal")
    np.savez(path, **arrays)
    md5 = hashlib.md5(path.read_bytes()).hexdigest()
    monkeypatch.setattr(medmnist3d, "_official", lambda name, size: (md5, "https://example.org/adrenal.npz"))
    return path


def test_medmnist_file_with_float_nan_images_names_file_split_and_volume(tmp_path, monkeypatch):
    images = np.zeros((4, 28, 28, 28), np.float32)
    images[2, 5, 5, 5] = np.nan
    path = _fake_medmnist(tmp_path, monkeypatch, {"train_images": images, "train_labels": np.zeros((4, 1))})
    with pytest.raises(ValueError) as err:
        load_dataset("adrenal", "train", root=tmp_path)
    one_line_message(err, str(path), "train volume 2", "NaN or inf")


def test_medmnist_file_without_the_split_names_file_and_array(tmp_path, monkeypatch):
    path = _fake_medmnist(
        tmp_path, monkeypatch, {"train_images": np.zeros((4, 28, 28, 28), np.uint8), "train_labels": np.zeros((4, 1))}
    )
    with pytest.raises(ValueError) as err:
        load_dataset("adrenal", "val", root=tmp_path)
    one_line_message(err, str(path), "no val_images or val_labels array", "download")


@pytest.mark.parametrize("label", [0.5, np.nan])
def test_array_labels_that_are_not_class_indices_name_the_index(label):
    info = DatasetInfo("arrays", "binary-class", 2, ["a", "b"], 1, (4, 5, 6))
    with pytest.raises(ValueError) as err:
        VolumeDataset(np.zeros((3, 1, 4, 5, 6), np.float32), np.array([0.0, 1.0, label]), info, "train")
    one_line_message(err, "dataset 'arrays' split 'train'", "at index 2", "not a class index")


# -- NIfTI files and CSVs ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["truncated", "text", "empty"])
def test_corrupt_nifti_scan_names_file_and_row(tmp_path, kind):
    csv, scan = scans(tmp_path, name="bad.nii.gz" if kind == "truncated" else "bad.nii")
    if kind == "truncated":
        write_nii(scan, ramp())
        scan.write_bytes(scan.read_bytes()[:-100])
    else:
        scan.write_text("not an image\n" if kind == "text" else "")
    with pytest.raises(ValueError) as err:
        load_dataset(f"nifti:{csv}", "train")
    one_line_message(err, str(scan), "cannot be read as NIfTI", f"CSV {csv} line 3")


def test_corrupt_first_scan_in_dataset_info_names_file(tmp_path):
    (tmp_path / "a.nii").write_text("hello")
    csv = tmp_path / "scans.csv"
    csv.write_text("image,label,split\na.nii,0,train\n")
    with pytest.raises(ValueError) as err:
        dataset_info(f"nifti:{csv}")
    one_line_message(err, str(tmp_path / "a.nii"), "cannot be read as NIfTI", "line 2")


def test_damaged_cache_file_is_redone(tmp_path):
    csv, _ = scans(tmp_path, ramp() + 1, name="b.nii.gz")
    first = load_dataset(f"nifti:{csv}", "train")
    entries = sorted((tmp_path / nifti.CACHE_FOLDER).glob("*.npz"))
    assert len(entries) == 2
    for entry in entries:
        entry.write_bytes(entry.read_bytes()[:50])  # a half-written or damaged file
    again = load_dataset(f"nifti:{csv}", "train")
    np.testing.assert_array_equal(again.volumes, first.volumes)


@pytest.mark.parametrize(
    "content, problem",
    [
        (gzip.compress(b"\x00\xff" * 500), "not UTF-8 text: a binary file"),
        ("image,label,split\ncafé.nii,0,train\n".encode("latin-1"), "not UTF-8 text"),
    ],
)
def test_unreadable_csv_names_file(tmp_path, content, problem):
    csv = tmp_path / "scans.csv"
    csv.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_dataset(f"nifti:{csv}", "train")
    one_line_message(err, f"CSV {csv} cannot be read", problem, "image,label,split")


def test_semicolon_csv_says_to_use_commas(tmp_path):
    csv = tmp_path / "scans.csv"
    csv.write_text("image;label;split\na.nii;0;train\n")
    with pytest.raises(ValueError) as err:
        load_dataset(f"nifti:{csv}", "train")
    one_line_message(err, str(csv), "lacks column(s) image, label, split", "separate columns with commas")


def test_row_with_extra_cells_names_the_line(tmp_path):
    csv, _ = scans(tmp_path, ramp(), name="b.nii.gz")
    csv.write_text("image,label,split\ngood.nii.gz,0,train\nb.nii.gz,1,train,oops\n")
    with pytest.raises(ValueError) as err:
        load_dataset(f"nifti:{csv}", "train")
    one_line_message(err, f"{csv}:3", "1 more cell(s) than the header")


def test_csv_with_byte_order_mark_loads(tmp_path):
    csv, _ = scans(tmp_path, ramp(), name="b.nii.gz")
    csv.write_bytes(b"\xef\xbb\xbf" + csv.read_bytes())  # as Excel saves "CSV UTF-8"
    assert len(load_dataset(f"nifti:{csv}", "train")) == 2


# -- weights files ------------------------------------------------------------------------------------
def _truncated(path: Path) -> None:
    torch.save(torchvision.models.resnet18().state_dict(), path)
    path.write_bytes(path.read_bytes()[:4096])


def _keys_off(path: Path) -> None:
    state = torchvision.models.resnet18().state_dict()
    del state["fc.bias"]
    state["head.weight"] = torch.zeros(2, 512)
    torch.save(state, path)


WEIGHTS_CASES = {
    "text": (lambda p: p.write_text("these are not weights\n"), "is not a PyTorch state dict (it is a text file)"),
    "empty": (lambda p: p.write_bytes(b""), "(it is empty)"),
    "truncated": (_truncated, "(it is a truncated or corrupt PyTorch file)"),
    "list": (lambda p: torch.save([1, 2, 3], p), "(it holds a list, not a dict"),
    "tensor": (lambda p: torch.save(torch.zeros(3), p), "(it holds a Tensor, not a dict"),
    "pickle": (lambda p: p.write_bytes(pickle.dumps({"a": {1, 2}})), "holds Python objects besides tensors"),
    "checkpoint": (
        lambda p: torch.save({"model": torchvision.models.resnet18().state_dict(), "epoch": 3}, p),
        "training checkpoint whose 'model' entry holds the state dict",
    ),
    "not tensors": (lambda p: torch.save({"lr": 0.1, "epoch": 3}, p), "entry 'lr' is not a tensor but float"),
    "keys": (_keys_off, "do not fit torchvision's resnet18: missing keys fc.bias; unexpected keys head.weight"),
    "shapes": (
        lambda p: torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), p),
        "fc.weight is [2, 512] in the file, [1000, 512] in the network",
    ),
}


@pytest.mark.parametrize("case", list(WEIGHTS_CASES))
def test_bad_weights_file_names_file_and_problem(tmp_path, case):
    make, problem = WEIGHTS_CASES[case]
    path = tmp_path / "w.pt"
    make(path)
    with pytest.raises(ValueError) as err:
        backbone_network("resnet18", path)
    one_line_message(err, str(path), problem)


def test_bad_weights_file_for_a_baseline(tmp_path):
    path = tmp_path / "w.pt"
    torch.save([1, 2], path)
    with pytest.raises(ValueError) as err:
        build_model("acs", weights=path)
    one_line_message(err, str(path), "it holds a list")


def test_damaged_cached_imagenet_weights_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda url, *a, **k: (_ for _ in ()).throw(OSError(url)))
    spec = torchvision.models.ResNet18_Weights.DEFAULT
    cached = tmp_path / "hub" / "checkpoints" / spec.url.split("/")[-1]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"PK\x03\x04 half a download")
    with pytest.raises(RuntimeError) as err:
        backbone_network("resnet18", "imagenet")
    one_line_message(err, str(cached), "cannot be read", "delete the file")


def test_cli_train_with_text_weights_file_is_one_error_line(tmp_path):
    bad = tmp_path / "w.pt"
    bad.write_text("not a state dict\n")
    proc = run_cli(
        "lib25d.cli",
        "train",
        "--dataset",
        "synthetic",
        "--size",
        "16",
        "--weights",
        str(bad),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--option",
        "n_train=8",
        "--option",
        "n_val=4",
        "--option",
        "n_test=4",
        "--quiet",
        cwd=tmp_path,
    )
    assert_one_error_line(
        proc,
        "lib25d train: error: ",
        f"weights file {bad} is not a PyTorch state dict",
        "it is a text file",
        "torch.save(model.state_dict(), path)",
    )


def test_cli_train_on_nan_nifti_scan_is_one_error_line(tmp_path):
    bad = ramp((16, 16, 16))
    bad[3, 3, 3] = np.nan
    write_nii(tmp_path / "good.nii.gz", ramp((16, 16, 16)))
    write_nii(tmp_path / "bad.nii.gz", bad)
    csv = tmp_path / "scans.csv"
    csv.write_text(
        "image,label,split\n"
        + "".join(f"good.nii.gz,{i % 2},{s}\n" for s in ("train", "val", "test") for i in range(2))
        + "bad.nii.gz,1,train\n"
    )
    proc = run_cli(
        "lib25d.cli",
        "train",
        "--dataset",
        f"nifti:{csv}",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "--device",
        "cpu",
        "--quiet",
        cwd=tmp_path,
    )
    assert_one_error_line(
        proc, "lib25d train: error: ", str(tmp_path / "bad.nii.gz"), "NaN or inf", f"CSV {csv} line 8"
    )


# -- profile YAML files -------------------------------------------------------------------------------------
PROFILE_CASES = {
    "invalid yaml": ("profile: x\ndefaults: {epochs: 2\n", "is not valid YAML"),
    "not a mapping": ("- profile\n- x\n", "must hold a YAML mapping (profile:, defaults:, datasets:, ...), not a list"),
    "unknown key": ("profile: x\ndatasets: {synthetic: {}}\nepoch: 2\n", "unknown profile key(s) epoch"),
    "dataset not a mapping": (
        "profile: x\ndatasets: {synthetic: [size, 16]}\n",
        "datasets.synthetic must be a mapping",
    ),
    "threads": ("profile: x\ndatasets: {synthetic: {}}\nthreads: many\n", "threads must be a whole number"),
    "unknown run setting": ("profile: x\ndatasets: {synthetic: {epoch: 2}}\n", "unknown run setting(s) epoch"),
}


@pytest.mark.parametrize("case", list(PROFILE_CASES))
def test_bad_profile_file_names_file_and_problem(tmp_path, case):
    text, problem = PROFILE_CASES[case]
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    one_line_message(err, f"profile file {path}", problem)


def test_binary_profile_file_names_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(gzip.compress(b"\xff" * 100))
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    one_line_message(err, f"profile file {path} cannot be read", "not UTF-8")


def test_profiles_cli_on_invalid_yaml_is_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("profile: x\ndefaults: {epochs: 2\n")
    proc = run_cli("study", "profile", "check", str(path), cwd=tmp_path)
    assert_one_error_line(proc, "python -m study profile: error: ", str(path), "is not valid YAML")


# -- result records ---------------------------------------------------------------------------------------------
def _profile(tmp_path: Path):
    return from_dict(
        {
            "profile": "tiny",
            "results": str(tmp_path / "results"),
            "defaults": {"weights": None},
            "datasets": {"synthetic": {}},
            "table1": ["attention"],
            "table3": ["attention"],
        },
        root=tmp_path,
    )


RECORD_CASES = {
    "truncated result": (R.RESULT, '{"config": {"dataset": "synth', "result.json is truncated or corrupt"),
    "result list": (R.RESULT, "[]", "result.json holds a JSON list, not an object"),
    "incomplete result": (R.RESULT, "{}", "result.json is incomplete (no 'metrics')"),
    "truncated status": (R.STATUS, '{"status": "o', "status.json is truncated or corrupt"),
}


@pytest.mark.parametrize("case", list(RECORD_CASES))
def test_damaged_record_is_a_failed_row_with_its_reason(tmp_path, case):
    name, text, reason = RECORD_CASES[case]
    p = _profile(tmp_path)
    run = p.runs()[0]
    folder = p.run_dir(run.run_id)
    folder.mkdir(parents=True)
    (folder / R.STATUS).write_text(json.dumps({"run_id": run.run_id, "status": "ok", "exit_code": 0}))
    (folder / R.RESULT).write_text("{}")
    (folder / name).write_text(text)
    row = R.collect(p).set_index("run_id").loc[run.run_id]
    assert row.status == "failed" and reason in row.reason, (row.status, row.reason)
    cell = T.compare(T.summarise(R.collect(p)), "table1").iloc[0]["AUROC ours"]
    assert cell.startswith("missing (") and reason in cell


@pytest.mark.parametrize("content", [b"PK\x03\x04 killed while saving", b"not a checkpoint at all"])
def test_damaged_checkpoint_on_resume_and_evaluate_is_one_line(tmp_path, content):
    from lib25d.run.folder import CHECKPOINT

    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(content)
    args = [
        "lib25d.cli",
        "train",
        "--dataset",
        "synthetic",
        "--size",
        "8",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--resume",
    ]
    assert_one_error_line(
        run_cli(*args, cwd=tmp_path),
        "lib25d train: error: ",
        f"checkpoint {out / CHECKPOINT} cannot be read",
        "move it away",
    )
    assert_one_error_line(
        run_cli("lib25d.cli", "evaluate", str(out), "--device", "cpu", cwd=tmp_path),
        "lib25d evaluate: error: ",
        f"checkpoint {out / CHECKPOINT} cannot be read",
        "move it away",
    )
    assert (out / CHECKPOINT).read_bytes() == content  # nothing half written, nothing removed


def test_checkpoint_of_another_program_names_what_it_lacks(tmp_path):
    from lib25d.run.folder import CHECKPOINT

    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {}}, out / CHECKPOINT)
    proc = run_cli("lib25d.cli", "evaluate", str(out), "--device", "cpu", cwd=tmp_path)
    assert_one_error_line(
        proc,
        "lib25d evaluate: error: ",
        f"checkpoint {out / CHECKPOINT} lacks config",
        "not written by this version of lib25d",
    )
