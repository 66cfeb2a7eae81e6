"""Notebook parameters: a notebook refuses parameters its ``parameters`` cell does not declare, and the run
notebook's cell is generated from RunConfig.

Papermill only warns about an unknown one (``-p methd acs`` then runs the default method), so
every notebook calls ``check_parameters(globals())`` after its parameters cell. That cell declares
typed defaults (``method: str = "attention"``, in ``__annotations__``); papermill injects plain,
unannotated assignments.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
from collections.abc import Iterable
from pathlib import Path

from lib25d.run import RunConfig

# names the IPython kernel puts into a notebook's namespace (the others start with "_")
IPYTHON_NAMES = frozenset({"In", "Out", "get_ipython", "exit", "quit", "open"})
# prefixes of names that are no parameters (papermill --inject-paths adds PAPERMILL_INPUT_PATH, ...)
IGNORED_PREFIXES = ("_", "PAPERMILL_")
# values papermill can inject (it writes them as Python literals)
LITERALS = (str, int, float, bool, type(None), list, dict, tuple)


def check_parameters(namespace: dict, also: Iterable[str] = ()) -> None:
    """Raise ValueError naming each undeclared parameter (an unannotated global holding a literal; imports,
    modules and functions are none) of a notebook's ``globals()``; ``also`` are accepted undeclared."""
    valid = list(dict.fromkeys([*namespace.get("__annotations__", {}), *also]))
    unknown = [
        name
        for name, value in namespace.items()
        if name not in valid
        and not name.startswith(IGNORED_PREFIXES)
        and name not in IPYTHON_NAMES
        and isinstance(value, LITERALS)
    ]
    if unknown:
        named = [
            name + "".join(f" (did you mean {close}?)" for close in difflib.get_close_matches(name, valid, n=1))
            for name in unknown
        ]
        raise ValueError(f"unknown notebook parameter(s) {', '.join(named)}; valid: {', '.join(valid)}")


# -- the run notebook's parameters: every RunConfig field, flat -------------------------------------------
RUN_NOTEBOOK = "notebooks/run.ipynb"
OPTIONAL = "from typing import Optional  # the annotation of the settings that may be None"
RUN_EXTRAS = (  # what the notebook takes beside the run settings
    'out: str = "results/notebook-run"  # run folder: checkpoints + result.json (resumed when present)',
    "threads: int = 0  # torch CPU threads (0: torch's default)",
    'run_id: str = ""  # name shown in the title (the workflow passes <dataset>-<method>-s<seed>)',
)


def run_parameters_cell() -> str:
    """The run notebook's ``parameters`` cell, generated from RunConfig's fields: one typed, commented line per
    setting (``papermill -p method acs -p seed 3``), the same names ``lib25d train`` takes as options. Written in
    what papermill's parser reads: ``Optional[int]`` (not ``int | None``), no ``=`` in a comment."""
    defaults = RunConfig()

    def literal(value) -> str:  # strings in double quotes, as the other parameters cells write them
        return json.dumps(value) if isinstance(value, str) else repr(value)

    def annotation(kind: str) -> str:
        return "dict" if kind.startswith("dict") else re.sub(r"^(\w+) \| None$", r"Optional[\1]", kind)

    lines = [
        f"{f.name}: {annotation(f.type)} = {literal(getattr(defaults, f.name))}"
        f"  # {f.metadata['help'].replace('=', ': ')}"
        for f in dataclasses.fields(RunConfig)
    ]
    return "\n".join([OPTIONAL, "", *lines, *RUN_EXTRAS])


def run_config(namespace: dict) -> RunConfig:
    """The RunConfig a run notebook's parameters describe (its ``globals()``)."""
    return RunConfig.from_dict({f.name: namespace[f.name] for f in dataclasses.fields(RunConfig)})


def write_run_parameters(path: str | Path = RUN_NOTEBOOK) -> Path:
    """Regenerate the run notebook's parameters cell after RunConfig changed (a test says when)."""
    path = Path(path)
    notebook = json.loads(path.read_text())
    cell = next(c for c in notebook["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    cell["source"] = run_parameters_cell().splitlines(keepends=True)
    path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n")
    return path


if __name__ == "__main__":  # python -m study.notebook: rewrite notebooks/run.ipynb's parameters cell
    print(f"wrote {write_run_parameters()}")
