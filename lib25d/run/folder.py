"""The run folder: the interface between training and everything after it (explanations, the study's tables).

Its format: ``checkpoint.pt`` (config, model, optimizer, history: what a resume needs, written every epoch),
``best.pt`` (the best-validation model), ``result.json`` (metrics, predictions, timing, provenance). One process
at a time holds a folder (``filelock``: dropped by the OS however the process ends, ``kill -9`` included, on
Linux, macOS and Windows); files are written through a temp file and renamed, so a reader never sees half a file
(a killed write leaves only a hidden temp file, removed by the next claim).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import filelock
import torch
from torch import nn

from ..data import dataset_info
from .config import RunConfig
from .environment import resolve_device
from .faults import fault_point
from .files import BEST, CHECKPOINT, LOCK, OWNER, RESULT
from .protocol import model_for

WHICH = ("final", "best")  # the last epoch's model (what the paper tests) or the best-validation one


@contextlib.contextmanager
def claim(out: Path) -> Iterator[Path]:
    """Create ``out`` if needed and hold it; refuse at once if another process holds it. A run that
    fails before writing anything leaves none of the folders this call created."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output folder {out} is an existing file, not a folder: choose another --out")
    created = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(out / LOCK)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        holder = (out / OWNER).read_text().strip() if (out / OWNER).is_file() else "unknown"
        raise RuntimeError(
            f"{out} is in use by another lib25d run (pid {holder}): wait for it to finish, or choose another --out"
        ) from None
    (out / OWNER).write_text(f"{os.getpid()}\n")  # beside the lock: Windows does not share a locked file
    for stale in out.glob(".*.tmp"):  # half-written files of a killed run (we hold the lock: nobody writes)
        stale.unlink()
    try:
        yield out
    except BaseException:
        if created and {p.name for p in out.iterdir()} <= {LOCK, OWNER}:
            lock.release()
            for name in (LOCK, OWNER):
                (out / name).unlink(missing_ok=True)
            for folder in created:
                folder.rmdir()
        raise
    finally:
        lock.release()  # the file stays (removing it would race with a waiting claim)


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
        raise ValueError(
            f"{what} {path} cannot be read ({why}): it is damaged or was not written by lib25d; "
            "move it away (or delete it) to train this run again"
        ) from None
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"{what} {path} lacks {', '.join(missing)}: it was not written by this version of lib25d; "
            "move it away (or delete it) to train this run again"
        )
    return state


def read_record(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(object, problem) of a JSON record: (None, None) when absent, (None, why) when it cannot be used."""
    path = Path(path)
    if not path.is_file():
        return None, None
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        return None, f"{path.name} is truncated or corrupt (invalid JSON at line {err.lineno} column {err.colno})"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"{path.name} cannot be read ({getattr(err, 'strerror', None) or type(err).__name__})"
    if not isinstance(value, dict):
        return None, f"{path.name} holds a JSON {type(value).__name__}, not an object"
    return value, None


class Run(NamedTuple):
    path: Path
    config: RunConfig
    model: nn.Module


@dataclass(frozen=True)
class RunFolder:
    """A run folder, for everything that reads one back: ``lib25d explain``, ``evaluate``, the study's tables."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    def checkpoint(self, keys: Sequence[str] = ("config", "model")) -> dict[str, Any]:
        """The last epoch's checkpoint, or one error saying the folder holds none."""
        if not (self.path / CHECKPOINT).is_file():
            raise FileNotFoundError(f"no {CHECKPOINT} in {self.path}: pass a folder written by 'lib25d train'")
        return read_torch(self.path / CHECKPOINT, "checkpoint", keys=keys)

    def config(self) -> RunConfig:
        return RunConfig.from_dict(self.checkpoint(("config",))["config"])

    def result(self) -> tuple[dict[str, Any] | None, str | None]:
        """``result.json`` as (object, problem): see :func:`read_record`."""
        return read_record(self.path / RESULT)

    def load(self, which: str = "final", device: str = "auto", data_root: str | None = None) -> Run:
        """The ``final`` or ``best`` model in eval mode, and its config. It is rebuilt without pretrained
        weights (the file brings the trained ones); ``data_root``: where its data is on this machine."""
        if which not in WHICH:
            raise ValueError(f"unknown model choice {which!r}; valid: {', '.join(WHICH)}")
        state = self.checkpoint()
        config = RunConfig.from_dict(state["config"]).replace(
            weights=None, device=device, **({"data_root": str(data_root)} if data_root is not None else {})
        )
        if which == "best" and not (self.path / BEST).is_file():
            raise FileNotFoundError(f"no {BEST} in {self.path}: use which='final' or finish the run")
        weights = state if which == "final" else read_torch(self.path / BEST, "best-validation model", keys=("model",))
        info = dataset_info(config.dataset, size=config.size, root=config.data_root, **config.dataset_options)
        model = model_for(config, info)
        model.load_state_dict(weights["model"])
        return Run(self.path, config, model.to(resolve_device(device)).eval())


def load_run(run: str | Path, which: str = "final", device: str = "auto", data_root: str | None = None) -> Run:
    """A run folder's ``final`` or ``best`` model in eval mode, and its config (:meth:`RunFolder.load`)."""
    return RunFolder(run).load(which, device, data_root)
