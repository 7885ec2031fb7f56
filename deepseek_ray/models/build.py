"""Model builders by name: a model spec is a dict whose ``type`` picks a registered class."""

from __future__ import annotations

from typing import Any, Callable

from torch import nn

from .cellnet import CellNet, PlainCNN

MODELS: dict[str, Callable[..., nn.Module]] = {"cellnet": CellNet, "plain_cnn": PlainCNN}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model class (or builder) under ``name`` for ``build_model({'type': name, ...})``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODELS[name] = builder
        return builder

    return wrap


def build_model(spec: dict[str, Any]) -> nn.Module:
    """Build a model from its spec.

    >>> build_model({'type': 'cellnet', 'arch': 'c8|conv3x3', 'in_channels': 1, 'num_classes': 3}).num_parameters() > 0
    True
    """
    kwargs = dict(spec)
    kind = kwargs.pop("type", None)
    if kind not in MODELS:
        raise ValueError(f"model type: unknown {kind!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[kind](**kwargs)
