"""Model builders by name: a model spec is a dict whose ``type`` picks a registered class."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from .builders import CNN, MLP, TCN, RecurrentNet
from .cellnet import CellNet, PlainCNN
from .pretrained import pretrained_classifier
from .transformer import TransformerClassifier

MODELS: dict[str, Callable[..., nn.Module]] = {
    "cellnet": CellNet,
    "plain_cnn": PlainCNN,
    "cnn": CNN,
    "mlp": MLP,
    "tcn": TCN,
    "lstm": RecurrentNet,
    "transformer_classifier": TransformerClassifier,
    "pretrained": pretrained_classifier,
}


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
    >>> type(build_model({'type': 'lstm', 'cell': 'gru', 'in_channels': 1, 'out_features': 1})).__name__
    'RecurrentNet'
    """
    kwargs = dict(spec)
    kind = kwargs.pop("type", None)
    if kind not in MODELS:
        raise ValueError(f"model type: unknown {kind!r}; registered: {', '.join(sorted(MODELS))}")
    return MODELS[kind](**kwargs)
