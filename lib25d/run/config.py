"""``RunConfig``: everything that defines one training run; defaults are the paper's protocol.

``lib25d train``'s options and the run notebook's parameters are generated from its fields. Kinds: ``run``
settings define the experiment; ``runtime`` ones say where and how it runs; ``speed`` switches change speed and
memory only (float summation order at most), so a run may resume or be compared under other values of both.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..settings import setting

WARMUP_BN = ("authors", "frozen")  # see lib25d.run.loop


@dataclasses.dataclass
class RunConfig:
    dataset: str = setting("adrenal", "organ, nodule, fracture, adrenal, vessel, synapse, synthetic or nifti:<csv>")
    size: int = setting(28, "MedMNIST edge length, 28 or 64 (synthetic: any side from 8)")
    method: str = setting("attention", "attention, mean, max, lstm, transformer, gated, spatial (2.5D), 3d or acs")
    backbone: str = setting("resnet18", "2D network: a torchvision classifier name or timm:<name> (any timm model)")
    weights: str | None = setting(
        "imagenet",
        "'imagenet' (torchvision's cache or a download), a state-dict "
        "file (timm: also .safetensors), or none (random init)",
    )
    seed: int = setting(0, "random seed of initialisation, shuffling and dropout")
    epochs: int = setting(50, "training epochs (the paper's 50)")
    batch_size: int = setting(64, "volumes per step")
    lr: float = setting(2e-4, "NAdam learning rate")
    warmup_epochs: int = setting(3, "first epochs train only the new modules (the authors' code 3, the paper 2)")
    warmup_bn: str = setting(
        "authors",
        "the frozen encoder's BatchNorm in the warm-up: authors (eval mode in the "
        "first epoch, then train mode; what makes training from scratch work) "
        "or frozen (eval mode throughout; allows the feature cache)",
    )
    bf16_cpu: bool = setting(False, "bf16 autocast on CPU too (changes the numbers; fast only with native bf16)")
    dataset_options: dict[str, Any] = setting(
        {},
        "dataset options, e.g. subset=64 (any dataset), n_train=128 "
        "(synthetic), recipe=pdac-ct or glioma-mri, orientation=RAS, "
        "spacing=1,1,1, window=-150,250 (nifti)",
    )
    device: str = setting("auto", "auto, cpu, cuda or cuda:N", "runtime")
    data_root: str | None = setting(
        None, "folder of the MedMNIST files (default $LIB25D_DATA_ROOT, else ~/.medmnist)", "runtime"
    )
    num_workers: int = setting(-1, "DataLoader workers (-1: up to 4 on CUDA, none on CPU)", "runtime")
    chunk_size: int | None = setting(None, "slices per encoder call: bounds memory on large volumes", "runtime")
    amp: bool = setting(True, "bf16 autocast on CUDA", "runtime")
    channels_last: bool = setting(True, "NHWC slice encoder (2.5D)", "speed")
    tiny_convs: bool = setting(
        True, "convolutions on maps no bigger than their kernel run as one matrix product", "speed"
    )
    fold_adapter: bool = setting(True, "the 1x1 channel adapter folded into the first convolution (2.5D)", "speed")
    dedupe_slices: bool = setting(True, "identical slices encoded once, BatchNorm weighing each by its count", "speed")
    cache_warmup_features: bool = setting(
        True, "with warmup_bn frozen: encode the training split once for the whole warm-up", "speed"
    )
    checkpointing: bool = setting(
        False,
        "recompute slice-encoder activations per chunk in the backward pass "
        "(with chunk_size): memory of one chunk for one more forward",
        "speed",
    )
    compile: bool = setting(False, "torch.compile the backbone (slow start)", "speed")

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.warmup_bn not in WARMUP_BN:
            raise ValueError(f"unknown warmup_bn {self.warmup_bn!r}; valid: {', '.join(WARMUP_BN)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if isinstance(self.weights, str) and self.weights.lower() in ("none", "null", "random", ""):
            self.weights = None

    def speed(self) -> dict[str, Any]:
        """The speed switches, by field name (what ``lib25d.models.fast.apply`` takes)."""
        return {name: getattr(self, name) for name in SPEED_FIELDS}

    def straightforward(self) -> RunConfig:
        """The same run with every optimisation off: fp32, default memory format, no reuse."""
        return self.replace(**dict.fromkeys(SPEED_FIELDS, False), amp=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown run setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        return self.from_dict({**self.to_dict(), **changes})


_KINDS = {f.name: f.metadata["kind"] for f in dataclasses.fields(RunConfig)}
SPEED_FIELDS = tuple(name for name, kind in _KINDS.items() if kind == "speed")
# may differ between runs of the same experiment
RUNTIME_FIELDS = (*(name for name, kind in _KINDS.items() if kind == "runtime"), *SPEED_FIELDS)
