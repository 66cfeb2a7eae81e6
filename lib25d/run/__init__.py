"""The run: ``RunConfig`` (everything that defines one), the authors' protocol as a resumable loop
(:func:`train`), and the run folder it writes, read back by everything after training (:class:`RunFolder`)."""

from .config import RUNTIME_FIELDS, SPEED_FIELDS, WARMUP_BN, RunConfig
from .environment import resolve_device
from .folder import WHICH, Run, RunFolder, load_run
from .loop import train
from .protocol import evaluate, loss_function, model_for, split_of

__all__ = [
    "RUNTIME_FIELDS",
    "SPEED_FIELDS",
    "WARMUP_BN",
    "WHICH",
    "Run",
    "RunConfig",
    "RunFolder",
    "evaluate",
    "load_run",
    "loss_function",
    "model_for",
    "resolve_device",
    "split_of",
    "train",
]
