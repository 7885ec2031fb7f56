"""How a run is spread: Ray Train ``TorchTrainer``, per-epoch checkpoints, retries, resume.

>>> from deepseek_ray.train import TrainSettings
>>> TrainSettings(model_spec={'type': 'plain_cnn'}, epochs=2, lr=1e-3).precision
'fp32'
"""

from .distributed import TrainResult, TrainSettings, build_trainer, seed_everything, train, train_loop

__all__ = ["TrainResult", "TrainSettings", "build_trainer", "seed_everything", "train", "train_loop"]
