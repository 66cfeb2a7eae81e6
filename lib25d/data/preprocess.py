"""One scan, from its file(s) to a canonical ``(C, D, H, W)`` volume, through MONAI's transforms.

The chain, in order (only reading is not optional): read each modality (a NIfTI file through MONAI's
``NibabelReader``, a DICOM series folder through its ``PydicomReader``), stack the modalities as channels,
``Orientation`` to an axis code (``RAS`` by default), ``Spacing`` to a voxel size in mm, the intensity step (an HU
``window`` scaled to [0, 1], else ``minmax`` / ``zscore`` per channel), ``CropForeground``, a ``crop`` box around
the mask's centre of mass (else the volume's centre), ``Resize`` to ``target_shape`` (trilinear; masks follow
every spatial step and are thresholded at 0.5).

**Axes.** With an orientation code, D is the head-foot axis (axial slices), H anterior-posterior (coronal) and W
left-right (sagittal) for every storage order: the code only sets directions (``RAS``: D grows towards superior,
H towards anterior, W towards right). So ``SliceLayout``'s names are true by construction. ``orientation="none"``
keeps the storage order ((X, Y, Z) -> (D, H, W) = (Z, Y, X), as MedMNIST): the names are then as true as the files.
``spacing``, ``crop`` and ``target_shape`` are (D, H, W) too.

**Recipes** are the paper's two real-world chains (section 3.1) by name: ``pdac-ct`` and ``glioma-mri``
(:data:`RECIPES`); options passed beside a recipe override its values.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

NORMALIZE = ("minmax", "zscore", "none")
CANONICAL = "RAS"
_PAIRS = ("SI", "AP", "LR")  # the letters of lib25d's D, H and W axes
RECIPES: dict[str, dict[str, Any]] = {
    # PDAC CT: resized to 224 x 224 x 128 voxels (H x W x D), clipped to an abdominal window of (-150, 250) HU
    "pdac-ct": {"window": (-150, 250), "target_shape": (128, 224, 224)},
    # glioma MRI: co-registered T1, T1-contrast and FLAIR as channels, resampled to 1 mm isotropic, cropped to
    # 96^3 around the tumour's centre of mass (from its segmentation: the CSV's mask column)
    "glioma-mri": {"spacing": (1.0, 1.0, 1.0), "normalize": "zscore", "crop": (96, 96, 96)},
}
NEEDS_MASK = {"glioma-mri"}  # recipes whose crop is centred on a segmentation


class ScanReadError(ValueError):
    """A scan that its reader refused: the message says what it is, without the path (the caller adds it)."""


def _triple(name: str, value, kind: type = int) -> tuple | None:
    if value is None or (isinstance(value, str) and value.lower() == "none"):
        return None
    try:
        out = tuple(kind(v) for v in ([value] * 3 if isinstance(value, (int, float)) else value))
    except (TypeError, ValueError):
        out = ()
    if len(out) != 3 or min(out) <= 0 or (kind is int and min(out) < 1):
        what = "positive ints" if kind is int else "positive sizes in mm"
        raise ValueError(f"{name} must be three {what} (D, H, W), got {value!r}")
    return out


def _orientation(code) -> str | None:
    if code is None or str(code).lower() == "none":
        return None
    text = str(code).upper()
    pairs = [next((pair for pair in _PAIRS if c in pair), "?") for c in text]
    if sorted(pairs) != sorted(_PAIRS):
        raise ValueError(
            f"orientation {code!r} is not an axis code: three letters, one of L/R, A/P and S/I each "
            f"(e.g. {CANONICAL}, the default, or LPS), or none to keep the storage order"
        )
    return text


@dataclass(frozen=True)
class ScanOptions:
    """The preprocessing of every scan of a dataset, checked before any file is read; part of the cache key
    and of the dataset's identity (what a result file records)."""

    recipe: str | None = None
    orientation: str | None = CANONICAL
    spacing: tuple[float, float, float] | None = None
    window: tuple[float, float] | None = None
    normalize: str = "minmax"
    foreground: bool = False
    crop: tuple[int, int, int] | None = None
    target_shape: tuple[int, int, int] | None = None

    @classmethod
    def make(
        cls,
        recipe: str | None = None,
        orientation=CANONICAL,
        spacing=None,
        window=None,
        normalize: str | None = None,
        foreground: bool = False,
        crop=None,
        target_shape=None,
    ) -> ScanOptions:
        """Checked options; a recipe's values first, then those given (an intensity option replaces the
        recipe's intensity step: window and normalize are one choice)."""
        given = {
            k: v
            for k, v in dict(
                spacing=spacing, window=window, normalize=normalize, crop=crop, target_shape=target_shape
            ).items()
            if v is not None
        }
        if recipe is not None:
            if recipe not in RECIPES:
                raise ValueError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)}")
            base = {
                k: v
                for k, v in RECIPES[recipe].items()
                if not ({"window", "normalize"} & set(given) and k in ("window", "normalize"))
            }
            given = {**base, **given}
        window = given.get("window")
        normalize = given.get("normalize")
        if window is not None:
            try:
                lo, hi = (float(v) for v in window)
            except (TypeError, ValueError):
                raise ValueError(f"window must be (low, high), e.g. (-150, 250), got {window!r}") from None
            if not lo < hi:
                raise ValueError(f"window low must be below high, got {window!r}")
            if normalize not in (None, "none"):
                raise ValueError(f"window and normalize={normalize!r} both rescale intensities: pass only one")
            window, normalize = (lo, hi), "none"
        normalize = normalize or "minmax"
        if normalize not in NORMALIZE:
            raise ValueError(f"unknown normalize {normalize!r}: use one of {', '.join(NORMALIZE)}")
        return cls(
            recipe,
            _orientation(orientation),
            _triple("spacing", given.get("spacing"), float),
            window,
            normalize,
            bool(foreground),
            _triple("crop", given.get("crop")),
            _triple("target_shape", given.get("target_shape")),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def without_orientation(self) -> ScanOptions:
        return replace(self, orientation=None)


# -- reading ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet():
    """MONAI's readers warn about optional codecs and print nothing useful: keep the user's terminal clean."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _reader(path: Path):
    from monai.data import NibabelReader, PydicomReader  # heavy optional import (MONAI): only when scans load

    return PydicomReader() if path.is_dir() else NibabelReader()


def read_scan(path: Path):
    """A MetaTensor ``(1, X, Y, Z)`` float32 with its affine (RAS mm; DICOM's LPS converted by the reader), or
    :class:`ScanReadError` for anything a reader refuses."""
    from monai.data import MetaTensor  # heavy optional import, as above

    reader = _reader(path)
    try:
        with _quiet():
            array, meta = reader.get_data(reader.read(str(path)))
    except Exception as err:  # nibabel, gzip and pydicom raise many kinds for damaged or foreign files
        raise ScanReadError(_problem(err, path)) from err
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array))[None], affine=torch.as_tensor(meta["affine"]))


def _problem(err: Exception, path: Path) -> str:
    """A reader's complaint in a few words, without repeating the path."""
    text = (str(err).splitlines() or [""])[0]
    text = text.replace(f'"{path}"', "it").replace(f"'{path}'", "it").replace(str(path), "it")
    if isinstance(err, EOFError) or "Expected" in text:
        return f"truncated: {text}" if text else "truncated"
    if "Empty file" in text:
        return "the file is empty"
    if "Cannot work out file type" in text or "not a gzip file" in text:
        return "not a NIfTI file, or truncated"
    return text or type(err).__name__


def what(path: Path) -> str:
    """How an error names a scan's format."""
    return "a DICOM series" if path.is_dir() else "NIfTI"


# -- the chain -------------------------------------------------------------------------------------------
def axis_order(options: ScanOptions) -> tuple[int, int, int]:
    """The array axes (after orientation) that become D, H, W."""
    if options.orientation is None:
        return 2, 1, 0
    return tuple(next(i for i, c in enumerate(options.orientation) if c in pair) for pair in _PAIRS)


def crop_around(vol: np.ndarray, centre: tuple[int, ...], size: tuple[int, int, int], fill) -> np.ndarray:
    """Box of ``size`` centred on ``centre`` from (..., D, H, W), padding with ``fill`` (one per leading index).
    MONAI's SpatialCrop clips a box at the border, which would move a lesion near the edge off centre."""
    lead = vol.shape[:-3]
    out = np.empty((*lead, *size), dtype=vol.dtype)
    out[...] = np.asarray(fill, dtype=vol.dtype).reshape(lead + (1, 1, 1)) if np.ndim(fill) else fill
    src, dst = [], []
    for c, s, n in zip(centre, size, vol.shape[-3:]):
        start = c - s // 2
        lo, hi = max(start, 0), min(start + s, n)
        if hi <= lo:  # box entirely outside: all padding
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - start, hi - start))
    out[(Ellipsis, *dst)] = vol[(Ellipsis, *src)]
    return out


