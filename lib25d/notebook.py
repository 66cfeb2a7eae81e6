"""A notebook refuses parameters its ``parameters`` cell does not declare.

Papermill only warns about an unknown one (``-p methd acs`` then runs the default method), so
every notebook calls ``check_parameters(globals())`` after its parameters cell. That cell declares
typed defaults (``method: str = "attention"``, in ``__annotations__``); papermill injects plain,
unannotated assignments.
"""
from __future__ import annotations

import difflib
from typing import Iterable

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
    unknown = [name for name, value in namespace.items()
               if name not in valid and not name.startswith(IGNORED_PREFIXES) and name not in IPYTHON_NAMES
               and isinstance(value, LITERALS)]
    if unknown:
        named = [name + "".join(f" (did you mean {close}?)" for close in difflib.get_close_matches(name, valid, n=1))
                 for name in unknown]
        raise ValueError(f"unknown notebook parameter(s) {', '.join(named)}; valid: {', '.join(valid)}")
