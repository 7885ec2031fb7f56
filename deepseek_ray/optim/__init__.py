"""One worker's training step: mixed precision, accumulation, clipping, warmup, schedules.

>>> from deepseek_ray.optim import MixedPrecisionTrainer
>>> import torch
>>> trainer = MixedPrecisionTrainer(model=torch.nn.Linear(2, 2), optimizer='adamw', lr=5e-5)
>>> trainer.set_gradient_accumulation(steps=4)
"""

from .trainer import SCHEDULES, TASKS, MixedPrecisionTrainer, lr_factor

__all__ = ["MixedPrecisionTrainer", "SCHEDULES", "TASKS", "lr_factor"]
