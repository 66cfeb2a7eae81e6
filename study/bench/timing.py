"""What every measurement of the benchmark shares: sizes, medians, a timed call (the device synchronised around
it), the matmul peak it compares with, and lib25d's training step."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from lib25d.models import build_model, set_encoder_trainable
from lib25d.run import RunConfig, loss_function, resolve_device
from lib25d.run.protocol import autocast


def parse_size(text: str | int | Sequence[int]) -> tuple[int, int, int]:
    """'28' -> (28, 28, 28); '128x224x224' -> (128, 224, 224) (D, H, W)."""
    try:
        shape = tuple(int(p) for p in (text if isinstance(text, (list, tuple)) else str(text).lower().split("x")))
    except ValueError:
        shape = ()
    shape = shape * 3 if len(shape) == 1 else shape
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"volume size {text!r} is not N or DxHxW with every side at least 8, e.g. 28 or 128x224x224")
    return shape  # type: ignore[return-value]


def size_name(shape: Sequence[int]) -> str:
    return str(shape[0]) if len(set(shape)) == 1 else "x".join(map(str, shape))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(b) else math.nan


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    """Seconds of ``fn()`` (the device synchronised around it) and its result."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda *a: None)
    sync(device)
    tic = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - tic, out


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, repeats: int = 5) -> float:
    """Best GFLOP/s of a large square matrix product: the achievable peak Table 2 compares with."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, generator=torch.Generator().manual_seed(i)).to(device, dtype) for i in (0, 1))
    torch.matmul(a, b)
    return 2 * n**3 / min(timed(lambda: torch.matmul(a, b), device)[0] for _ in range(repeats)) / 1e9


def step_fn(model, config: RunConfig, device: torch.device) -> Callable:
    """lib25d's training step on a batch: (x, y) -> loss, with NAdam over every parameter."""
    loss_fn, opt = loss_function(2), torch.optim.NAdam(model.parameters(), lr=config.lr)

    def step(x, y):
        with autocast(device, config):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    return step


def model_of(method: str, config: RunConfig, seed: int = 0, axes=(0, 1, 2)):
    torch.manual_seed(seed)
    model = build_model(method, weights=config.weights, chunk_size=config.chunk_size, axes=tuple(axes), speed=config)
    set_encoder_trainable(model, True)
    return model.to(resolve_device(config.device)).train()
