"""Where a run runs and what it stands on: the device (``auto``: CUDA, then Apple's MPS, then the CPU), the
package versions, the git revision of the checkout, peak memory. A result file records all of it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

PACKAGES = (
    "lib25d",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "medmnist",
    "acsconv",
    "grad-cam",
    "monai",
    "scikit-learn",
)


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where available, else MPS (Apple silicon), else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here; use --device cpu or auto")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"device {name!r} requested but Apple's MPS is not available here; use --device cpu or auto")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"mps ({platform.machine()})"
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
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = (
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=here,
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            != ""
        )
        return {"revision": rev, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"revision": None, "dirty": None}


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": device_name(device),
        "device_type": device.type,
        "host": platform.node(),
        "versions": versions(),
        "git": git_revision(),
    }


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> dict[str, Any]:
    """CUDA: max allocated since :func:`reset_peak_memory`. CPU: peak resident set, ``VmHWM`` on Linux (which
    carries ``ru_maxrss`` over ``exec``: a subprocess would report at least its parent's size), ``ru_maxrss``
    elsewhere on POSIX, None on Windows."""
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_allocated"}
    if device.type == "mps":
        return {"bytes": int(torch.mps.driver_allocated_memory()), "kind": "mps_driver_allocated"}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"bytes": int(line.split()[1]) * 1024, "kind": "process_peak_rss"}
    try:
        import resource  # POSIX only: imported here so that the package imports on Windows
    except ImportError:
        return {"bytes": float("nan"), "kind": "process_peak_rss"}
    scale = 1 if platform.system() == "Darwin" else 1024  # macOS reports bytes, Linux kibibytes
    return {"bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * scale, "kind": "process_peak_rss"}
