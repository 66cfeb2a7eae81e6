"""One Table 2 case (a method at a volume size) measured in this process; ``python -m study.bench.case '<json>'``
measures one in a fresh interpreter, so that a CPU case's peak memory is its own."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from lib25d.models import count_parameters
from lib25d.run import RunConfig, resolve_device
from lib25d.run.environment import peak_memory, reset_peak_memory
from lib25d.run.protocol import autocast

from .timing import median, model_of, step_fn, timed

ADRENAL_TRAIN, PDAC_TRAIN = 1188, 975  # the epochs of the MedMNIST sizes and of the paper's 128x224x224 CT


def measure_case(
    method: str,
    shape: Sequence[int],
    batch_size: int,
    config: RunConfig,
    repeats: int = 3,
    warmup_steps: int = 1,
    inference: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """One Table 2 row, measured in this process."""
    device = resolve_device(config.device)
    model = model_of(method, config, seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch_size, 1, *shape, generator=gen).to(device)
    y = torch.randint(0, 2, (batch_size,), generator=gen).to(device)
    step = step_fn(model, config, device)
    reset_peak_memory(device)
    flops = None
    for i in range(max(warmup_steps, 1)):  # the first step is FLOP-counted, untimed
        if i == 0 and not config.compile:
            with FlopCounterMode(display=False) as counter:
                step(x, y)
            flops = counter.get_total_flops()
        else:
            step(x, y)
    secs = median([timed(lambda: step(x, y), device)[0] for _ in range(repeats)])
    memory = peak_memory(device)
    volumes = ADRENAL_TRAIN if max(shape) <= 64 else PDAC_TRAIN
    row = {
        "params_m": count_parameters(model) / 1e6,
        "peak_memory_gib": memory["bytes"] / 2**30,
        "memory_kind": memory["kind"],
        "train_step_s": secs,
        "epoch_volumes": volumes,
        "epoch_s": secs * volumes / batch_size,
        "train_volumes_per_s": batch_size / secs,
        "flops_per_step": flops,
        "achieved_gflops": flops / secs / 1e9 if flops else None,
        "settings": {**config.speed(), "chunk_size": config.chunk_size, "amp": config.amp},
    }
    if inference:
        model.eval()
        with torch.no_grad(), autocast(device, config):
            model(x)
            secs = median([timed(lambda: model(x), device)[0] for _ in range(repeats)])
            row["infer_volumes_per_s"] = batch_size / secs
    return row


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    print(json.dumps(measure_case(**{**spec, "config": RunConfig.from_dict(spec["config"])}), allow_nan=True))
