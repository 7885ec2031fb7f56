"""Export to ONNX, ``torch.export`` or TensorRT, with checks (``onnx.checker``, parity) and metadata.

>>> from deepseek_ray.export import ModelExporter
>>> ModelExporter(format='onnx', optimize_level=9).optimize_level
9
"""

from .exporter import (
    FORMATS,
    ExportResult,
    ModelExporter,
    drop_initializer_shapes,
    fuse_transformer_blocks,
    graph_optimization_level,
    input_dtype,
    onnx_predict,
    onnx_session,
    read_metadata,
    register_onnx_translation,
)
from .tensorrt import tensorrt_backend
from .torch_program import TorchProgramSession, serving_session

__all__ = [
    "ExportResult",
    "FORMATS",
    "ModelExporter",
    "drop_initializer_shapes",
    "fuse_transformer_blocks",
    "graph_optimization_level",
    "input_dtype",
    "onnx_predict",
    "onnx_session",
    "read_metadata",
    "register_onnx_translation",
    "serving_session",
    "tensorrt_backend",
    "TorchProgramSession",
]
