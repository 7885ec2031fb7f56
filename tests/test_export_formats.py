"""Export formats beyond plain ONNX: torch.export, TensorRT's honest error, transformer fusions, parity bounds."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import TinyBert
from test_export import PARITY, bundle_outputs, digit_scans, ort_outputs
from torch import nn

from deepseek_ray.export import ModelExporter, onnx_predict, onnx_session, read_metadata, tensorrt_backend


def test_torch_export_writes_a_program_that_matches_torch(image_bundle, tmp_path):
    path = tmp_path / "model.pt2"
    result = ModelExporter(format="torch_export").export(image_bundle, path)
    program = torch.export.load(str(path)).module()
    x = digit_scans()  # 179 scans where the export traced 2: the batch axis is dynamic
    with torch.no_grad():
        outputs = program(x).numpy()
    assert result.format == "torch_export" and outputs.shape == (179, 10)
    assert np.abs(outputs - bundle_outputs(image_bundle, x)).max() < PARITY / 10  # the same kernels as torch
    meta = read_metadata(path)
    assert meta["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert meta["labels"][3] == "3" and meta["preprocessing"]["mean"] == 40.0
    assert meta["sha256"] == result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (run on the GPU host)")
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_graphs_replay_what_the_program_computes_eagerly(image_bundle, tmp_path, precision):
    """Each batch size replays the smallest captured graph that holds it (padded rows dropped), with the eager
    program's outputs; past the largest graph the program runs eagerly."""
    from deepseek_ray.export import serving_session

    path = tmp_path / "model.pt2"
    ModelExporter(format="torch_export").export(image_bundle, path)
    eager = serving_session(path, gpu=True, precision=precision)
    graphed = serving_session(path, gpu=True, precision=precision, graph_batches=24)
    assert eager.graphs is None and graphed.graphs is not None and graphed.graphs.largest == 24
    scans = digit_scans().numpy()
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    for count in (1, 3, 8, 17, 24, 40, 3):  # 17: the 24-row graph; 40: eager; 3 again over rows left behind
        batch = scans[:count]
        feed = {eager.get_inputs()[0].name: batch}
        (want,), (got,) = eager.run(None, feed), graphed.run(None, feed)
        assert got.shape == (count, 10) and np.abs(got - want).max() < tolerance, count
    text = tmp_path / "text.pt2"
    ModelExporter(format="torch_export").export(TinyBert().eval(), text, torch.randint(1, 300, (2, 16)))
    ids = np.random.default_rng(0).integers(1, 300, (5, 16))
    ids[:, 9:] = 0  # padding
    eager, graphed = (serving_session(text, gpu=True, precision=precision, graph_batches=n) for n in (0, 8))
    assert graphed.graphs is not None  # the dynamic sequence axis captured at the export's example length
    feed = {eager.get_inputs()[0].name: ids}
    assert np.abs(graphed.run(None, feed)[0] - eager.run(None, feed)[0]).max() < tolerance


def test_tensorrt_without_tensorrt_names_what_is_missing(image_bundle, tmp_path):
    try:
        backend = tensorrt_backend()
    except RuntimeError:
        backend = None
    if backend is not None:
        pytest.skip(f"this machine has {backend}: the error path cannot be reached")
    with pytest.raises(
        RuntimeError, match=r"needs the `tensorrt` package .* TensorrtExecutionProvider or CUDAExecutionProvider"
    ):
        ModelExporter(format="tensorrt").export(image_bundle, tmp_path / "model.engine")
    assert not (tmp_path / "model.engine").exists()  # nothing pretended


def test_transformer_fusions_at_level_9_with_dynamic_batch_and_sequence(tmp_path):
    torch.manual_seed(0)
    model = TinyBert(vocab_size=500, hidden_size=64, classes=3).eval()
    ids = torch.randint(1, 500, (2, 16))
    plain = ModelExporter(optimize_level=7).export(model, tmp_path / "plain.onnx", ids)
    fused = ModelExporter(optimize_level=9).export(model, tmp_path / "fused.onnx", ids)
    meta = read_metadata(fused.path)
    assert meta["fusions"]["attention"] == 2 and meta["fusions"]["skip_layer_normalization"] == 4
    assert "fusions" not in read_metadata(plain.path)
    assert meta["inputs"] == [{"name": "input", "shape": ["batch", "sequence"], "dtype": "int64"}]
    session = onnx_session(fused.path)
    for batch, length in ((1, 8), (5, 40)):
        x = torch.randint(1, 500, (batch, length))
        x[:, length - 3 :] = 0  # padding, masked out by the attention
        with torch.no_grad():
            assert np.abs(onnx_predict(session, x.numpy()) - model(x).numpy()).max() < 1e-5


