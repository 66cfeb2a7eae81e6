"""The authors' design (TUM-AIMED/2.5DAttention), rewritten small: the reference lib25d must match.

From reading their ``models/twoandahalfdmodel.py`` and ``train.py`` (no code copied): a 1x1
ones-initialised conv + ResNet without ``fc`` runs once per axis, tokens in axis order 0, 1, 2; the
mean token queries the reducer. Epoch 0 runs in eval mode, later ones in train mode (BatchNorm
statistics move while the backbone is frozen; their LSTM trains in train mode from epoch 0); after
three head-only epochs everything is unfrozen; NAdam; BCE on one logit or cross-entropy.
``tests/test_parity.py`` and ``python -m study bench --compare`` use it; no performance switch, on purpose.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from lib25d.models import METHODS
from lib25d.models.backbone import backbone_network


class AuthorsModel(nn.Module):
    """Their ``TwoAndAHalfD*`` forward with plain torchvision / torch modules."""

    def __init__(
        self, feature_extractor: nn.Module, reduce_3d_module: nn.Module | None, classifier: nn.Linear, method: str
    ):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.reduce_3d_module = reduce_3d_module
        self.classifier = classifier
        self.method = method

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        n, c, nz, nx, ny = x.shape
        fe = self.feature_extractor
        return torch.cat(
            [
                fe(x.permute(0, 2, 1, 3, 4).reshape(n * nz, c, nx, ny)).reshape(n, nz, -1),
                fe(x.permute(0, 3, 1, 2, 4).reshape(n * nx, c, nz, ny)).reshape(n, nx, -1),
                fe(x.permute(0, 4, 1, 2, 3).reshape(n * ny, c, nz, nx)).reshape(n, ny, -1),
            ],
            dim=1,
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits and the head-averaged attention map (attention only), as their models return."""
        f = self.tokens(x)
        query = f.mean(1, keepdim=True)
        att = None
        if self.method == "attention":
            out, att = self.reduce_3d_module(query, f, f)
            out, att = out[:, 0], att[:, 0]
        elif self.method == "mean":
            out = f.mean(1)
        elif self.method == "max":
            out = f.max(1)[0]
        elif self.method == "lstm":
            out = self.reduce_3d_module(f)[0][:, -1]
        else:  # transformer: encoder over the slices, decoder on the mean token
            out = self.reduce_3d_module(f, query)[:, 0]
        return self.classifier(out), att


def from_lib25d(model: nn.Module) -> AuthorsModel:
    """The authors' model holding a copy of a lib25d ``Model25D``'s weights and buffers; the backbone is
    rebuilt from torchvision with the same state dict, so no lib25d performance switch reaches it."""
    enc = model.encoder
    p = next(model.parameters())
    like = dict(device=p.device, dtype=p.dtype)  # before copying: a float32 copy would round float64 weights
    adapter = nn.Conv2d(enc.in_channels, 3, 1, bias=False).to(**like) if enc.in_channels != 3 else None
    if adapter is not None:
        adapter.weight.data.copy_(enc.adapter.conv.weight.detach().contiguous())
    network, _ = backbone_network(enc.backbone, None)
    network.to(**like).load_state_dict({k: v.contiguous() for k, v in enc.network.state_dict().items()})
    extractor = nn.Sequential(*([adapter] if adapter is not None else []), network)
    method = next(name for name, m in METHODS.items() if type(model.reducer) is m.build)
    inner = {"attention": "attn", "lstm": "lstm", "transformer": "transformer"}.get(method)
    reducer = copy.deepcopy(getattr(model.reducer, inner)) if inner else None
    return AuthorsModel(extractor, reducer, copy.deepcopy(model.head), method).to(**like)


def loss_fn(num_outputs: int) -> nn.Module:
    """Their loss: BCE on one logit, cross-entropy on several."""
    return nn.BCEWithLogitsLoss() if num_outputs == 1 else nn.CrossEntropyLoss()


def prepare(model: AuthorsModel, head_only_epochs: int) -> None:
    """Their starting point: eval mode, feature extractor frozen (unless there is no head-only epoch)."""
    model.eval()
    model.feature_extractor.requires_grad_(head_only_epochs == 0)


def train_step(model: AuthorsModel, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer) -> float:
    """Their ``train_step``: forward, loss on squeezed outputs, backward, step, zero_grad."""
    pred, _ = model(x)
    target = y.to(pred.dtype) if pred.shape[1] == 1 else y.long()
    loss = loss_fn(pred.shape[1])(pred.squeeze(1) if pred.shape[1] == 1 else pred, target)
    loss.backward()
    opt.step()
    opt.zero_grad()
    return loss.item()


def train_epoch(
    model: AuthorsModel,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    opt: torch.optim.Optimizer,
    epoch: int,
    head_only_epochs: int,
) -> list[float]:
    """Epoch ``epoch`` (0-based) of their loop; ``head_only_epochs`` 0 = all trainable, train mode."""
    train_mode_after = 0 if METHODS[model.method].eval_first_epoch else -1  # their configs' unfreeze.train_mode
    if epoch > train_mode_after or head_only_epochs == 0:
        model.train()
    losses = [train_step(model, x, y, opt) for x, y in batches]
    model.eval()
    if epoch == head_only_epochs - 1:
        model.requires_grad_(True)
    return losses
