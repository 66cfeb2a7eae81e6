"""A run folder: one process at a time (``flock``, dropped by the OS however the process ends,
``kill -9`` included), files written through a temp file and renamed (a killed write leaves only a
hidden temp file, removed by the next claim), and the provenance a result records.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import os
import platform
import resource
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

LOCK = ".lock"
_fault_hits: dict[str, int] = {}
PACKAGES = ("lib25d", "torch", "torchvision", "timm", "numpy", "medmnist", "acsconv", "grad-cam", "scikit-learn")


@contextlib.contextmanager
def claim(out: Path) -> Iterator[Path]:
    """Create ``out`` if needed and hold it; refuse at once if another process holds it. A run that
    fails before writing anything leaves none of the folders this call created."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {out} is an existing file, not a folder: choose another --out")
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    handle = open(out / LOCK, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = (out / LOCK).read_text().strip() or "unknown"
        handle.close()
        raise RuntimeError(f"{out} is in use by another lib25d run (pid {holder}): wait for it to finish, "
                           "or choose another --out") from None
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    for stale in out.glob(".*.tmp"):  # half-written files of a killed run (we hold the lock: nobody writes)
        stale.unlink()
    try:
        yield out
    except BaseException:
        if created and [p.name for p in out.iterdir()] == [LOCK]:
            (out / LOCK).unlink()
            for folder in created:
                folder.rmdir()
        raise
    finally:
        handle.close()  # releases the lock; the file stays (removing it would race with a waiting claim)


def fault_point(name: str) -> None:
    """For tests: ``LIB25D_FAULT=<name>@<n>`` SIGKILLs this process the n-th time it passes
    ``name``: ``step`` (after an optimiser step) or ``write:<file>`` (written, not yet renamed)."""
    target, _, nth = os.environ.get("LIB25D_FAULT", "").rpartition("@")
    if target == name:
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


def read_torch(path: Path, what: str, keys: Sequence[str] = ()) -> Any:
    """``torch.load`` of a file lib25d wrote, or one line naming the file and what is wrong with it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # torch raises pickle, zip, EOF and runtime errors for damaged files
        why = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"  # torch's errors run long
        raise ValueError(f"{what} {path} cannot be read ({why}): it is damaged or was not written by lib25d; "
                         "move it away (or delete it) to train this run again") from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{what} {path} lacks {', '.join(missing)}: it was not written by this version of lib25d; "
                         "move it away (or delete it) to train this run again")
    return state


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where available, else the CPU."""
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
    """CUDA: max allocated since :func:`reset_peak_memory`. CPU: peak resident set, ``VmHWM`` (Linux
    carries ``ru_maxrss`` over ``exec``: a subprocess would report at least its parent's size)."""
    if device.type == "cuda":
        return {"bytes": int(torch.cuda.max_memory_allocated(device)), "kind": "cuda_max_allocated"}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return {"bytes": int(line.split()[1]) * 1024, "kind": "process_peak_rss"}
    return {"bytes": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024, "kind": "process_peak_rss"}
