"""Phantom scans with realistic headers, stored the ways hospitals store them: for the tests, the figures of
the "Your own scans" page and trying lib25d's scan path without patient data.

Anatomy is drawn in RAS millimetres (x to the patient's right, y anterior, z superior) and sampled on a grid of
any spacing; :func:`save_nifti` then stores it in any axis order (``axcodes``: ``RAS``, ``LPS``, sagittal-first
``ASR``, ...) with an affine saying so, and :func:`save_dicom_series` as axial DICOM slices in LPS patient
coordinates, int16 with a rescale, as CT scanners write them. Reading either back with its affine gives the same
anatomy: that is what lib25d's orientation step must recover.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import nibabel
import numpy as np
from nibabel.orientations import axcodes2ornt, ornt_transform

ORIENTATIONS = ("RAS", "LPS", "LAS", "RPI", "ASR", "SAR", "PIL")  # canonical, DICOM's, flips, permutations


def grid(extent_mm: Sequence[float], spacing: Sequence[float]) -> np.ndarray:
    """World RAS coordinates (3, X, Y, Z) of the voxel centres of a field of view ``extent_mm`` at ``spacing``,
    the first at the origin (so grids of any spacing share their first voxel centre)."""
    axes = [np.arange(int(round(e / s))) * s for e, s in zip(extent_mm, spacing)]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def box(points: np.ndarray, low: Sequence[float], high: Sequence[float]) -> np.ndarray:
    """Boolean (X, Y, Z): the points inside an axis-aligned box in mm."""
    return np.all([(p >= lo) & (p < hi) for p, lo, hi in zip(points, low, high)], axis=0)


def ellipsoid(points: np.ndarray, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    """Boolean (X, Y, Z): the points inside an ellipsoid in mm (a sphere for equal radii)."""
    return sum(((p - c) / r) ** 2 for p, c, r in zip(points, centre, radii)) <= 1.0


def affine(spacing: Sequence[float]) -> np.ndarray:
    """The RAS affine of :func:`grid` (voxel index -> mm at the voxel centre)."""
    return np.diag([*map(float, spacing), 1.0])


def save_nifti(
    path: Path,
    ras: np.ndarray,
    spacing: Sequence[float],
    axcodes: str = "RAS",
    dtype=np.float32,
    slope: float = 1.0,
    inter: float = 0.0,
) -> Path:
    """Store an (X, Y, Z) RAS array with its voxels in ``axcodes`` order; ``dtype`` int16 with ``slope`` and
    ``inter`` stores ``(value - inter) / slope`` as CT files store Hounsfield units."""
    image = nibabel.Nifti1Image(np.asarray(ras, dtype=np.float32), affine(spacing))
    image = image.as_reoriented(ornt_transform(axcodes2ornt("RAS"), axcodes2ornt(tuple(axcodes))))
    data = np.asarray(image.dataobj)
    if np.issubdtype(dtype, np.integer):
        data = np.round((data - inter) / slope).astype(dtype)
    out = nibabel.Nifti1Image(data.astype(dtype), image.affine)
    if np.issubdtype(dtype, np.integer):
        out.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_filename(path)
    return path


def save_dicom_series(folder: Path, ras_hu: np.ndarray, spacing: Sequence[float], intercept: float = -1024.0) -> Path:
    """One CT series of axial slices (int16, RescaleIntercept ``intercept``) holding an (X, Y, Z) RAS array of
    Hounsfield units: rows run posterior, columns to the patient's left (LPS), slices superior."""
    from pydicom.dataset import Dataset, FileMetaDataset  # pydicom: only to write DICOM series
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid  # (as above)

    folder.mkdir(parents=True, exist_ok=True)
    sx, sy, sz = map(float, spacing)
    nx, ny, _ = ras_hu.shape
    series, study = generate_uid(), generate_uid()
    for k in range(ras_hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = study, series, "CT", "phantom"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        # voxel (i, j, k) of the RAS grid sits at RAS (i sx, j sy, k sz), LPS (-i sx, -j sy, k sz); column c is
        # i = nx - 1 - c, row r is j = ny - 1 - r
        ds.ImagePositionPatient = [-(nx - 1) * sx, -(ny - 1) * sy, k * sz]
        ds.PixelSpacing, ds.SliceThickness = [sy, sx], sz
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
        pixels = np.round(ras_hu[::-1, ::-1, k].T - intercept).astype(np.int16)  # [row, column] = [-y, -x]
        ds.PixelData = np.ascontiguousarray(pixels).tobytes()
        ds.save_as(folder / f"{k:04d}.dcm", enforce_file_format=True)
    return folder


def write_table(path: Path, rows: list[dict]) -> Path:
    """The cohort's CSV in lib25d's format (columns of the first row; extra ones are for the reader)."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def glioma_like_cohort(
    folder: Path,
    n: Sequence[int] = (96, 32, 64),
    seed: int = 0,
    extent_mm: Sequence[float] = (40.0, 48.0, 44.0),
    spacing_mm: tuple[float, float] = (0.9, 1.2),
    orientations: Sequence[str] = ORIENTATIONS,
) -> Path:
    """A cohort like the paper's glioma MRI, for trying the scan path: three co-registered channels (T1-, T1c- and
    FLAIR-like contrasts) of a head with, in class 1, a lesion of known position (its mask beside it, class 0 an
    empty mask); every scan with its own storage order (one of ``orientations``) and voxel size (uniform in
    ``spacing_mm`` per axis). Returns the CSV (``image`` with three files, ``label``, ``split``, ``mask``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    centre, radii = np.asarray(extent_mm) / 2, np.asarray(extent_mm) * 0.4
    rows = []
    for split, count in zip(("train", "val", "test"), n):
        for i in range(count):
            label = i % 2
            spacing = rng.uniform(*spacing_mm, size=3)
            axcodes = orientations[rng.integers(len(orientations))]
            points = grid(extent_mm, spacing)
            head = ellipsoid(points, centre, radii)
            lesion = np.zeros_like(head)
            if label:
                where = centre + rng.uniform(-0.5, 0.5, size=3) * radii  # inside the head
                lesion = ellipsoid(points, where, [rng.uniform(3.0, 5.0)] * 3) & head
            noise = rng.normal(0, 0.05, (3, *head.shape))
            channels = (
                0.8 * head - 0.3 * lesion + noise[0],
                0.6 * head + 0.6 * lesion + noise[1],
                0.5 * head + 0.5 * lesion + noise[2],
            )
            stem = f"{split}{i:03d}"
            files = [
                save_nifti(folder / f"{stem}_{name}.nii.gz", c, spacing, axcodes).name
                for name, c in zip(("t1", "t1c", "flair"), channels)
            ]
            mask = save_nifti(folder / f"{stem}_mask.nii.gz", lesion, spacing, axcodes, dtype=np.uint8).name
            rows.append(
                {
                    "image": ";".join(files),
                    "label": label,
                    "split": split,
                    "mask": mask,
                    "orientation": axcodes,
                    "spacing": " x ".join(f"{s:.2f}" for s in spacing),
                }
            )
    return write_table(folder / "scans.csv", rows)


def ct_like_cohort(
    folder: Path,
    n: Sequence[int] = (8, 4, 4),
    seed: int = 0,
    extent_mm: Sequence[float] = (64.0, 48.0, 40.0),
    spacing: Sequence[float] = (1.0, 1.0, 2.0),
) -> Path:
    """A cohort like the paper's PDAC CT, for trying the ``pdac-ct`` recipe: an abdomen in Hounsfield units (air,
    fat, soft tissue, a vertebra) with, in class 1, a hypodense lesion; scans alternately stored as DICOM series
    (LPS, int16 with a rescale intercept) and as int16 NIfTI files. Returns the CSV (``image``, ``label``,
    ``split``, ``mask``: DICOM rows have none, so the crop falls back to the centre there)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    points = grid(extent_mm, spacing)
    centre = np.asarray(extent_mm) / 2
    body = ellipsoid(points, centre, centre * [0.85, 0.75, 2.0])
    organ = ellipsoid(points, centre + [4.0, 4.0, 0.0], [12.0, 8.0, 14.0])
    spine = ellipsoid(points, centre - [0.0, 10.0, 0.0], [4.0, 4.0, 30.0])
    rows = []
    for split, count in zip(("train", "val", "test"), n):
        for i in range(count):
            label, stem = i % 2, f"{split}{i:03d}"
            lesion = (
                ellipsoid(points, centre + [4.0, 4.0, 0.0] + rng.uniform(-4, 4, 3), [3.0] * 3)
                if label
                else np.zeros_like(body)
            )
            hu = np.select([spine, lesion, organ, body], [700.0, -20.0, 60.0, -80.0], -1000.0)
            hu = hu + rng.normal(0, 10, hu.shape)
            if (i // 2) % 2 == 0:  # the storage format independent of the class
                image = save_dicom_series(folder / stem, hu, spacing).name
                mask = ""
            else:
                image = save_nifti(folder / f"{stem}.nii.gz", hu, spacing, "LPS", np.int16, 1.0, -1024.0).name
                mask = save_nifti(folder / f"{stem}_mask.nii.gz", lesion, spacing, "LPS", np.uint8).name
            rows.append({"image": image, "label": label, "split": split, "mask": mask})
    return write_table(folder / "scans.csv", rows)
