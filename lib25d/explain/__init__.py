"""Explanations: slice attention, HiResCAM, voxel maps, and benchmarks of where a model looks.

- :func:`slice_attention` — per-slice attention of a 2.5D model (:mod:`.attention`: top-k, sparsity)
- :func:`hirescam` — HiResCAM of the 3d / acs baselines through grad-cam (:mod:`.cam`)
- :func:`voxel_map` — voxel maps from the three axis profiles, sum or product; :func:`peak_voxels` (:mod:`.voxel`)
- :func:`run_benchmark` — pointing game and deletion from run folders (:mod:`.benchmark`, :mod:`.stats`)
- :func:`figure3`, :func:`head_figure` — the paper's Figure 3 and per-head profiles (:mod:`.figures`);
  :func:`lesion_figure`, :func:`pointing_figure` — attention against a known lesion (teaching)
"""
from .attention import (SliceAttention, SliceRef, attention_entropy, background_share, effective_slices,
                        empty_slices, slice_attention, sparsity_table, top_k_per_axis, top_k_slices)
from .benchmark import (Settings, attention_pointing, blank_slices, deletion_test, run_benchmark, slice_pointing,
                        summarize_pointing, volumes_to_draw, voxel_pointing)
from .cam import ClassTarget, default_cam_layer, hirescam
from .figures import figure3, figure3_for, head_figure, lesion_figure, pointing_figure
from ..train import load_run
from .stats import bootstrap_ci, pool_seeds
from .voxel import peak_voxels, voxel_map

__all__ = [
    "SliceAttention", "SliceRef", "attention_entropy", "background_share", "effective_slices", "empty_slices",
    "slice_attention", "sparsity_table", "top_k_per_axis", "top_k_slices",
    "Settings", "attention_pointing", "blank_slices", "deletion_test", "run_benchmark", "volumes_to_draw", "slice_pointing", "summarize_pointing", "voxel_pointing",
    "ClassTarget", "default_cam_layer", "hirescam",
    "figure3", "figure3_for", "head_figure", "lesion_figure", "pointing_figure",
    "load_run", "bootstrap_ci", "pool_seeds", "peak_voxels", "voxel_map",
]
