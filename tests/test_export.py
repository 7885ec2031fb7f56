"""ONNX export: checked, at parity with torch, with metadata; bad files give clear errors.

Parity is measured here, not read from the exporter: the written file is loaded with ONNX Runtime and run
on real digit scans, against the bundle's own torch model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from deepseek_ray.data import load_dataset
from deepseek_ray.export import (
    ModelExporter,
    drop_initializer_shapes,
    graph_optimization_level,
    onnx_predict,
    onnx_session,
)
from deepseek_ray.models import load_bundle

# An honest float32 export differs by ~2e-7 on these inputs; one of the bundle's 3.3k weights off by 1e-3 moves
# the probabilities by 3e-4, a mean off by 1 by 5e-3: this bound lies between.
PARITY = 1e-5
ALL_OPTIMIZATIONS = ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def digit_scans() -> torch.Tensor:
    """The 179 raw 8×8 scans (0–255) of the shipped digits' test split: what a served model is sent."""
    return load_dataset("digits", seed=0).raw("test")


def bundle_outputs(bundle: Path, x: torch.Tensor) -> np.ndarray:
    """The bundle's probabilities as torch computes them (the reference every export is held to)."""
    model, _ = load_bundle(bundle)
    with torch.no_grad():
        return model(x).numpy()


def ort_outputs(path: Path, x: torch.Tensor, level: ort.GraphOptimizationLevel = ALL_OPTIMIZATIONS) -> np.ndarray:
    """The file's outputs in a plain ONNX Runtime session (none of the exporter's own loading code)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


def test_export_from_a_bundle_matches_torch_and_writes_metadata(image_bundle, tmp_path):
    path = tmp_path / "model.onnx"
    result = ModelExporter(format="onnx", optimize_level=9).export(image_bundle, path)
    x = digit_scans()
    assert np.abs(ort_outputs(path, x) - bundle_outputs(image_bundle, x)).max() < PARITY
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    assert result.sha256 == sha256 and result.size_bytes == path.stat().st_size
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["opset"] == 18 and meta["sha256"] == sha256 and meta["labels"][0] == "0"
    batch_axis, *shape = meta["inputs"][0]["shape"]
    assert shape == [1, 8, 8] and isinstance(batch_axis, str)  # a dynamic batch
    assert drop_initializer_shapes(onnx.load(path)) == 0  # no stale weight shapes for quantizers
    session = onnx_session(path, optimize_level=0)
    for batch in (1, 7):
        probabilities = onnx_predict(session, x[:batch].numpy())
        assert probabilities.shape == (batch, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_optimize_levels_map_to_onnx_runtime():
    levels = ort.GraphOptimizationLevel
    assert graph_optimization_level(0) == levels.ORT_DISABLE_ALL
    assert graph_optimization_level(2) == levels.ORT_ENABLE_BASIC
    assert graph_optimization_level(5) == levels.ORT_ENABLE_EXTENDED
    assert graph_optimization_level(9) == levels.ORT_ENABLE_ALL
    with pytest.raises(ValueError, match="0–9"):
        ModelExporter(optimize_level=11)
    with pytest.raises(ValueError, match="allowed: onnx"):
        ModelExporter(format="pickle")


def test_truncated_file_and_wrong_shape_give_clear_errors(image_bundle, tmp_path):
    path = tmp_path / "model.onnx"
    ModelExporter().export(image_bundle, path)
    session = onnx_session(path)
    with pytest.raises(ValueError, match=r"shape \[2, 1, 28, 28\] does not fit .* \['\w+', 1, 8, 8\]"):
        onnx_predict(session, np.zeros((2, 1, 28, 28), np.float32))
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="cannot load ONNX model .*truncated.onnx"):
        onnx_session(truncated)