def _intensity(options: ScanOptions):
    from monai.transforms import Identity, NormalizeIntensity, ScaleIntensity, ScaleIntensityRange  # MONAI, as above

    if options.window is not None:
        return ScaleIntensityRange(*options.window, b_min=0.0, b_max=1.0, clip=True)
    return {
        "minmax": ScaleIntensity(minv=0.0, maxv=1.0, channel_wise=True),
        "zscore": NormalizeIntensity(channel_wise=True),
        "none": Identity(),
    }[options.normalize]


def preprocess(image, mask, options: ScanOptions) -> tuple[np.ndarray, np.ndarray | None]:
    """``image`` (C, X, Y, Z) and ``mask`` (1, X, Y, Z) MetaTensors (or None) -> float32 (C, D, H, W) and
    bool (D, H, W) or None, through the chain of the module docstring."""
    from monai.transforms import CropForegroundd, Orientationd, Resize, Spacingd  # MONAI, as above

    keys = ["image"] + (["mask"] if mask is not None else [])
    data = {"image": image, **({"mask": mask} if mask is not None else {})}
    with _quiet():
        if options.orientation is not None:
            data = Orientationd(keys, axcodes=options.orientation)(data)
        order = axis_order(options)
        if options.spacing is not None:
            pixdim = [0.0, 0.0, 0.0]
            for axis, mm in zip(order, options.spacing):
                pixdim[axis] = mm
            data = Spacingd(keys, pixdim=pixdim, mode=("bilinear", "nearest")[: len(keys)])(data)
        dhw = [0, *(1 + a for a in order)]
        data = {k: v.as_tensor().permute(*dhw).contiguous() for k, v in data.items()}
        data["image"] = _intensity(options)(data["image"])
        if options.foreground:
            data = CropForegroundd(keys, source_key="image", select_fn=lambda x: x > x.min(), allow_smaller=True)(data)
    vol = np.asarray(data["image"], dtype=np.float32)
    mask = None if mask is None else np.asarray(data["mask"])[0] > 0.5
    if options.crop is not None:
        centre = tuple(n // 2 for n in vol.shape[1:])
        if mask is not None and mask.any():  # rounded centre of mass
            centre = tuple(int(round(v)) for v in np.argwhere(mask).mean(axis=0))
        vol = crop_around(vol, centre, options.crop, vol.reshape(len(vol), -1).min(axis=1))
        mask = None if mask is None else crop_around(mask, centre, options.crop, False)
    if options.target_shape is not None:
        resize = Resize(options.target_shape, mode="trilinear")
        vol = np.asarray(resize(torch.from_numpy(vol)), dtype=np.float32)
        if mask is not None:
            mask = np.asarray(resize(torch.from_numpy(mask[None].astype(np.float32))))[0] >= 0.5
    return np.ascontiguousarray(vol, dtype=np.float32), mask
