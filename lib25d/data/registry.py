"""The names of the datasets lib25d reads, with no heavy import: the workflow plans its fetch jobs from them in
processes that load no data (medmnist's own package imports torch and scikit-learn, seconds each time)."""

from __future__ import annotations

# short name -> medmnist flag: MedMNIST 3D's six datasets (a test checks medmnist.INFO lists exactly these)
MEDMNIST = {name: f"{name}mnist3d" for name in ("organ", "nodule", "adrenal", "fracture", "vessel", "synapse")}
NIFTI_PREFIX = "nifti:"


def available_datasets() -> list[str]:
    """Fixed dataset names; NIfTI data is named ``nifti:<path to csv>`` on top of these."""
    return [*MEDMNIST, "synthetic"]
