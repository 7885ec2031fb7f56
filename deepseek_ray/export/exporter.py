"""ONNX export, checked: ``onnx.checker``, ONNX Runtime parity against torch, and a metadata file.

``optimize_level`` (0–9) picks ONNX Runtime's graph optimisation for every session that loads the
model (parity checks and serving read it from the metadata):

=======  =====================================================
level    ONNX Runtime ``GraphOptimizationLevel``
=======  =====================================================
0        ``ORT_DISABLE_ALL``
1–3      ``ORT_ENABLE_BASIC`` (constant folding, redundant nodes)
4–6      ``ORT_ENABLE_EXTENDED`` (+ fusions: GELU, LayerNorm, attention)
7–9      ``ORT_ENABLE_ALL`` (+ layout optimisations)
=======  =====================================================

The exported file itself stays portable (the layout passes of level ≥ 7 are hardware specific, so
they are applied when a session loads the model, not baked into the file).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

FORMATS = ("onnx",)


def graph_optimization_level(level: int):
    """ONNX Runtime's ``GraphOptimizationLevel`` for an ``optimize_level`` of 0–9."""
    import onnxruntime as ort

    if not 0 <= level <= 9:
        raise ValueError(f"optimize_level must be 0–9, got {level}")
    levels = ort.GraphOptimizationLevel
    if level == 0:
        return levels.ORT_DISABLE_ALL
    return levels.ORT_ENABLE_BASIC if level <= 3 else levels.ORT_ENABLE_EXTENDED if level <= 6 else levels.ORT_ENABLE_ALL


def onnx_session(path: str | Path, optimize_level: int = 9, threads: int = 0):
    """An ONNX Runtime CPU session with the graph optimisation ``optimize_level`` maps to.

    A truncated or corrupt file gives a ``ValueError`` naming the file, not a crash inside ONNX Runtime.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = graph_optimization_level(optimize_level)
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise ValueError(f"cannot load ONNX model {path}: {str(err).splitlines()[0][:300]}") from None


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ExportResult:
    """A written model file and what was checked about it."""

    path: str
    format: str
    size_bytes: int
    sha256: str
    metadata_path: str
    max_abs_diff: float | None = None


class ModelExporter:
    """Export a torch model to ONNX, check it, and write its metadata beside it.

    >>> import tempfile, os
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1))
    >>> out = ModelExporter(format='onnx', optimize_level=9).export(model, os.path.join(tempfile.mkdtemp(), 'model.onnx'),
    ...                                                             example_input=torch.randn(2, 4))
    >>> out.format, out.max_abs_diff < 1e-5
    ('onnx', True)
    """

    def __init__(self, format: str = "onnx", optimize_level: int = 9, opset: int = 18, dynamic_batch: bool = True):
        if format not in FORMATS:
            raise ValueError(f"export format: unknown {format!r}; allowed: {', '.join(FORMATS)}")
        graph_optimization_level(optimize_level)  # validates the range
        self.format, self.optimize_level, self.opset, self.dynamic_batch = format, optimize_level, opset, dynamic_batch

    def export(
        self, model: nn.Module | str | Path, path: str | Path, example_input: torch.Tensor | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> ExportResult:
        """Write ``model`` (a module, or a model bundle folder) to ``path``; check it; return what was written.

        Without ``example_input``, a bundle's ``input_shape`` gives a zero batch of two.
        """
        metadata = dict(metadata or {})
        if isinstance(model, (str, Path)):
            from ..models import load_bundle

            model, meta = load_bundle(model)
            metadata.setdefault("labels", meta["labels"])
            metadata.setdefault("input_shape", meta["input_shape"])
            metadata.setdefault("architecture", meta["architecture"])
            if example_input is None:
                example_input = torch.zeros(2, *meta["input_shape"])
        if example_input is None:
            raise ValueError("example_input is needed to export a module (or pass a model bundle folder)")
        model = model.eval()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._export_onnx(model, example_input, path)
        import onnx

        onnx.checker.check_model(str(path), full_check=True)
        diff = self.parity(model, path, example_input)
        meta_path = self._write_metadata(path, example_input, metadata)
        return ExportResult(str(path), self.format, path.stat().st_size, sha256_of(path), str(meta_path), diff)

    def _export_onnx(self, model: nn.Module, example: torch.Tensor, path: Path) -> None:
        batch = torch.export.Dim("batch", min=1, max=4096) if self.dynamic_batch else None
        dynamic = ({0: batch},) if batch is not None else None
        previous = logging.getLogger("torch.onnx").level
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            program = torch.onnx.export(
                model, (example,), dynamo=True, dynamic_shapes=dynamic, opset_version=self.opset,
                input_names=["input"], output_names=["probabilities"], verbose=False, optimize=True,
            )
            program.save(str(path), external_data=False)
        finally:
            logging.getLogger("torch.onnx").setLevel(previous)

    def parity(self, model: nn.Module, path: str | Path, inputs: torch.Tensor, batch_size: int = 256) -> float:
        """Max |torch − ONNX Runtime| over ``inputs`` (in batches)."""
        session = onnx_session(path, self.optimize_level)
        name = session.get_inputs()[0].name
        worst = 0.0
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                chunk = inputs[start : start + batch_size]
                expected = model(chunk).float().numpy()
                got = session.run(None, {name: chunk.numpy().astype(np.float32)})[0]
                worst = max(worst, float(np.abs(expected - got).max()))
        return worst

    def _write_metadata(self, path: Path, example: torch.Tensor, extra: dict[str, Any]) -> Path:
        import onnx

        graph = onnx.load(str(path), load_external_data=False).graph
        meta = {
            "format": self.format,
            "opset": self.opset,
            "optimize_level": self.optimize_level,
            "inputs": [{"name": i.name, "shape": _dims(i), "dtype": "float32"} for i in graph.input],
            "outputs": [{"name": o.name, "shape": _dims(o)} for o in graph.output],
            "example_shape": list(example.shape),
            "preprocessing": "inside the graph: raw inputs in (pixel values 0–255), class probabilities out",
            "sha256": sha256_of(path),
            "size_bytes": path.stat().st_size,
            **extra,
        }
        meta_path = path.with_suffix(path.suffix + ".json")
        meta_path.write_text(json.dumps(meta, indent=2, default=str))
        return meta_path


def _dims(value: Any) -> list[int | str]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def read_metadata(model_path: str | Path) -> dict[str, Any]:
    """The metadata written beside an exported model."""
    meta_path = Path(str(model_path) + ".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"no metadata beside {model_path} (expected {meta_path}); run `deepseek-ray export` first")
    return json.loads(meta_path.read_text())


def onnx_predict(session: Any, batch: np.ndarray) -> np.ndarray:
    """Run a session on a float32 batch; returns the first output.

    A batch whose shape does not fit the model's input is a ``ValueError`` naming both shapes.
    """
    expected = session.get_inputs()[0]
    fixed = [d if isinstance(d, int) else None for d in expected.shape]
    if len(fixed) != batch.ndim or any(f is not None and f != n for f, n in zip(fixed, batch.shape)):
        shown = [d if d is not None else "N" for d in fixed]
        raise ValueError(f"input of shape {list(batch.shape)} does not fit the model's input {expected.name!r} of shape {shown}")
    return session.run(None, {expected.name: batch.astype(np.float32, copy=False)})[0]


__all__ = ["ExportResult", "FORMATS", "ModelExporter", "graph_optimization_level", "onnx_predict", "onnx_session",
           "read_metadata", "sha256_of"]
