"""Building blocks: a module base that remembers its config, attention and feed-forward layers."""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class BaseModule(nn.Module):
    """A module that records the arguments it was built with, so it can be saved and rebuilt.

    >>> class Tiny(BaseModule):
    ...     def __init__(self, width: int = 4):
    ...         super().__init__()
    ...         self.layer = nn.Linear(width, 2)
    >>> m = Tiny(width=3)
    >>> m.config, m.num_parameters()
    ({'width': 3}, 8)
    >>> import tempfile, os; path = os.path.join(tempfile.mkdtemp(), 'tiny.pt'); m.save(path)
    >>> Tiny.load(path).config
    {'width': 3}
    """

    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        init = cls.__init__

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if not hasattr(self, "_config_recorded"):  # the outermost subclass records
                object.__setattr__(self, "_config_recorded", True)
                bound = inspect.signature(init).bind(self, *args, **kw)
                bound.apply_defaults()
                config = {k: v for k, v in bound.arguments.items() if k != "self"}
                init(self, *args, **kw)
                self.config = config
            else:
                init(self, *args, **kw)

        cls.__init__ = recording_init  # type: ignore[method-assign]  # wrapping __init__ is the point

    def num_parameters(self, trainable_only: bool = False) -> int:
        """Number of parameters (all, or trainable only)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save(self, path: str | Path) -> None:
        """Save config and weights to one file."""
        torch.save({"class": type(self).__qualname__, "config": self.config, "state_dict": self.state_dict()}, path)

    @classmethod
    def load(cls, path: str | Path, map_location: str = "cpu") -> BaseModule:
        """Rebuild from :meth:`save`'s file: ``cls(**config)`` then the weights."""
        blob = torch.load(path, map_location=map_location, weights_only=True)
        module = cls(**blob["config"])
        module.load_state_dict(blob["state_dict"])
        return module


class MultiHeadAttention(BaseModule):
    """Scaled dot-product attention over ``heads`` heads (batch first), same math as
    ``torch.nn.MultiheadAttention`` with one packed input projection.

    >>> mha = MultiHeadAttention(dim=16, heads=4)
    >>> mha(torch.randn(2, 5, 16)).shape
    torch.Size([2, 5, 16])
    """

    def __init__(self, dim: int, heads: int = 8, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.heads, self.dropout = heads, dropout
        self.in_proj = nn.Linear(dim, 3 * dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``key_padding_mask``: True where a key position is padding (torch's convention)."""
        key = query if key is None else key
        value = key if value is None else value
        w_q, w_k, w_v = self.in_proj.weight.chunk(3)
        b_q, b_k, b_v = self.in_proj.bias.chunk(3) if self.in_proj.bias is not None else (None, None, None)
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731  (B, H, T, d)
        q, k, v = split(F.linear(query, w_q, b_q)), split(F.linear(key, w_k, b_k)), split(F.linear(value, w_v, b_v))
        mask = None if key_padding_mask is None else ~key_padding_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).flatten(-2))


class FeedForward(BaseModule):
    """Position-wise feed-forward: Linear → GELU → Dropout → Linear.

    >>> FeedForward(dim=8)(torch.randn(2, 3, 8)).shape
    torch.Size([2, 3, 8])
    """

    def __init__(self, dim: int, hidden: int | None = None, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden or 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden or 4 * dim, dim)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
