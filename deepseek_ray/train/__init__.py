"""How a run is spread: Ray Train ``TorchTrainer``, per-epoch checkpoints, retries, resume.

The names load on first use: Ray Train's controller imports :mod:`deepseek_ray.train.launcher` (the backend
config and progress relay it unpickles), and that must not import torch through this package.

>>> from deepseek_ray.train import TrainSettings
>>> TrainSettings(model_spec={'type': 'plain_cnn'}, epochs=2, lr=1e-3).precision
'fp32'
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["TrainResult", "TrainSettings", "build_trainer", "seed_everything", "train", "train_loop"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".distributed", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
