"""Scans as hospitals store them: one anatomy stored in several ways (RAS, LPS, sagittal-first, anisotropic
voxels, int16 Hounsfield units, a DICOM series) must give the same tensor, so the same slice is called axial
slice k; the paper's two recipes give the shapes and intensities they promise. Files are written by the tests
(study.phantoms), with the headers real scanners write."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lib25d.data import dataset_info, load_dataset
from lib25d.data.preprocess import RECIPES, ScanOptions
from study.phantoms import box, ct_like_cohort, ellipsoid, glioma_like_cohort, grid, save_dicom_series, save_nifti

EXTENT = (24.0, 24.0, 36.0)  # mm: left-right, posterior-anterior, inferior-superior
BOX = ((4.0, 6.0, 24.0), (10.0, 12.0, 30.0))  # a bright box in the upper head-foot range
AXCODES = ("RAS", "LPS", "ASR", "SAR", "PIL")  # canonical, DICOM's order, sagittal-first and other permutations


def anatomy(spacing=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """(ramp + box, ramp) in RAS: the ramp differs along every axis and direction, so any mix-up shows."""
    p = grid(EXTENT, spacing)
    ramp = p[0] + 3 * p[1] + 7 * p[2]
    return ramp + 500.0 * box(p, *BOX), ramp


def write_csv(folder: Path, images: list[str], masks: list[str] | None = None) -> Path:
    header = "image,label,split" + (",mask" if masks else "")
    rows = [f"{img},{i % 2},train" + (f",{masks[i]}" if masks else "") for i, img in enumerate(images)]
    path = folder / "scans.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def axial_slices_with_box(volume: np.ndarray, ramp_dhw: np.ndarray) -> list[int]:
    """Axial (D) slices where the box's contrast is above half."""
    return np.flatnonzero(((volume[0] - ramp_dhw) > 250).any(axis=(1, 2))).tolist()


def test_one_anatomy_in_every_storage_order_is_one_tensor(tmp_path):
    image, ramp = anatomy()
    names = [save_nifti(tmp_path / f"{code}.nii.gz", image, (1, 1, 1), code).name for code in AXCODES]
    csv = write_csv(tmp_path, names)
    canonical = load_dataset(f"nifti:{csv}", "train", normalize="none").volumes
    assert canonical.shape == (len(AXCODES), 1, 36, 24, 24)  # (D, H, W) = (S-I, A-P, L-R) for every storage
    for volume in canonical[1:]:
        np.testing.assert_array_equal(volume, canonical[0])
    dhw = ramp.transpose(2, 1, 0)
    np.testing.assert_allclose(canonical[0, 0], image.transpose(2, 1, 0), rtol=1e-6)
    assert axial_slices_with_box(canonical[0], dhw) == list(range(24, 30))  # box at 24-30 mm, 1 mm voxels
    with pytest.raises(ValueError, match="volumes differ in shape"):  # storage order kept: a mixed cohort
        load_dataset(f"nifti:{csv}", "train", normalize="none", orientation="none")
    alone = write_csv(tmp_path, ["ASR.nii.gz"])
    stored = load_dataset(f"nifti:{alone}", "train", normalize="none", orientation="none").volumes[0]
    assert stored.shape == (1, 24, 36, 24)  # what it calls axial runs left-right here


def test_anisotropic_voxels_resampled_to_1mm_keep_the_axial_slices(tmp_path):
    fine, ramp = anatomy()
    coarse, _ = anatomy((0.8, 0.8, 3.0))  # 0.8 x 0.8 x 3 mm, as a thick-slice CT
    save_nifti(tmp_path / "fine.nii.gz", fine, (1, 1, 1), "RAS")
    save_nifti(tmp_path / "coarse.nii.gz", coarse, (0.8, 0.8, 3.0), "LPS")
    csv = write_csv(tmp_path, ["fine.nii.gz"])
    reference = load_dataset(f"nifti:{csv}", "train", normalize="none").volumes[0]
    csv = write_csv(tmp_path, ["coarse.nii.gz"])
    squashed = load_dataset(f"nifti:{csv}", "train", normalize="none", orientation="none").volumes[0]
    assert squashed.shape == (1, 12, 30, 30)  # what ignoring the spacing gives: 3 mm slices counted as voxels
    resampled = load_dataset(f"nifti:{csv}", "train", normalize="none", spacing=(1, 1, 1)).volumes[0]
    depth = resampled.shape[1]
    assert resampled.shape[2:] == reference.shape[2:] and depth == 34  # the grid's 33 mm at 1 mm
    dhw = ramp.transpose(2, 1, 0)[:depth]
    slices = axial_slices_with_box(resampled, dhw)
    assert min(slices) >= 23 and max(slices) <= 30 and abs(len(slices) - 6) <= 1  # the fine scan's 24-29 within
    # a voxel: the 3 mm samples at 21, 24, 27 and 30 mm say no more about where the box ends
    (x0, y0, z0), (x1, y1, z1) = BOX
    near = box(grid(EXTENT, (1, 1, 1)), (x0 - 3, y0 - 3, z0 - 3), (x1 + 3, y1 + 3, z1 + 3)).transpose(2, 1, 0)
    away = ~near[:depth]  # beyond 3 mm of the box the anatomy is the ramp, which trilinear resampling keeps
    np.testing.assert_allclose(resampled[0, :depth][away], reference[0, :depth][away], rtol=1e-4, atol=1e-2)


