"""Reducers: slice tokens (B, N, F) -> one :class:`Reduced` vector per volume (the paper's appendix).
Attention pooling and gated attention-MIL also give one weight per slice: what makes them interpretable."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class Reduced(NamedTuple):
    """What every reducer returns: the vector, and the slice weights of those that weigh slices."""

    vector: torch.Tensor  # (B, out_features)
    weights: torch.Tensor | None = None  # (B, N), averaged over heads, sums to 1
    head_weights: torch.Tensor | None = None  # (B, heads, N), each head sums to 1


class AttentionPool(nn.Module):
    """Multi-head attention with the mean token as the only query (CLIP's pool); as in the authors'
    code no positional embedding, LayerNorm or residual."""

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        if dim % heads:
            raise ValueError(f"feature width {dim} is not divisible by heads={heads}; choose a divisor of {dim}")
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_features = dim

    def forward(self, tokens: torch.Tensor) -> Reduced:
        out, w = self.attn(tokens.mean(dim=1, keepdim=True), tokens, tokens, average_attn_weights=False)
        return Reduced(out[:, 0], w[:, :, 0].mean(dim=1), w[:, :, 0])


class MeanPool(nn.Module):
    """The mean token."""

    def __init__(self, dim: int):
        super().__init__()
        self.out_features = dim

    def forward(self, tokens: torch.Tensor) -> Reduced:
        return Reduced(tokens.mean(dim=1))


class MaxPool(MeanPool):
    """The channel-wise maximum over tokens."""

    def forward(self, tokens: torch.Tensor) -> Reduced:
        return Reduced(tokens.amax(dim=1))


class LSTMReducer(nn.Module):
    """Two-layer LSTM over the slice sequence, hidden 128; the last time step is the summary."""

    def __init__(self, dim: int, hidden: int = 128, layers: int = 2):
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, num_layers=layers, batch_first=True)
        self.out_features = hidden

    def forward(self, tokens: torch.Tensor) -> Reduced:
        return Reduced(self.lstm(tokens)[0][:, -1])


class TransformerReducer(nn.Module):
    """A full ``nn.Transformer`` (6 + 6 layers) whose decoder reads the mean token, as in the authors' code."""

    def __init__(self, dim: int, heads: int = 8):
        super().__init__()
        self.transformer = nn.Transformer(d_model=dim, nhead=heads, batch_first=True)
        self.out_features = dim

    def forward(self, tokens: torch.Tensor) -> Reduced:
        return Reduced(self.transformer(tokens, tokens.mean(dim=1, keepdim=True))[:, 0])


class GatedAttentionMIL(nn.Module):
    """Gated attention-MIL pooling (Ilse, Tomczak & Welling 2018), beyond the paper: a_i = softmax_i(w^T (tanh(V h_i)
    * sigmoid(U h_i))) over all slices of the volume, hidden width 128 as theirs; the vector is sum_i a_i h_i."""

    def __init__(self, dim: int, hidden: int = 128):
        super().__init__()
        self.V, self.U, self.w = nn.Linear(dim, hidden), nn.Linear(dim, hidden), nn.Linear(hidden, 1)
        self.out_features = dim

    def forward(self, tokens: torch.Tensor) -> Reduced:
        a = self.w(torch.tanh(self.V(tokens)) * torch.sigmoid(self.U(tokens)))[..., 0].softmax(dim=1)
        return Reduced(torch.einsum("bn,bnf->bf", a, tokens), a, a[:, None])
