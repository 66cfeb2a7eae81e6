"""lib25d: interpretable 2.5D models of 3D medical images.

A 2D backbone encodes the slices of all three axes; attention pooling weighs them, so each
prediction names the slices that drove it. The public face:

- ``build_model(method, ...)``: ``attention``, ``mean``, ``max``, ``lstm``, ``transformer``, ``gated``, ``spatial``,
  ``3d``, ``acs``
- ``load_dataset(name, split, ...)``: MedMNIST 3D, ``synthetic``, ``nifti:<csv>`` (NIfTI files, DICOM series)
- ``RunConfig`` + ``train(config, out)``: the paper's protocol, resumable, one run folder per run;
  ``load_run(folder)`` reads it back

Each is imported on first use (lazy_loader, SPEC 1): ``import lib25d`` alone costs no torch import.
"""

import lazy_loader as lazy

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "data": ["available_datasets", "load_dataset"],
        "models": ["METHODS", "build_model"],
        "run": ["RunConfig", "load_run", "train"],
    },
)
