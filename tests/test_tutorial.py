"""The teaching notebook keeps its promises: executed with its defaults, it shows what its prose
says (the method works on the synthetic set and on real AdrenalMNIST3D, attention points at the
lesion far more often than a random slice), and the exercises' solutions give the stated outcomes.

Slow (about five minutes on 2 cores) but part of `make test`: without it the tutorial could drift
back to teaching that attention pooling looks away from the lesion. No time is asserted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import papermill
import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def glued(path: Path) -> dict[str, object]:
    """Values the notebook glued (myst_nb.glue), read back from the executed notebook."""
    values = {}
    for cell in nbformat.read(path, as_version=4).cells:
        for out in cell.get("outputs", []):
            record = out.get("metadata", {}).get("scrapbook", {})
            if record:  # a figure is kept as the presence of its PNG; numbers and strings as their values
                prefix, data = record.get("mime_prefix", ""), out["data"]
                values[record["name"]] = (
                    "image/png" if prefix + "image/png" in data else ast.literal_eval(data[prefix + "text/plain"])
                )
    return values


def execute(name: str, out: Path, **parameters) -> dict[str, object]:
    papermill.execute_notebook(
        str(REPO / "notebooks" / f"{name}.ipynb"),
        str(out),
        kernel_name="python3",
        parameters=parameters,
        cwd=str(REPO),
        progress_bar=False,
    )
    return glued(out)


@pytest.fixture(scope="module")
def tutorial(medmnist_root, tmp_path_factory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("tutorial")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LIB25D_DATA_ROOT", str(medmnist_root))
        return execute("tutorial", tmp / "tutorial.ipynb", workdir=str(tmp / "runs"))


def test_tutorial_shows_the_three_figures(tutorial):
    assert all(tutorial[name] == "image/png" for name in ("learning_curve", "lesion_figure", "pointing_figure"))


def test_tutorial_synthetic_run_beats_chance_clearly(tutorial):
    low, high = ast.literal_eval(tutorial["synthetic_ci"])
    assert tutorial["synthetic_auc"] >= 0.9 and low > 0.5, tutorial  # prose: "about 0.97", interval clear of 0.5


def test_tutorial_attention_points_at_the_lesion_far_more_often_than_chance(tutorial):
    assert tutorial["hit_ci_low"] > tutorial["hit_chance"], tutorial
    assert tutorial["hit_rate"] >= 2 * tutorial["hit_chance"], tutorial  # prose: "nearly every" vs "a quarter"


def test_tutorial_real_adrenal_run_is_above_chance_with_its_interval(tutorial):
    low, high = ast.literal_eval(tutorial["adrenal_ci"])
    assert low > 0.5 and low <= tutorial["adrenal_auc"] <= high, tutorial


def test_solutions_give_the_expected_outcomes(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no cached ImageNet weights: the offline message
    values = execute("tutorial_solutions", tmp_path / "solutions.ipynb", workdir=str(tmp_path / "runs"))
    assert all(auc > 0.7 for auc in values["reducer_aucs"].values()), values["reducer_aucs"]  # 1: all learn
    assert set(values["axis_shares"]) == {"axial", "coronal", "sagittal"}  # 2: every axis gets a share
    assert abs(sum(values["axis_shares"].values()) - 1) < 1e-4 and values["axial_only_axes"] == ["axial"]
    assert 2.5 < values["params_m"]["3d"] / values["params_m"]["attention"] < 3.2  # 3: about three times
    assert values["half_slices"] < values["all_slices"] / 2  # 4: attention is sparser than uniform
    assert "ImageNet weights" in values["imagenet"]  # 5: one line naming the missing file (or loaded)
    assert all(abs(total - 1) < 1e-4 for total in values["voxel_sums"])  # 6: the voxel map sums to 1 per volume
    hits = values["voxel_hits"]  # "nearly every lesion volume, far more often than the summed profiles or chance"
    assert hits["spatial voxel map"] >= 0.8 and hits["spatial voxel map"] > max(
        2 * values["voxel_chance"], hits["attention voxel sum"]
    ), values
