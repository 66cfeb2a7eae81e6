"""NIfTI CSV datasets: axis order, stacking, intensity options, crop, resampling, cache, errors."""

from __future__ import annotations

from pathlib import Path

import nibabel
import numpy as np
import pytest

from lib25d.data import dataset_info, load_dataset, scans


def write_nii(path: Path, xyz: np.ndarray) -> Path:
    """Save an (X, Y, Z) array as NIfTI with an identity affine."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.Nifti1Image(np.asarray(xyz, dtype=np.float32), np.eye(4)).to_filename(path)
    return path


def write_csv(folder: Path, rows: list[str], header: str = "image,label,split") -> Path:
    path = folder / "scans.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def ramp(shape=(6, 7, 8), offset: float = 0.0) -> np.ndarray:
    """Distinct value per voxel, so any axis mix-up shows."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + offset


@pytest.fixture
def two_rows(tmp_path: Path) -> Path:
    write_nii(tmp_path / "img" / "a.nii.gz", ramp())
    write_nii(tmp_path / "img" / "b.nii.gz", ramp(offset=5))
    return write_csv(tmp_path, ["img/a.nii.gz,0,train", "img/b.nii.gz,1,train"])


def test_axis_order_is_zyx(two_rows):
    ds = load_dataset(f"nifti:{two_rows}", "train", normalize="none")
    xyz = ramp()
    assert ds.volumes.shape == (2, 1, 8, 7, 6) and ds.info.shape == (8, 7, 6)
    assert ds.volumes[0, 0, 3, 2, 1] == xyz[1, 2, 3]  # (D, H, W) = (Z, Y, X)
    np.testing.assert_array_equal(ds.volumes[0, 0], xyz.transpose(2, 1, 0))
    assert ds.labels.tolist() == [0, 1] and ds.masks is None


def test_two_modalities_are_stacked_as_channels(tmp_path):
    write_nii(tmp_path / "ct.nii.gz", ramp())
    write_nii(tmp_path / "pet.nii.gz", -ramp())
    csv = write_csv(tmp_path, ["ct.nii.gz; pet.nii.gz,1,train", "ct.nii.gz;pet.nii.gz,0,train"])
    ds = load_dataset(f"nifti:{csv}", "train", normalize="none")
    assert ds.info.in_channels == 2 and ds.volumes.shape == (2, 2, 8, 7, 6)
    np.testing.assert_array_equal(ds.volumes[0, 0], ramp().transpose(2, 1, 0))
    np.testing.assert_array_equal(ds.volumes[0, 1], -ramp().transpose(2, 1, 0))
    x, y = ds[0]
    assert tuple(x.shape) == (2, 8, 7, 6) and y == 1


def test_ct_window(tmp_path):
    hu = np.array([-1000, -150, 50, 250, 1000, 0, 0, 0], dtype=np.float32).reshape(8, 1, 1)
    write_nii(tmp_path / "ct.nii.gz", np.broadcast_to(hu, (8, 2, 2)))
    csv = write_csv(tmp_path, ["ct.nii.gz,0,test"])
    ds = load_dataset(f"nifti:{csv}", "test", window=(-150, 250))
    np.testing.assert_allclose(ds.volumes[0, 0, 0, 0, :5], [0.0, 0.0, 0.5, 1.0, 1.0])
    assert ds.info.identity["preprocess"]["window"] == (-150.0, 250.0)


def test_zscore_and_default_minmax(two_rows):
    z = load_dataset(f"nifti:{two_rows}", "train", normalize="zscore").volumes
    np.testing.assert_allclose(z.mean(axis=(2, 3, 4)), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=(2, 3, 4)), 1, atol=1e-4)
    m = load_dataset(f"nifti:{two_rows}", "train").volumes  # default: min-max per image
    assert m.min(axis=(2, 3, 4)).tolist() == [[0.0], [0.0]] and m.max(axis=(2, 3, 4)).tolist() == [[1.0], [1.0]]


def test_resampling_to_target_shape(tmp_path):
    write_nii(tmp_path / "a.nii.gz", np.full((14, 12, 10), 3.0))
    write_nii(tmp_path / "b.nii.gz", ramp((20, 9, 5)))
    csv = write_csv(tmp_path, ["a.nii.gz,0,val", "b.nii.gz,1,val"])
    ds = load_dataset(f"nifti:{csv}", "val", target_shape=(8, 8, 8), normalize="none")
    assert ds.volumes.shape == (2, 1, 8, 8, 8) and ds.info.shape == (8, 8, 8)
    np.testing.assert_allclose(ds.volumes[0], 3.0)
    assert dataset_info(f"nifti:{csv}", target_shape=(8, 8, 8), normalize="none") == ds.info


