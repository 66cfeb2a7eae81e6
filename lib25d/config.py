"""``RunConfig``: everything that defines one training run, and nothing else.

It is what the CLI parses, what the training notebook's parameters cell holds, what the
profile grids enumerate and what a result file records first. Defaults are the paper's protocol.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


# RunConfig values of the straightforward implementation (the reference of ``lib25d bench --compare``)
STRAIGHTFORWARD: dict[str, Any] = {"channels_last": False, "tiny_convs": False, "fold_adapter": False,
                                   "dedupe_slices": False,
                                   "cache_warmup_features": False, "checkpointing": False, "compile": False,
                                   "amp": False}
# switches that change speed and memory only (float summation order at most): a run may resume with others
PERFORMANCE_FIELDS = ("channels_last", "tiny_convs", "fold_adapter", "dedupe_slices", "cache_warmup_features",
                      "checkpointing", "compile")

WARMUP_BN = ("authors", "frozen")  # see lib25d.train


@dataclass
class RunConfig:
    dataset: str = "adrenal"          # organ|nodule|fracture|adrenal|vessel|synapse|synthetic|nifti:<csv>
    size: int = 28                    # MedMNIST edge length: 28 or 64
    method: str = "attention"         # attention|mean|max|lstm|transformer (2.5D), 3d, acs
    backbone: str = "resnet18"        # torchvision classifier name
    weights: str | None = "imagenet"  # "imagenet", a state-dict path, or None for random
    seed: int = 0
    epochs: int = 50
    batch_size: int = 64
    lr: float = 2e-4                  # NAdam
    warmup_epochs: int = 3            # epochs that train only the new modules (authors' code 3, paper 2)
    warmup_bn: str = "authors"        # frozen encoder's BatchNorm in the warm-up: authors|frozen (lib25d.train)
    device: str = "auto"              # auto|cpu|cuda|cuda:N
    data_root: str | None = None      # else $LIB25D_DATA_ROOT, else medmnist's default
    num_workers: int = -1             # DataLoader workers; -1: auto (up to 4 on CUDA, 0 on CPU: light, reproducible)
    chunk_size: int | None = None     # slices per encoder call; bounds memory on large volumes
    amp: bool = True                  # bf16 autocast on CUDA
    bf16_cpu: bool = False            # bf16 autocast on CPU too: changes the numbers; fast with native bf16 only
    dataset_options: dict[str, Any] = field(default_factory=dict)  # e.g. synthetic n_train, shape
    # performance switches: same numbers (within float tolerance), different speed / memory
    channels_last: bool = True        # NHWC slice encoder (2.5D methods; faster on CPU here)
    tiny_convs: bool = True           # convolutions on maps no bigger than their kernel run as matrix products
    fold_adapter: bool = True         # the 1x1 channel adapter folded into the first convolution (2.5D)
    dedupe_slices: bool = True        # identical slices encoded once (BatchNorm weighs them by multiplicity)
    cache_warmup_features: bool = True  # warm-up with warmup_bn=frozen: encode the training split once
    checkpointing: bool = False       # recompute slice-encoder activations per chunk (with chunk_size)
    compile: bool = False             # torch.compile the backbone

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs:
            raise ValueError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.warmup_bn not in WARMUP_BN:
            raise ValueError(f"unknown warmup_bn {self.warmup_bn!r}; valid: {', '.join(WARMUP_BN)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if isinstance(self.weights, str) and self.weights.lower() in ("none", "null", "random", ""):
            self.weights = None

    def performance(self) -> dict[str, Any]:
        """The switches a model's ``configure`` takes (see :class:`lib25d.models.encoder.SliceEncoder`)."""
        return {"channels_last": self.channels_last, "tiny_convs": self.tiny_convs,
                "fold_adapter": self.fold_adapter, "dedupe": self.dedupe_slices, "checkpointing": self.checkpointing}

    def straightforward(self) -> "RunConfig":
        """The same run with every optimisation off: fp32, default memory format, no reuse."""
        return self.replace(**STRAIGHTFORWARD)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "RunConfig":
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(valid))
        if unknown:
            raise ValueError(f"unknown run setting(s) {', '.join(unknown)}; valid: {', '.join(valid)}")
        return cls(**values)

    def replace(self, **changes: Any) -> "RunConfig":
        return self.from_dict({**self.to_dict(), **changes})