def test_dicom_series_int16_hu_and_nifti_give_the_same_volume(tmp_path):
    p = grid(EXTENT, (1, 1, 1))
    hu = np.where(ellipsoid(p, (12, 12, 18), (10, 10, 16)), 50.0, -1000.0) + 750.0 * box(p, *BOX)
    save_dicom_series(tmp_path / "series", hu, (1, 1, 1))  # LPS, int16 + RescaleIntercept -1024
    save_nifti(tmp_path / "ct.nii.gz", hu, (1, 1, 1), "RAS", np.int16, 1.0, -1024.0)
    csv = write_csv(tmp_path, ["series", "ct.nii.gz"])
    ds = load_dataset(f"nifti:{csv}", "train", window=(-150, 250))
    np.testing.assert_array_equal(ds.volumes[0], ds.volumes[1])
    assert sorted(np.unique(ds.volumes[0]).tolist()) == [0.0, 0.5, 1.0]  # air, 50 HU, the 800 HU box
    assert np.flatnonzero((ds.volumes[0, 0] == 1).any(axis=(1, 2))).tolist() == list(range(24, 30))


def test_pdac_ct_recipe_gives_its_shape_and_window(tmp_path):
    csv = ct_like_cohort(tmp_path, n=(2, 0, 0))  # one DICOM series, one int16 NIfTI with its mask
    ds = load_dataset(f"nifti:{csv}", "train", recipe="pdac-ct")
    assert RECIPES["pdac-ct"] == {"window": (-150, 250), "target_shape": (128, 224, 224)}
    assert ds.volumes.shape == (2, 1, 128, 224, 224) and ds.volumes.dtype == np.float32
    assert ds.volumes.min() == 0.0 and ds.volumes.max() == 1.0  # air below -150 HU, bone above 250 HU
    assert ds.info.identity["preprocess"] == {
        "recipe": "pdac-ct",
        "orientation": "RAS",
        "spacing": None,
        "window": (-150.0, 250.0),
        "normalize": "none",
        "foreground": False,
        "crop": None,
        "target_shape": (128, 224, 224),
    }
    small = load_dataset(f"nifti:{csv}", "train", recipe="pdac-ct", target_shape=(16, 32, 32))  # option wins
    assert small.volumes.shape == (2, 1, 16, 32, 32)


def test_glioma_mri_recipe_stacks_modalities_and_centres_the_tumour(tmp_path):
    csv = glioma_like_cohort(tmp_path, n=(4, 0, 0), extent_mm=(40.0, 40.0, 40.0))
    ds = load_dataset(f"nifti:{csv}", "train", recipe="glioma-mri")
    assert ds.volumes.shape == (4, 3, 96, 96, 96) and ds.masks.shape == (4, 96, 96, 96)
    for volume, mask, label in zip(ds.volumes, ds.masks, ds.labels):
        if label:  # centred on the tumour's centre of mass, as the paper crops
            assert np.abs(np.argwhere(mask).mean(axis=0) - 48).max() <= 1.0
        else:
            assert not mask.any()
        assert np.isfinite(volume).all()
    whole = load_dataset(f"nifti:{csv}", "train", recipe="glioma-mri", crop="none").volumes[0]
    np.testing.assert_allclose(whole.mean(axis=(1, 2, 3)), 0, atol=1e-4)  # z-scored per channel
    np.testing.assert_allclose(whole.std(axis=(1, 2, 3)), 1, atol=1e-3)
    assert abs(whole.shape[1] - 40) <= 1  # resampled to 1 mm: the 40 mm field of view


def test_glioma_recipe_without_a_mask_says_what_it_needs(tmp_path):
    image, _ = anatomy()
    save_nifti(tmp_path / "a.nii.gz", image, (1, 1, 1))
    csv = write_csv(tmp_path, ["a.nii.gz"])
    with pytest.raises(ValueError, match=r"scans.csv:2: recipe 'glioma-mri' crops around .* add a mask column") as err:
        load_dataset(f"nifti:{csv}", "train", recipe="glioma-mri")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"orientation": "XYZ"}, r"orientation 'XYZ' is not an axis code: .* RAS, the default, or LPS"),
        ({"orientation": "RAR"}, "not an axis code"),
        ({"recipe": "pdac"}, "unknown recipe 'pdac'; valid: pdac-ct, glioma-mri"),
        ({"spacing": (1, 0, 1)}, r"spacing must be three positive sizes in mm \(D, H, W\)"),
        ({"recipe": "pdac-ct", "normalize": "robust"}, "unknown normalize"),
    ],
)
def test_bad_options_are_one_line(options, match):
    with pytest.raises(ValueError, match=match) as err:
        ScanOptions.make(**options)
    assert "\n" not in str(err.value)


