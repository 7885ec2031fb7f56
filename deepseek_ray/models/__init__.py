"""Model builders (MLP, CNN, cell net, TCN, LSTM/GRU, transformer), pretrained encoders, and the model bundle.

>>> from deepseek_ray.models import build_model, Architecture
>>> Architecture.decode('c16|conv5x5').channels
16
"""

from .build import MODELS, build_model, register_model
from .builders import CNN, MLP, TCN, RecurrentNet
from .bundle import InferenceModel, load_bundle, package_versions, save_bundle, strip_ddp_prefix
from .cellnet import Architecture, Cell, CellNet, PlainCNN
from .pretrained import PretrainedModel, minilm_dir
from .transformer import TransformerClassifier

__all__ = [
    "Architecture",
    "CNN",
    "Cell",
    "CellNet",
    "InferenceModel",
    "MLP",
    "MODELS",
    "PlainCNN",
    "PretrainedModel",
    "RecurrentNet",
    "TCN",
    "TransformerClassifier",
    "build_model",
    "minilm_dir",
    "load_bundle",
    "package_versions",
    "register_model",
    "save_bundle",
    "strip_ddp_prefix",
]
