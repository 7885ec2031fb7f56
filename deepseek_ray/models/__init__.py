"""Model builders, the NAS cell network, and the model bundle.

>>> from deepseek_ray.models import build_model, Architecture
>>> Architecture.decode('c16|conv5x5').channels
16
"""

from .build import MODELS, build_model, register_model
from .bundle import InferenceModel, load_bundle, package_versions, save_bundle, strip_ddp_prefix
from .cellnet import Architecture, Cell, CellNet, PlainCNN

__all__ = [
    "Architecture", "Cell", "CellNet", "InferenceModel", "MODELS", "PlainCNN", "build_model",
    "load_bundle", "package_versions", "register_model", "save_bundle", "strip_ddp_prefix",
]
