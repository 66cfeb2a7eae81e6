"""Provenance of a run: device, package versions, git revision, peak memory."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import resource
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

FAULT_ENV = "LIB25D_FAULT"  # testing hook, see fault_point
_fault_hits: dict[str, int] = {}
PACKAGES = ("lib25d", "torch", "torchvision", "numpy", "medmnist", "acsconv", "grad-cam", "scikit-learn")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_revision() -> dict[str, Any]:
    """Revision of the lib25d checkout in use (None when installed outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"revision": rev, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def environment(device: torch.device) -> dict[str, Any]:
    return {"device": device_name(device), "device_type": device.type, "host": platform.node(),
            "versions": versions(), "git": git_revision()}


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """CUDA: max allocated by tensors since :func:`reset_peak_memory`. CPU: the process's peak
    resident set (includes Python).

    On Linux the CPU peak is ``VmHWM`` of ``/proc/self/status``, the high-water mark of this
    program's own memory map. ``getrusage``'s ``ru_maxrss`` is only the fallback: Linux carries
    it over ``exec``, so a fresh subprocess would report at least its parent's size at the fork.
    """
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_allocated"}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"bytes": int(line.split()[1]) * 1024, "kind": "process_peak_rss"}
    except OSError:
        pass
    return {"bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "process_peak_rss"}


def fault_point(name: str) -> None:
    """Fault injection for tests: ``LIB25D_FAULT=<name>@<n>`` kills this process with SIGKILL (no
    clean-up of any kind) the n-th time it passes ``name``; names are ``step`` (after an optimiser
    step) and ``write:<file name>`` (a file written, not yet renamed into place)."""
    spec = os.environ.get(FAULT_ENV, "")
    target, _, nth = spec.rpartition("@")
    if target != name:
        return
    _fault_hits[name] = _fault_hits.get(name, 0) + 1
    if _fault_hits[name] == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        fault_point(f"write:{path.name}")
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, lambda p: p.write_text(json.dumps(data, indent=1, allow_nan=True) + "\n"))
