"""Explanations: slice attention (:mod:`.attention`), HiResCAM of the 3d/acs baselines (:mod:`.cam`), voxel maps
(:mod:`.voxel`), the pointing game and :func:`run_benchmark` (:mod:`.benchmark`), deletion (:mod:`.deletion`),
intervals (:mod:`.stats`), Figure 3 and attention against a known lesion (:mod:`.figures`).
"""
from ..train import load_run
from .attention import (SliceAttention, attention_entropy, background_share, effective_slices, empty_slices,
                        slice_attention, sparsity_table, top_k_tokens)
from .benchmark import (Settings, attention_pointing, run_benchmark, slice_pointing, summarize_pointing,
                        volumes_to_draw, voxel_pointing)
from .cam import ClassTarget, default_cam_layer, hirescam
from .deletion import blank_slices, deletion_test
from .figures import figure3, figure3_for, head_figure, lesion_figure, pointing_figure
from .stats import bootstrap_ci, pool_seeds
from .voxel import peak_voxels, voxel_map

__all__ = [
    "SliceAttention", "attention_entropy", "background_share", "effective_slices", "empty_slices",
    "slice_attention", "sparsity_table", "top_k_tokens", "Settings", "attention_pointing",
    "run_benchmark", "slice_pointing", "summarize_pointing", "volumes_to_draw", "voxel_pointing", "ClassTarget",
    "default_cam_layer", "hirescam", "blank_slices", "deletion_test", "figure3", "figure3_for", "head_figure",
    "lesion_figure", "pointing_figure", "load_run", "bootstrap_ci", "pool_seeds", "peak_voxels", "voxel_map",
]
