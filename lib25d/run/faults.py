"""Fault injection for the tests: a process killed at an exact point, not after a guessed time.

``LIB25D_FAULT=<name>@<n>`` SIGKILLs the process the n-th time it passes ``fault_point(name)``: ``step`` (after an
optimiser step) or ``write:<file>`` (written, not yet renamed). Unset, a fault point costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    target, _, nth = os.environ.get("LIB25D_FAULT", "").rpartition("@")
    if target == name:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == int(nth):
            os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))  # Windows has no SIGKILL