def test_recipe_intensity_is_replaced_by_the_one_given():
    assert ScanOptions.make(recipe="pdac-ct", normalize="zscore").window is None
    assert ScanOptions.make(recipe="glioma-mri", window=(0, 100)).normalize == "none"
    assert ScanOptions.make(orientation="lps").orientation == "LPS"
    assert ScanOptions.make(orientation=None).orientation is None


def test_every_option_is_part_of_the_cache_key(tmp_path):
    image, _ = anatomy()
    save_nifti(tmp_path / "a.nii.gz", image, (1, 1, 1), "LPS")
    csv = write_csv(tmp_path, ["a.nii.gz"])
    for options in (
        {},
        {"orientation": "LPS"},
        {"orientation": "none"},
        {"spacing": (2, 2, 2)},
        {"foreground": True},
        {"recipe": "pdac-ct", "target_shape": (8, 8, 8)},
    ):
        load_dataset(f"nifti:{csv}", "train", **options)
    assert len(list((tmp_path / ".lib25d_cache").glob("*.npz"))) == 6


def test_orientation_code_sets_directions_not_axes(tmp_path):
    image, _ = anatomy()
    save_nifti(tmp_path / "a.nii.gz", image, (1, 1, 1), "ASR")
    csv = write_csv(tmp_path, ["a.nii.gz"])
    ras = load_dataset(f"nifti:{csv}", "train", normalize="none").volumes[0]
    lpi = load_dataset(f"nifti:{csv}", "train", normalize="none", orientation="LPI").volumes[0]
    np.testing.assert_array_equal(lpi, ras[:, ::-1, ::-1, ::-1])  # D still head-foot, now growing inferior


def test_info_without_target_shape_preprocesses_the_first_scan(tmp_path):
    coarse, _ = anatomy((0.8, 0.8, 3.0))
    save_nifti(tmp_path / "a.nii.gz", coarse, (0.8, 0.8, 3.0), "LPS")
    csv = write_csv(tmp_path, ["a.nii.gz"])
    info = dataset_info(f"nifti:{csv}", spacing=(1, 1, 1))
    assert info.shape == load_dataset(f"nifti:{csv}", "train", spacing=(1, 1, 1)).info.shape == (34, 24, 24)


@pytest.mark.parametrize(
    "cohort, options",
    [
        (ct_like_cohort, ["recipe=pdac-ct", "target_shape=16,24,24"]),
        (glioma_like_cohort, ["recipe=glioma-mri", "crop=16,16,16"]),
    ],
)
def test_recipes_train_end_to_end_from_the_command_line(tmp_path, capsys, cohort, options):
    """Each recipe through `lib25d train`, at a laptop's size (the option given beside a recipe wins);
    result.json records the recipe, orientation and spacing the run used."""
    import json

    from lib25d.cli import main

    csv = cohort(tmp_path / "data", n=(4, 2, 2))
    args = [
        "train",
        "--dataset",
        f"nifti:{csv}",
        "--weights",
        "none",
        "--epochs",
        "1",
        "--warmup-epochs",
        "0",
        "--batch-size",
        "2",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(args + [a for o in options for a in ("--option", o)]) == 0
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    preprocess = result["data"]["identity"]["preprocess"]
    assert preprocess["recipe"] == options[0].split("=")[1] and preprocess["orientation"] == "RAS"
    assert preprocess["spacing"] == ([1.0, 1.0, 1.0] if "glioma" in options[0] else None)
    assert result["data"]["in_channels"] == (3 if "glioma" in options[0] else 1)
    assert "test AUROC" in capsys.readouterr().out


def test_the_book_page_gives_the_recipes_as_the_code_has_them():
    page = (Path(__file__).resolve().parents[1] / "book" / "scans.md").read_text()
    pdac, glioma = RECIPES["pdac-ct"], RECIPES["glioma-mri"]
    assert f"window ({pdac['window'][0]}, {pdac['window'][1]}) HU" in page
    assert "target_shape=" + ",".join(map(str, pdac["target_shape"])) in page
    assert glioma["spacing"] == (1.0, 1.0, 1.0) and "resample to 1 mm isotropic" in page
    assert glioma["normalize"] == "zscore" and "z-score per channel" in page
    assert glioma["crop"] == (96, 96, 96) and "crop 96³ around the tumour's centre of mass" in page
