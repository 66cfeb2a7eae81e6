"""Explanations: slice attention, sparsity and voxel maps (:mod:`.attention`), HiResCAM of the 3d/acs baselines
(:mod:`.cam`), the pointing game (:mod:`.pointing`), deletion (:mod:`.deletion`), intervals (:mod:`.stats`), the
tables of trained runs (:mod:`.report`), Figure 3 and attention against a known lesion (:mod:`.figures`); every
method's voxel map measured alike (:mod:`.voxels`: the spatial model's own map, HiResCAM of its encoder, voxel
deletion, agreement) and drawn on three planes (:mod:`.planes`).
"""

from .attention import (
    SliceAttention,
    attention_entropy,
    background_share,
    effective_slices,
    empty_slices,
    peak_voxels,
    slice_attention,
    sparsity_table,
    spatial_map,
    top_k_tokens,
    voxel_map,
)
from .cam import ClassTarget, default_cam_layer, hirescam
from .deletion import blank_slices, deletion_test
from .figures import figure3, figure3_for, head_figure, lesion_figure, pointing_figure
from .planes import lesion_centre, planes_figure
from .pointing import attention_pointing, slice_pointing, summarize_pointing, voxel_pointing
from .report import Settings, explain_runs, volumes_to_draw
from .stats import bootstrap_ci, pool_seeds
from .voxels import explanation_map, map_agreement, token_hirescam, voxel_deletion, voxel_measures

__all__ = [
    "SliceAttention",
    "attention_entropy",
    "background_share",
    "effective_slices",
    "empty_slices",
    "peak_voxels",
    "slice_attention",
    "sparsity_table",
    "spatial_map",
    "top_k_tokens",
    "voxel_map",
    "Settings",
    "attention_pointing",
    "explain_runs",
    "slice_pointing",
    "summarize_pointing",
    "volumes_to_draw",
    "voxel_pointing",
    "ClassTarget",
    "default_cam_layer",
    "hirescam",
    "blank_slices",
    "bootstrap_ci",
    "deletion_test",
    "pool_seeds",
    "figure3",
    "figure3_for",
    "head_figure",
    "lesion_figure",
    "pointing_figure",
    "lesion_centre",
    "planes_figure",
    "explanation_map",
    "map_agreement",
    "token_hirescam",
    "voxel_deletion",
    "voxel_measures",
]
