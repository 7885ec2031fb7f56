"""One worker's training step: mixed precision, accumulation, clipping, warmup, schedules; callbacks around it.

>>> from deepseek_ray.optim import MixedPrecisionTrainer
>>> import torch
>>> trainer = MixedPrecisionTrainer(model=torch.nn.Linear(2, 2), optimizer='adamw', lr=5e-5)
>>> trainer.set_gradient_accumulation(steps=4)

Failure drills for tests live in :mod:`deepseek_ray.optim.drills`.
"""

from .callbacks import BestWeights, Callback, EarlyStopping, EpochFunction, Timing
from .trainer import SCHEDULES, TASKS, MixedPrecisionTrainer, lr_factor

__all__ = [
    "BestWeights",
    "Callback",
    "EarlyStopping",
    "EpochFunction",
    "MixedPrecisionTrainer",
    "SCHEDULES",
    "TASKS",
    "Timing",
    "lr_factor",
]
