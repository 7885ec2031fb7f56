"""Export to ONNX with checks (``onnx.checker``, ONNX Runtime parity) and metadata.

>>> from deepseek_ray.export import ModelExporter
>>> ModelExporter(format='onnx', optimize_level=9).optimize_level
9
"""

from .exporter import (
    FORMATS,
    ExportResult,
    ModelExporter,
    graph_optimization_level,
    onnx_predict,
    onnx_session,
    read_metadata,
    sha256_of,
)

__all__ = ["ExportResult", "FORMATS", "ModelExporter", "graph_optimization_level", "onnx_predict", "onnx_session",
           "read_metadata", "sha256_of"]