def test_crop_around_mask_centre_of_mass(tmp_path):
    xyz = ramp((12, 12, 12))
    mask = np.zeros((12, 12, 12), np.float32)
    mask[2:5, 6:9, 8:11] = 1  # centre (x, y, z) = (3, 7, 9) -> (d, h, w) = (9, 7, 3)
    write_nii(tmp_path / "img.nii.gz", xyz)
    write_nii(tmp_path / "mask.nii.gz", mask)
    csv = write_csv(tmp_path, ["img.nii.gz,1,train,mask.nii.gz"], header="image,label,split,mask")
    ds = load_dataset(f"nifti:{csv}", "train", crop=(3, 5, 5), normalize="none")
    dhw = xyz.transpose(2, 1, 0)
    np.testing.assert_array_equal(ds.volumes[0, 0], dhw[8:11, 5:10, 1:6])
    assert ds.masks.shape == (1, 3, 5, 5)
    np.testing.assert_array_equal(np.argwhere(ds.masks[0]).mean(axis=0), [1, 2, 2])  # centred in the crop


def test_crop_pads_with_image_minimum_at_border(tmp_path):
    xyz = ramp((10, 10, 10), offset=7)
    mask = np.zeros((10, 10, 10), np.float32)
    mask[0, 0, 0] = 1
    write_nii(tmp_path / "img.nii.gz", xyz)
    write_nii(tmp_path / "mask.nii.gz", mask)
    csv = write_csv(tmp_path, ["img.nii.gz,0,train,mask.nii.gz"], header="image,label,split,mask")
    vol = load_dataset(f"nifti:{csv}", "train", crop=(4, 4, 4), normalize="none").volumes[0, 0]
    assert vol.shape == (4, 4, 4)
    np.testing.assert_array_equal(vol[2:, 2:, 2:], xyz.transpose(2, 1, 0)[:2, :2, :2])
    assert (vol[:2] == 7).all() and (vol[:, :2] == 7).all()


def test_crop_then_resample_and_mask_follows(tmp_path):
    mask = np.zeros((16, 16, 16), np.float32)
    mask[6:10, 6:10, 6:10] = 1
    write_nii(tmp_path / "img.nii.gz", ramp((16, 16, 16)))
    write_nii(tmp_path / "m.nii.gz", mask)
    csv = write_csv(tmp_path, ["img.nii.gz,0,train,m.nii.gz"], header="image,label,split,mask")
    ds = load_dataset(f"nifti:{csv}", "train", crop=(8, 8, 8), target_shape=(4, 4, 4))
    assert ds.volumes.shape == (1, 1, 4, 4, 4) and ds.masks.shape == (1, 4, 4, 4)
    assert ds.masks[0, 1:3, 1:3, 1:3].all() and ds.masks[0].sum() == 8


def test_cache_hit_does_not_read_files_again(two_rows, monkeypatch):
    first = load_dataset(f"nifti:{two_rows}", "train", target_shape=(4, 4, 4))
    cache = two_rows.parent / ".lib25d_cache"
    assert len(list(cache.glob("*.npz"))) == 2
    assert not list(cache.glob(".tmp-*")), "no temporary file may be left behind"

    def refuse(*args, **kwargs):
        raise AssertionError("a scan was read on a cache hit")

    monkeypatch.setattr(scans, "read_scan", refuse)
    second = load_dataset(f"nifti:{two_rows}", "train", target_shape=(4, 4, 4))
    np.testing.assert_array_equal(first.volumes, second.volumes)
    with pytest.raises(AssertionError, match="cache hit"):  # other options: a different cache entry
        load_dataset(f"nifti:{two_rows}", "train", target_shape=(5, 5, 5))


def test_cache_notices_a_changed_file(two_rows, tmp_path):
    before = load_dataset(f"nifti:{two_rows}", "train", normalize="none").volumes
    write_nii(tmp_path / "img" / "a.nii.gz", ramp(offset=100))
    after = load_dataset(f"nifti:{two_rows}", "train", normalize="none").volumes
    np.testing.assert_array_equal(after[0], before[0] + 100)


def test_cache_dir_argument_and_no_cache(two_rows, tmp_path):
    load_dataset(f"nifti:{two_rows}", "train", cache_dir=tmp_path / "elsewhere")
    assert len(list((tmp_path / "elsewhere").glob("*.npz"))) == 2
    assert not (two_rows.parent / ".lib25d_cache").exists()
    load_dataset(f"nifti:{two_rows}", "train", cache=False)
    assert not (two_rows.parent / ".lib25d_cache").exists()


def test_relative_paths_start_at_csv_folder(two_rows, tmp_path, monkeypatch):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert len(load_dataset(f"nifti:{two_rows}", "train")) == 2


def test_classes_from_labels_and_arguments(tmp_path):
    write_nii(tmp_path / "a.nii.gz", ramp())
    csv = write_csv(tmp_path, ["a.nii.gz,0,train", "a.nii.gz,2,train", "a.nii.gz,1,test"])
    info = load_dataset(f"nifti:{csv}", "train").info
    assert info.num_classes == 3 and info.task == "multi-class" and info.class_names == ["0", "1", "2"]
    assert (
        info.name == f"nifti:{csv}"
        and info.identity["csv"] == str(csv.resolve())
        and len(info.identity["sha256"]) == 64
    )
    named = load_dataset(f"nifti:{csv}", "test", num_classes=4, class_names=["a", "b", "c", "d"]).info
    assert named.num_classes == 4 and named.class_names == ["a", "b", "c", "d"]
    with pytest.raises(ValueError, match="label 2 but num_classes=2"):
        load_dataset(f"nifti:{csv}", "train", num_classes=2)
    with pytest.raises(ValueError, match="class_names"):
        load_dataset(f"nifti:{csv}", "train", class_names=["a", "b"])
    binary = write_csv(tmp_path, ["a.nii.gz,0,train", "a.nii.gz,0,val"])
    assert load_dataset(f"nifti:{binary}", "val").info.task == "binary-class"


