"""The run: ``RunConfig`` (everything that defines one), the authors' protocol as a resumable loop
(:func:`train`), and the run folder it writes, read back by everything after training (:class:`RunFolder`).

``RunConfig`` and the folder's file names import no torch (the workflow's planning and steps read them); the
rest is imported on first use (lazy_loader)."""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "config": ["RUNTIME_FIELDS", "SPEED_FIELDS", "WARMUP_BN", "RunConfig"],
        "environment": ["resolve_device"],
        "folder": ["WHICH", "Run", "RunFolder", "load_run"],
        "loop": ["train"],
        "protocol": ["evaluate", "loss_function", "model_for", "split_of"],
    },
)
