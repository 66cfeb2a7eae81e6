"""Notebooks refuse parameters their parameters cell does not declare (papermill only warns)."""

import json
import os
from pathlib import Path

import nbformat
import papermill
import pytest

from lib25d.run import RunConfig
from study.notebook import check_parameters, run_parameters_cell

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("*.ipynb"))


def namespace(**injected):
    """A kernel's globals after a parameters cell declaring dataset and method, then papermill's cell."""
    return {
        "__annotations__": {"dataset": str, "method": str},
        "__name__": "__main__",
        "__builtins__": {},
        "In": ["", "x"],
        "Out": {1: 2},
        "get_ipython": lambda: None,
        "exit": None,
        "quit": None,
        "open": open,
        "_": 3,
        "_i1": "x",
        "dataset": "adrenal",
        "method": "attention",
        **injected,
    }


def check_cell(name):
    nb = nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4)
    index = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    return nb.cells[index + 1]


# -- check_parameters on hand-made namespaces -------------------------------------------------------
def test_an_unknown_parameter_is_refused_with_a_suggestion_and_the_valid_names():
    with pytest.raises(ValueError) as error:
        check_parameters(namespace(methd="acs"))
    assert str(error.value) == "unknown notebook parameter(s) methd (did you mean method?); valid: dataset, method"


def test_every_unknown_parameter_is_named_whatever_its_literal_type():
    values = {"a": 1, "b": 2.5, "c": True, "d": None, "e": [1], "f": {"k": 1}, "g": (1,), "h": "s"}
    with pytest.raises(ValueError, match="parameter\\(s\\) a, b, c, d, e, f, g, h; valid: dataset, method$"):
        check_parameters(namespace(**values))


def test_declared_names_imports_functions_private_and_ipython_names_are_accepted():
    check_parameters(
        namespace(
            dataset="organ",
            method="acs",
            os=os,
            json=json,
            Path=Path,
            check=check_parameters,
            _private=1,
            PAPERMILL_INPUT_PATH="in.ipynb",
        )
    )


def test_names_accepted_without_a_declaration():
    check_parameters(namespace(channels_last=True), also=("channels_last",))
    with pytest.raises(ValueError, match="valid: dataset, method, channels_last$"):
        check_parameters(namespace(x=1), also=("channels_last",))


# -- every notebook: typed parameters, then the check --------------------------------------------
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_parameters_are_typed_and_checked_in_the_next_cell(name):
    params = papermill.inspect_notebook(str(REPO / "notebooks" / f"{name}.ipynb"))
    assert params and all(p["inferred_type_name"] != "None" for p in params.values()), f"{name}: untyped parameter"
    cell = check_cell(name)
    assert cell.cell_type == "code" and "check_parameters(globals()" in cell.source, (
        f"{name}: the cell after the parameters cell must call check_parameters(globals())"
    )
    assert not cell.get("outputs")


def test_the_run_notebook_accepts_every_parameter_the_workflow_passes():
    """workflow/Snakefile's run_parameters: the run's RunConfig fields (flat), out, threads and run_id."""
    params = papermill.inspect_notebook(str(REPO / "notebooks" / "run.ipynb"))
    passed = {**RunConfig().to_dict(), "out": "results/x/runs/r", "threads": 2, "run_id": "r"}
    kernel = {"__annotations__": {name: p["inferred_type_name"] for name, p in params.items()}, **passed}
    exec(check_cell("run").source, kernel)
    kernel["unknown_switch"] = True
    with pytest.raises(ValueError, match="unknown_switch"):
        exec(check_cell("run").source, kernel)


def test_the_run_notebook_lists_every_run_setting_flat_as_runconfig_declares_it():
    """``papermill -p method acs -p seed 3``: one typed, commented parameter per RunConfig field, generated from
    its metadata (python -m study.notebook rewrites the cell), so it cannot drift from ``lib25d train``."""
    nb = nbformat.read(REPO / "notebooks" / "run.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert cell.source == run_parameters_cell(), "run.ipynb's parameters are stale: run python -m study.notebook"
    params = papermill.inspect_notebook(str(REPO / "notebooks" / "run.ipynb"))
    fields = RunConfig.__dataclass_fields__
    assert list(params)[: len(fields)] == list(fields)
    assert params["method"]["default"] == '"attention"' and params["seed"]["inferred_type_name"] == "int"
    assert "random seed" in params["seed"]["help"]


# -- real papermill runs fail at the check cell ---------------------------------------------------
@pytest.mark.parametrize(
    "name, parameters, expected",
    [
        ("run", {"methd": "acs"}, ["methd (did you mean method?)", "valid: dataset, size, method"]),
        ("run", {"method": "acs", "sed": 3}, ["sed (did you mean seed?)", "out, threads, run_id"]),
        ("table1", {"profil": "smoke"}, ["profil (did you mean profile?)", "valid: profile, which"]),
    ],
)
def test_papermill_fails_on_an_unknown_parameter(tmp_path, name, parameters, expected):
    if name == "run":  # were the typo accepted, a small run would write here, not into results/
        parameters = {**parameters, "out": str(tmp_path / "run"), "threads": 1}
    with pytest.raises(papermill.PapermillExecutionError) as error:
        papermill.execute_notebook(
            str(REPO / "notebooks" / f"{name}.ipynb"),
            str(tmp_path / "out.ipynb"),
            parameters=parameters,
            kernel_name="python3",
            progress_bar=False,
            cwd=str(REPO),
        )
    assert error.value.ename == "ValueError"
    for text in expected:
        assert text in str(error.value)
