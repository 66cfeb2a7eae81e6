"""Where and in which precision the exactness tests (test_parity.py, test_perf.py) run.

By default: CPU, float64, the tolerances written in the tests, bitwise checks bitwise. The GPU
check (workflow/gpu_check.py) runs the same tests elsewhere through two environment variables:

    LIB25D_TEST_DEVICE=cuda LIB25D_TEST_PRECISION=float32 pytest tests/test_parity.py tests/test_perf.py

``LIB25D_TEST_DEVICE``: cpu (default), cuda or cuda:N. ``LIB25D_TEST_PRECISION``:
- ``float64`` (default): the written tolerances, on any device.
- ``float32``: IEEE float32 (TF32 off on CUDA, so convolutions are not rounded to 10 bits).
- ``bf16``: float32 weights under bf16 autocast, as ``lib25d train`` runs on CUDA.

In float32 and bf16 a comparison passes where the written tolerance holds element by element or the
norm-wise error is below the precision's floor: ``||actual - expected|| <= FLOOR * ||expected||``. The
norm, because train-mode BatchNorm over a few dozen values amplifies rounding by orders of magnitude
(see test_parity.py): tensors that are near zero by construction (some gradients, some running
means) are all rounding there, while a wrong kernel, layout or count moves the whole tensor.
``close_all`` compares a group of tensors (every gradient of a model, its whole state) as one
vector in float32/bf16, tensor by tensor in float64. Floors, measured on the CPU (2026-12-06) with a
margin for other kernels: float32 1e-2, the worst error over these tests being 1.3e-3 (train mode,
a batch of one 28^3 volume); bf16 1e-1, for forward values and single layers. Training-step
gradients are not compared in bf16: with an 8-bit mantissa through train-mode BatchNorm they were
30% apart (norm-wise) between two equally valid summation orders. A bitwise check stays bitwise on the
CPU; on CUDA, whose kernels may pick another algorithm for another batch shape, it becomes the
floor's check (float64: 1e-12).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS = ("float64", "float32", "bf16")
FLOORS = {"float64": 1e-12, "float32": 1e-2, "bf16": 1e-1}  # norm-wise relative error, see above


def _flat(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().cpu().double().flatten() for t in tensors])


@dataclass(frozen=True)
class Numerics:
    device: torch.device
    precision: str

    @property
    def default(self) -> bool:
        """The unchanged CPU float64 suite."""
        return self.device.type == "cpu" and self.precision == "float64"

    @property
    def dtype(self) -> torch.dtype:
        """What the float64 checks build their models and inputs in (bf16: float32 under autocast)."""
        return torch.float64 if self.precision == "float64" else torch.float32

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on this device in the bf16 precision, else nothing."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_settings(self) -> dict[str, Any]:
        """RunConfig fields that put a ``train`` run on this device and precision (CPU default: none
        but the device, so the default suite's configs are what they were)."""
        settings: dict[str, Any] = {"device": str(self.device)}
        if self.device.type == "cuda":
            settings["amp"] = self.precision == "bf16"
        elif self.precision == "bf16":
            settings["bf16_cpu"] = True
        return settings

    def _norm_check(self, actual: torch.Tensor, expected: torch.Tensor, floor: float, msg: Any) -> None:
        error = float(torch.linalg.vector_norm(actual - expected))
        scale = float(torch.linalg.vector_norm(expected))
        if error > floor * scale:
            detail = f"norm-wise relative error {error / scale if scale else error:.3g} > {floor:g} ({self.precision})"
            raise AssertionError(msg(detail) if callable(msg) else f"{msg}: {detail}" if msg else detail)

    def close(
        self,
        actual: torch.Tensor,
        expected: torch.Tensor,
        rtol: float,
        atol: float,
        msg: str | Callable[[str], str] | None = None,
    ) -> None:
        """The written tolerance (``torch.testing.assert_close``); in float32/bf16 the norm-wise floor
        where that fails. Compared in float64 on the CPU (bf16 outputs too)."""
        a, e = actual.detach().cpu().double(), expected.detach().cpu().double()
        if self.precision == "float64":
            torch.testing.assert_close(a, e, rtol=rtol, atol=atol, msg=msg)
        elif not torch.allclose(a, e, rtol=rtol, atol=atol):
            self._norm_check(a, e, FLOORS[self.precision], msg)

    def close_all(self, pairs: Iterable[tuple[str, torch.Tensor, torch.Tensor]], rtol: float, atol: float) -> None:
        """(name, actual, expected) pairs: each by :meth:`close` in float64, all as one vector otherwise."""
        pairs = list(pairs)
        if self.precision == "float64":
            for name, a, e in pairs:
                self.close(a, e, rtol, atol, msg=lambda m, name=name: f"{name}: {m}")
        else:
            self.close(
                _flat(a for _, a, _ in pairs),
                _flat(e for _, _, e in pairs),
                rtol,
                atol,
                msg=f"{len(pairs)} tensors as one vector",
            )

    def same(
        self, actual: torch.Tensor, expected: torch.Tensor, msg: str = "", computed: torch.dtype | None = None
    ) -> None:
        """Bitwise equal where the device promises it (CPU). Elsewhere the norm-wise floor of the
        precision the values were ``computed`` in (default: their dtype; bf16 under autocast)."""
        if self.device.type == "cpu":
            assert torch.equal(actual, expected), msg or "not bitwise equal"
            return
        computed = computed or actual.dtype
        floor = FLOORS["bf16" if self.precision == "bf16" else "float64" if computed == torch.float64 else "float32"]
        self._norm_check(actual.detach().cpu().double(), expected.detach().cpu().double(), floor, msg)


def from_environment(env: dict[str, str] | None = None) -> Numerics:
    """The device and precision the environment asks for; a bad value is one clear error."""
    env = os.environ if env is None else env
    name = env.get("LIB25D_TEST_DEVICE", "cpu")
    precision = env.get("LIB25D_TEST_PRECISION", "float64")
    if precision not in PRECISIONS:
        raise ValueError(f"LIB25D_TEST_PRECISION={precision!r} is not one of {', '.join(PRECISIONS)}")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"LIB25D_TEST_DEVICE={name!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"LIB25D_TEST_DEVICE={name!r} but torch sees no CUDA device: unset it to test on the CPU")
    if device.type == "cuda" and precision == "float32":
        torch.backends.cuda.matmul.allow_tf32 = False  # IEEE float32, as on the CPU
        torch.backends.cudnn.allow_tf32 = False
    return Numerics(device, precision)


NUMERICS = from_environment()
