"""Quantization of exported models: post-training int8 (dynamic, static) and int4, and QAT.

>>> from deepseek_ray.quantization import QATConfig, quantize
>>> QATConfig(bits=8, activation_range=6.0).bits
8
"""

from .ptq import (
    CALIBRATION_METHODS,
    METHODS,
    RECIPES,
    ArrayCalibrationReader,
    QuantizeResult,
    compare_weights,
    gelu_fed_matmuls,
    is_transformer,
    linear_as_matmul,
    quantize,
    weight_bytes,
)
from .qat import FakeQuantized, QATConfig, fake_quantize

__all__ = [
    "ArrayCalibrationReader",
    "CALIBRATION_METHODS",
    "FakeQuantized",
    "METHODS",
    "QATConfig",
    "QuantizeResult",
    "RECIPES",
    "compare_weights",
    "fake_quantize",
    "gelu_fed_matmuls",
    "is_transformer",
    "linear_as_matmul",
    "quantize",
    "weight_bytes",
]