# --- errors ---------------------------------------------------------------------------------


def test_missing_image_names_path_and_row(tmp_path):
    write_nii(tmp_path / "a.nii.gz", ramp())
    csv = write_csv(tmp_path, ["a.nii.gz,0,train", "gone.nii.gz,1,train"])
    with pytest.raises(FileNotFoundError) as err:
        load_dataset(f"nifti:{csv}", "train")
    msg = str(err.value)
    assert str(tmp_path / "gone.nii.gz") in msg and "line 3" in msg and str(csv) in msg and "\n" not in msg


def test_missing_csv(tmp_path):
    with pytest.raises(FileNotFoundError, match="image, label, split"):
        load_dataset(f"nifti:{tmp_path / 'none.csv'}", "train")


def test_bad_columns_list_required(tmp_path):
    csv = write_csv(tmp_path, ["a.nii.gz,0"], header="path,label")
    with pytest.raises(ValueError, match="image, split: required columns are image, label, split"):
        load_dataset(f"nifti:{csv}", "train")


@pytest.mark.parametrize(
    "row, match",
    [
        ("a.nii.gz,one,train", "not an integer"),
        ("a.nii.gz,-1,train", "negative"),
        ("a.nii.gz,0,training", "split 'training'"),
        (",0,train", "empty 'image'"),
    ],
)
def test_bad_cells_name_the_line(tmp_path, row, match):
    write_nii(tmp_path / "a.nii.gz", ramp())
    csv = write_csv(tmp_path, ["a.nii.gz,0,train", row])
    with pytest.raises(ValueError, match=match) as err:
        load_dataset(f"nifti:{csv}", "train")
    assert f"{csv}:3" in str(err.value)


def test_channel_count_mismatch(tmp_path):
    write_nii(tmp_path / "a.nii.gz", ramp())
    csv = write_csv(tmp_path, ["a.nii.gz;a.nii.gz,0,train", "a.nii.gz,1,test"])
    with pytest.raises(ValueError, match="same modalities"):
        load_dataset(f"nifti:{csv}", "train")


def test_modalities_on_different_grids(tmp_path):
    write_nii(tmp_path / "a.nii.gz", ramp())
    write_nii(tmp_path / "b.nii.gz", ramp((6, 7, 9)))
    csv = write_csv(tmp_path, ["a.nii.gz;b.nii.gz,0,train"])
    with pytest.raises(ValueError, match="co-register"):
        load_dataset(f"nifti:{csv}", "train")


def test_shapes_must_agree_without_resampling(tmp_path):
    write_nii(tmp_path / "a.nii.gz", ramp())
    write_nii(tmp_path / "b.nii.gz", ramp((6, 7, 9)))
    csv = write_csv(tmp_path, ["a.nii.gz,0,train", "b.nii.gz,1,train"])
    with pytest.raises(ValueError, match="target_shape or crop"):
        load_dataset(f"nifti:{csv}", "train")
    assert load_dataset(f"nifti:{csv}", "train", target_shape=(4, 4, 4)).volumes.shape == (2, 1, 4, 4, 4)


def test_empty_split(two_rows):
    with pytest.raises(ValueError, match="split 'test' is empty"):
        load_dataset(f"nifti:{two_rows}", "test")


def test_nonfinite_voxels_name_the_volume(tmp_path):
    bad = ramp()
    bad[1, 1, 1] = np.nan
    write_nii(tmp_path / "a.nii.gz", ramp())
    write_nii(tmp_path / "nan.nii.gz", bad)
    csv = write_csv(tmp_path, ["a.nii.gz,0,train", "nan.nii.gz,1,train"])
    with pytest.raises(ValueError, match="volume 1 holds NaN"):
        load_dataset(f"nifti:{csv}", "train", normalize="none")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"window": (250, -150)}, "below"),
        ({"window": (0,)}, "window"),
        ({"window": (-150, 250), "normalize": "zscore"}, "only one"),
        ({"normalize": "robust"}, "zscore"),
        ({"target_shape": (8, 8)}, "target_shape"),
        ({"crop": (8, 0, 8)}, "crop"),
    ],
)
def test_invalid_options(two_rows, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset(f"nifti:{two_rows}", "train", **kwargs)


def test_unwritable_cache_warns_and_still_loads(two_rows, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should go")
    with pytest.warns(UserWarning, match="cache_dir"):
        ds = load_dataset(f"nifti:{two_rows}", "train", cache_dir=blocker / "cache")
    assert len(ds) == 2
