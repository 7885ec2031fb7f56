"""How a run is spread: Ray Train ``TorchTrainer``, per-epoch checkpoints, retries, resume.

The names load on first use: Ray Train's controller imports :mod:`deepseek_ray.train.backend` and
:mod:`deepseek_ray.train.progress` (the backend config and progress relay it unpickles), and those must not
import torch through this package.

``train(config, data, model_spec=..., name=..., storage_path=...)`` takes the experiment file's
:class:`~deepseek_ray.config.TrainConfig` all the way to every worker.

>>> from deepseek_ray.train import train
>>> train.__name__
'train'
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["Checkpointing", "TrainResult", "build_trainer", "seed_everything", "train", "train_loop"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module(".distributed", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
