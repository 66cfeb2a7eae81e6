"""The run folder's file names (see :mod:`.folder`), apart so that the workflow's steps can look for them in
processes that load no model and so never import torch."""

LOCK, OWNER, CHECKPOINT, BEST, RESULT = ".lock", ".lock.pid", "checkpoint.pt", "best.pt", "result.json"
