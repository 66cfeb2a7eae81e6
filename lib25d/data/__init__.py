"""Datasets by name; every loader returns a :class:`VolumeDataset` of ``(float32 (C, D, H, W), int label)`` items.

- ``organ``, ``nodule``, ``fracture``, ``adrenal``, ``vessel``, ``synapse`` (or flags such as ``adrenalmnist3d``):
  MedMNIST 3D, ``size`` 28 or 64, read from ``root``, else ``$LIB25D_DATA_ROOT``, else ``~/.medmnist``;
  ``download=True`` fetches a missing file.
- ``synthetic``: planted lesions; options of :func:`lib25d.data.synthetic.synthetic_info`.
- ``nifti:<path to csv>``: your scans (NIfTI files, DICOM series folders); options of
  :func:`lib25d.data.scans.load_nifti` (orientation, spacing, recipes: :mod:`lib25d.data.preprocess`).

Every dataset takes ``subset=N``: a stratified, seeded sample of at most N volumes per split.
"""

import lazy_loader as lazy

# Imported on first use (lazy_loader): the names need no torch, the loaders do.
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submodules=["dataset", "medmnist3d", "preprocess", "scans", "synthetic"],
    submod_attrs={
        "registry": ["MEDMNIST", "NIFTI_PREFIX", "available_datasets"],
        "dataset": ["SPLITS", "DatasetInfo", "Uint8Volumes", "VolumeDataset", "check_split", "stratified_subset"],
        "factory": ["check_dataset", "dataset_info", "load_dataset"],
        "synthetic": ["make_synthetic"],
    },
)