class Noisy(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


def test_parity_beyond_tolerance_is_an_error(tmp_path):
    with pytest.raises(
        ValueError, match=r"onnx export of Noisy differs from torch by .* over 4 inputs \(bound 0.001\)"
    ):
        ModelExporter().export(Noisy(), tmp_path / "noisy.onnx", torch.zeros(4, 3))


def test_parity_runs_over_every_input_given_in_one_pass(tmp_path):
    """The exporter checks the inputs it is given (not only the tracing example) and hands back both models'
    outputs on them; a classifier must also give identical classes."""
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Softmax(-1))
    inputs = torch.randn(300, 3, generator=torch.Generator().manual_seed(0))
    exporter = ModelExporter(task="classification")
    result = exporter.export(model, tmp_path / "m.onnx", example_input=inputs[:2], parity_inputs=inputs)
    assert result.outputs.shape == result.expected.shape == (300, 4)
    assert np.array_equal(result.outputs, onnx_predict(onnx_session(tmp_path / "m.onnx"), inputs.numpy()))
    with torch.no_grad():
        assert np.allclose(result.expected, model(inputs).numpy())
    swapped = result.outputs[:, ::-1]
    with pytest.raises(ValueError, match="classes identical: False"):
        ModelExporter(task="classification", parity_tolerance=1.0).check_parity(result.expected, swapped)


def test_bundle_example_is_drawn_like_its_data(image_bundle, tmp_path):
    """Without an example, the exporter draws two from the bundle's scaling (mean 40, std 30, seed 0) and
    records its parity on them: both models are run again here on examples drawn the same way."""
    result = ModelExporter(optimize_level=0).export(image_bundle, tmp_path / "model.onnx")
    meta = json.loads((tmp_path / "model.onnx.json").read_text())
    assert meta["example_shape"] == [2, 1, 8, 8]
    assert meta["opset"] == 18 and meta["optimize_level"] == 0 and meta["architecture"] == "c8|conv5x5|identity"
    example = 40.0 + 30.0 * torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = bundle_outputs(image_bundle, example)
    outputs = ort_outputs(tmp_path / "model.onnx", example, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    # Other examples would move these probabilities by 1e-2 or more; the recorded parity differs from ours by 0.
    np.testing.assert_allclose(result.expected, expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.outputs, outputs, rtol=0, atol=1e-6)
    measured = float(np.abs(outputs - expected).max())
    assert measured < PARITY and meta["max_abs_diff"] == pytest.approx(measured, rel=1e-6, abs=1e-12)


def test_export_config_lists_formats_and_quantization():
    from pydantic import ValidationError

    from deepseek_ray.config.schema import ExportConfig

    config = ExportConfig(
        formats=["onnx", "torch_export", "tensorrt"],
        quantize=[{"type": "int8_dynamic"}, {"type": "int8_static", "calibration_samples": 256}, {"type": "int4"}],
    )
    assert [item.type for item in config.quantize] == ["int8_dynamic", "int8_static", "int4"]
    assert config.quantize[1].calibration_samples == 256 and config.quantize[2].block_size == 128
    with pytest.raises(ValidationError, match="'int8_dynamic', 'int8_static', 'int4'"):
        ExportConfig(quantize=[{"type": "int3"}])
    with pytest.raises(ValidationError, match="block_size must be one of 16, 32, 64, 128, 256"):
        ExportConfig(quantize=[{"type": "int4", "block_size": 100}])
    with pytest.raises(ValidationError, match="add onnx to formats"):
        ExportConfig(formats=["torch_export"], quantize=[{"type": "int4"}])
    with pytest.raises(ValidationError, match="onnx', 'torch_export' or 'tensorrt'"):
        ExportConfig(formats=["pickle"])
