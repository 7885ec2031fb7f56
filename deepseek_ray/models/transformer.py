"""A transformer encoder text classifier built on :mod:`deepseek_ray.nn` blocks."""

from __future__ import annotations

import torch
from torch import nn

from ..nn import BaseModule, FeedForward, MultiHeadAttention


class EncoderLayer(nn.Module):
    """Pre-norm encoder layer: ``x + Attention(LN(x))``, then ``x + FeedForward(LN(x))``."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.attention_norm, self.ff_norm = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = MultiHeadAttention(dim, heads, dropout=dropout)
        self.ff = FeedForward(dim, dropout=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), key_padding_mask=padding))
        return x + self.dropout(self.ff(self.ff_norm(x)))


class TransformerClassifier(BaseModule):
    """Token ids ``(B, T)`` int64 → class logits: embeddings + learned positions, ``layers`` encoder
    layers, mean over the non-padding tokens (``pad_id`` masked), a linear head.

    >>> model = TransformerClassifier(vocab_size=100, num_classes=2, dim=16, heads=2, layers=1, max_len=8)
    >>> model(torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]])).shape
    torch.Size([1, 2])
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        dim: int = 128,
        heads: int = 4,
        layers: int = 2,
        max_len: int = 128,
        dropout: float = 0.1,
        pad_id: int = 0,
    ):
        super().__init__()
        self.pad_id = pad_id
        self.tokens = nn.Embedding(vocab_size, dim, padding_idx=pad_id)
        self.positions = nn.Embedding(max_len, dim)
        self.layers = nn.ModuleList(EncoderLayer(dim, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        padding = ids == self.pad_id
        # The first position always attends, so an all-padding row gives finite outputs, not NaN.
        padding = torch.cat([torch.zeros_like(padding[:, :1]), padding[:, 1:]], dim=1)
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.tokens(ids) + self.positions(positions)[None]
        for layer in self.layers:
            x = layer(x, padding)
        keep = (~padding).unsqueeze(-1).to(x.dtype)
        pooled = (self.norm(x) * keep).sum(1) / keep.sum(1)
        return self.head(pooled)
