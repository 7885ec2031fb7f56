"""ONNX export: checked, at parity with torch, with metadata; bad files give clear errors."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from deepseek_ray.export import ModelExporter, drop_initializer_shapes, graph_optimization_level, onnx_predict, onnx_session


def test_export_from_a_bundle_checks_parity_and_writes_metadata(image_bundle, tmp_path):
    result = ModelExporter(format="onnx", optimize_level=9).export(image_bundle, tmp_path / "model.onnx")
    assert result.max_abs_diff <= 1e-5 and result.size_bytes > 0
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["opset"] == 18 and meta["sha256"] == result.sha256 and meta["labels"][0] == "0"
    assert meta["inputs"][0]["shape"][1:] == [1, 8, 8] and isinstance(meta["inputs"][0]["shape"][0], str)  # dynamic batch
    assert drop_initializer_shapes(onnx.load(tmp_path / "model.onnx")) == 0  # no stale weight shapes for quantizers
    session = onnx_session(tmp_path / "model.onnx", optimize_level=0)
    for batch in (1, 7):
        probabilities = onnx_predict(session, np.random.rand(batch, 1, 8, 8).astype(np.float32) * 255)
        assert probabilities.shape == (batch, 10) and np.allclose(probabilities.sum(1), 1, atol=1e-5)


def test_optimize_levels_map_to_onnx_runtime():
    import onnxruntime as ort

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
