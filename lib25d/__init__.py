"""lib25d: interpretable 2.5D models of 3D medical images.

A 2D backbone encodes the slices of all three axes; attention pooling weighs them, so each
prediction names the slices that drove it. The public face:

- ``build_model(method, ...)``: ``attention``, ``mean``, ``max``, ``lstm``, ``transformer``, ``gated``, ``spatial``,
  ``3d``, ``acs``
- ``load_dataset(name, split, ...)``: MedMNIST 3D, ``synthetic``, ``nifti:<csv>`` (NIfTI files, DICOM series)
- ``RunConfig`` + ``train(config, out)``: the paper's protocol, resumable, one run folder per run;
  ``load_run(folder)`` reads it back
"""

from .data import available_datasets, load_dataset
from .models import METHODS, build_model
from .run import RunConfig, load_run, train

__version__ = "0.1.0"
__all__ = ["METHODS", "RunConfig", "available_datasets", "build_model", "load_dataset", "load_run", "train"]
