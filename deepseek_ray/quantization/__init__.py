"""Quantization of exported models: post-training int8 (dynamic, static) and int4, and QAT.

>>> from deepseek_ray.quantization import QATConfig, quantize
>>> QATConfig(bits=8, activation_range=6.0).bits
8
"""

from .ptq import (
    CALIBRATION_METHODS,
    METHODS,
    ArrayCalibrationReader,
    QuantizeResult,
    compare_weights,
    linear_as_matmul,
    quantize,
    weight_bytes,
)
from .qat import FakeQuantized, QATConfig, fake_quantize

__all__ = ["ArrayCalibrationReader", "CALIBRATION_METHODS", "FakeQuantized", "METHODS", "QATConfig", "QuantizeResult",
           "compare_weights", "fake_quantize", "linear_as_matmul", "quantize", "weight_bytes"]
