"""A run's output folder: claimed by one process at a time, read back with one-line errors.

``claim`` holds an exclusive ``flock`` on ``<out>/.lock`` while a run writes there. The
operating system drops the lock when the process ends, however it ends (``kill -9``
included), so a dead run never leaves the folder stuck. Files are written atomically
(:func:`lib25d.runinfo.write_atomic`); what a killed write leaves is a hidden temp file,
removed by the next claim.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

LOCK = ".lock"


@contextlib.contextmanager
def claim(out: Path) -> Iterator[Path]:
    """Create ``out`` if needed and hold it for this process; refuse at once if another holds it.

    If the run fails before writing anything, the folders this call created are removed again.
    """
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


def read_torch(path: Path, what: str, keys: Sequence[str] = ()) -> Any:
    """``torch.load`` of a file lib25d wrote, or one line naming the file and what is wrong with it."""
    import torch

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
