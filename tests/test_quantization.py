"""Quantization: int8 dynamic/static and int4 shrink the weights and keep accuracy; QAT exports QDQ ONNX."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from conftest import TinyBert
from deepseek_ray.data import load_dataset
from deepseek_ray.export import ModelExporter, onnx_predict, onnx_session, read_metadata
from deepseek_ray.models import InferenceModel
from deepseek_ray.optim import MixedPrecisionTrainer
from deepseek_ray.quantization import QATConfig, compare_weights, fake_quantize, linear_as_matmul, quantize


def accuracy(path, data) -> float:
    probabilities = onnx_predict(onnx_session(path), data.raw("test").numpy())
    return float((probabilities.argmax(1) == data.test.y.numpy()).mean())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small conv net trained for a few seconds on scikit-learn's 8×8 digits, exported to ONNX."""
    data = load_dataset("digits", seed=0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(16 * 16, 128), nn.ReLU(), nn.Linear(128, 10))
    MixedPrecisionTrainer(model=net, lr=3e-3, per_device_train_batch_size=64).fit(data.train, data.val, epochs=6)
    model = InferenceModel(net, data.preprocessing).eval()
    path = tmp_path_factory.mktemp("digits") / "model.onnx"
    ModelExporter(optimize_level=7).export(model, path, data.raw("test")[:2], metadata={"labels": data.labels})
    return SimpleNamespace(data=data, net=net, model=model, path=path, accuracy=accuracy(path, data))


def test_int8_dynamic_quantizes_linear_layers_and_keeps_accuracy(digits):
    result = quantize(digits.path, method="int8_dynamic")
    assert set(result.weights) == {"network.4.weight", "network.6.weight"}  # convolutions stay fp32 (documented)
    assert result.covered_ratio <= 0.3 and result.size_ratio < 0.5
    assert accuracy(result.path, digits.data) >= digits.accuracy - 0.02
    meta = read_metadata(result.path)
    assert meta["quantization"] == {"type": "int8_dynamic"} and meta["labels"] == digits.data.labels


def test_int8_static_calibrates_every_layer_and_keeps_accuracy(digits, tmp_path):
    result = quantize(digits.path, tmp_path / "static.onnx", method="int8_static",
                      calibration=digits.data.raw("train"), calibration_samples=128)
    assert {"network.0.weight", "network.4.weight", "network.6.weight"} <= set(result.weights)
    assert result.float_weight_bytes == 0 and result.covered_ratio <= 0.3
    ops = {node.op_type for node in onnx.load(result.path).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert accuracy(result.path, digits.data) >= digits.accuracy - 0.02
    assert read_metadata(result.path)["quantization"]["calibration_samples"] == 128


def test_static_int8_keeps_a_forecasters_level_path_float_on_a_trending_series(tmp_path):
    from deepseek_ray.models.builders import TCN

    torch.manual_seed(0)
    model = TCN(in_channels=1, out_features=1, channels=8, levels=2).eval()  # window-relative: x - last, + last
    steps = torch.arange(40.0)
    windows = lambda start: torch.stack([(start + i + steps) + torch.sin(steps + i) for i in range(64)]).unsqueeze(1)  # noqa: E731
    calibration, later = windows(0.0), windows(300.0)  # the test series has trended far past the calibration range
    ModelExporter(optimize_level=7).export(model, tmp_path / "tcn.onnx", calibration[:2])
    with torch.no_grad():
        expected = model(later).numpy()
    errors = {}
    for recipe in ("auto", "full"):
        result = quantize(tmp_path / "tcn.onnx", tmp_path / f"{recipe}.onnx", method="int8_static", calibration=calibration,
                          calibration_samples=64, recipe=recipe)
        errors[recipe] = np.abs(onnx_predict(onnx_session(result.path), later.numpy()) - expected).max()
        quantized = {name for name in result.weights if name.endswith("weight")}
        assert result.float_weight_bytes == 0 and len(quantized) == 6  # 4 convolutions, the 1×1 skip, the head
    assert read_metadata(tmp_path / "auto.onnx")["quantization"]["recipe"] == "compute"
    assert errors["auto"] < 1.0 < 100.0 < errors["full"]  # full clamps the restored level to the calibration range


def test_int4_reaches_linear_layers_through_matmul(digits, tmp_path):
    result = quantize(digits.path, tmp_path / "int4.onnx", method="int4", block_size=32)
    ops = [node.op_type for node in onnx.load(result.path).graph.node]
    assert ops.count("MatMulNBits") == 2 and "Gemm" not in ops
    assert set(result.weights) == {"network.4.weight", "network.6.weight"}
    # 4 bits + one fp32 scale per 32 weights = 5 bits per weight, i.e. 5/32 of fp32
    assert result.covered_ratio == pytest.approx(5 / 32, abs=0.005)
    assert accuracy(result.path, digits.data) >= digits.accuracy - 0.03


def test_int4_covers_embedding_gather(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(512, 64), nn.Flatten(), nn.Linear(64 * 4, 3)).eval()
    ids = torch.randint(0, 512, (8, 4))
    ModelExporter(optimize_level=7, sequence_axis=None, dynamic_batch=True).export(model, tmp_path / "m.onnx", ids)
    result = quantize(tmp_path / "m.onnx", method="int4", block_size=64)
    ops = {node.op_type for node in onnx.load(result.path).graph.node}
    assert {"GatherBlockQuantized", "MatMulNBits"} <= ops
    assert result.covered_ratio == pytest.approx((4 + 32 / 64) / 32, abs=0.003)  # 4 bits + an fp32 scale per 64
    assert result.size_ratio <= 0.16
    got, expected = onnx_predict(onnx_session(result.path), ids.numpy()), model(ids).detach().numpy()
    assert np.abs(got - expected).max() < 0.2 * np.abs(expected).max()  # 16 levels per block: close, not exact


def test_qat_trains_exports_qdq_and_matches_onnx_runtime(digits, tmp_path):
    qat = QATConfig(bits=8, activation_range=6.0)
    net, history = qat.train(digits.net, digits.data.train, digits.data.val, epochs=1, lr=1e-4, per_device_train_batch_size=64)
    model = InferenceModel(net, digits.data.preprocessing).eval()
    result = qat.export(model, tmp_path / "qat.onnx", digits.data.raw("test")[:2])
    graph = onnx.load(result.path).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("QuantizeLinear") == 3 and ops.count("DequantizeLinear") == 6  # 3 activations, 3 weights
    int8 = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8 and len(t.dims) >= 2}
    assert int8 == {"network.0.layer.weight_quantized", "network.4.layer.weight_quantized", "network.6.layer.weight_quantized"}
    raw = digits.data.raw("test")
    with torch.no_grad():
        expected = model(raw).numpy()
    got = onnx_predict(onnx_session(result.path), raw.numpy())
    # the same integer arithmetic; a value exactly between two levels may round the other way in ONNX Runtime
    assert np.abs(got - expected).max() < 1e-2 and (got.argmax(1) == expected.argmax(1)).all()
    assert accuracy(result.path, digits.data) >= digits.accuracy - 0.02
    assert read_metadata(result.path)["quantization"] == {"type": "qat", "bits": 8, "activation_range": 6.0}


def test_qat_calibrates_activation_ranges_and_quantizes_the_tcn_strided_path(tmp_path):
    from deepseek_ray.models.builders import TCN

    torch.manual_seed(0)
    tcn = TCN(in_channels=1, out_features=1, channels=8, levels=2).eval()
    windows = torch.randn(64, 1, 20) * 0.5  # longer than the receptive field (13): the strided path
    qat = QATConfig(bits=8, activation_range=6.0)
    prepared = qat.calibrate(qat.prepare(tcn), [(windows, None)])
    first = prepared.blocks[0].conv1
    # the range is the largest |input| seen (the window minus its last value), not the 6.0 ceiling
    assert float(first.input_scale) * 127 == pytest.approx(float((windows - windows[:, :, -1:]).abs().max()), rel=1e-5)
    result = qat.export(prepared, tmp_path / "tcn_qat.onnx", windows[:2])
    ops = [node.op_type for node in onnx.load(result.path).graph.node]
    assert ops.count("QuantizeLinear") == 6  # 4 dilated convolutions, the first block's 1×1 skip, the head
    with torch.no_grad():
        expected = prepared(windows).numpy()
    assert np.abs(onnx_predict(onnx_session(result.path), windows.numpy()) - expected).max() < 1e-2


def test_fake_quantize_clamps_and_passes_gradients_straight_through():
    x = torch.tensor([0.3, -0.3, 10.0, -10.0], requires_grad=True)
    y = fake_quantize(x, torch.tensor(6.0 / 127), -1, 8)
    assert y[2].item() == pytest.approx(6.0) and y[3].item() == pytest.approx(-128 * 6.0 / 127)
    y.sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0]  # inside the range: identity; outside: clamped, no gradient


def test_linear_as_matmul_keeps_the_output(tmp_path):
    model = nn.Linear(6, 4).eval()
    ModelExporter(optimize_level=0).export(model, tmp_path / "m.onnx", torch.randn(2, 6))
    rewritten = linear_as_matmul(onnx.load(tmp_path / "m.onnx"))
    assert [node.op_type for node in rewritten.graph.node] == ["MatMul", "Add"]
    onnx.save(rewritten, tmp_path / "r.onnx")
    x = np.random.rand(3, 6).astype(np.float32)
    assert np.allclose(onnx_predict(onnx_session(tmp_path / "r.onnx"), x), model(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


def test_compare_weights_matches_replacements_by_name():
    before = {"w.1": ("float32", 400), "w.10": ("float32", 800), "bias": ("float32", 8)}
    after = {"w.1_quantized": ("int8", 100), "w.10_quantized": ("int8", 200), "w.10_scale": ("float32", 4), "bias": ("float32", 8)}
    assert compare_weights(before, after) == {"w.1": (400, 100), "w.10": (800, 204)}


def test_bad_inputs_give_clear_errors(digits, tmp_path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(digits.path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="cannot quantize .*truncated.onnx: not a valid ONNX model"):
        quantize(truncated, method="int8_dynamic")
    with pytest.raises(ValueError, match="allowed: int8_dynamic, int8_static, int4"):
        quantize(digits.path, method="int2")
    with pytest.raises(ValueError, match="int8_static needs calibration data"):
        quantize(digits.path, method="int8_static")
    with pytest.raises(ValueError, match=r"shape \[1, 1, 28, 28\] does not fit"):
        quantize(digits.path, method="int8_static", calibration=np.zeros((4, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="bits must be 2–8"):
        QATConfig(bits=16)
    with pytest.raises(ValueError, match="no fake-quantized layers"):
        QATConfig().export(digits.model, tmp_path / "plain.onnx", digits.data.raw("test")[:2])


def test_static_int8_uses_the_transformer_recipe_on_attention_graphs(tmp_path):
    from deepseek_ray.quantization import gelu_fed_matmuls, is_transformer

    torch.manual_seed(0)
    model = TinyBert().eval()
    ids = torch.randint(1, 300, (64, 12), generator=torch.Generator().manual_seed(1))
    ids[::3, 8:] = 0  # padding
    ModelExporter(optimize_level=7).export(model, tmp_path / "bert.onnx", ids[:2])
    graph = onnx.load(tmp_path / "bert.onnx")
    assert is_transformer(graph) and len(gelu_fed_matmuls(graph)) == 2  # one feed-forward down-projection per layer
    result = quantize(tmp_path / "bert.onnx", method="int8_static", calibration=ids, calibration_samples=48)
    import onnxruntime

    recipe = read_metadata(result.path)["quantization"]["recipe"]
    # ONNX Runtime 1.30 cannot load some mixed static/dynamic graphs: then all MatMuls are static (documented)
    modern = tuple(int(part) for part in onnxruntime.__version__.split(".")[:2]) >= (1, 32)
    assert recipe == "transformer" if modern else recipe in ("transformer", "transformer-static")
    nodes = onnx.load(result.path).graph.node
    ops = [node.op_type for node in nodes]
    dynamic = 2 if recipe == "transformer" else 0  # the GELU-fed MatMuls
    assert ops.count("MatMulInteger") == dynamic and ops.count("DynamicQuantizeLinear") == dynamic
    feeds = {name: node.op_type for node in nodes for name in node.input}
    assert not any(feeds.get(node.output[0]) in ("LayerNormalization", "Erf")
                   for node in nodes if node.op_type == "DequantizeLinear")  # LayerNorm and GELU inputs stay float
    assert "head.weight" in result.weights and result.size_ratio < 0.5  # the head Gemm and the embeddings too
    with torch.no_grad():
        expected = model(ids).numpy()
    assert np.abs(onnx_predict(onnx_session(result.path), ids.numpy()) - expected).max() < 0.05
    full = quantize(tmp_path / "bert.onnx", tmp_path / "full.onnx", method="int8_static", calibration=ids,
                    calibration_samples=48, recipe="full")
    assert read_metadata(full.path)["quantization"]["recipe"] == "full"
    full_ops = [node.op_type for node in onnx.load(full.path).graph.node]
    assert "MatMulInteger" not in full_ops and full_ops.count("QuantizeLinear") > ops.count("QuantizeLinear")
    with pytest.raises(ValueError, match="recipe: unknown 'bert'; allowed: auto, compute, full, transformer"):
        quantize(tmp_path / "bert.onnx", method="int8_static", calibration=ids, recipe="bert")


def test_stale_weight_shapes_do_not_break_quantization(digits, tmp_path):
    """The dynamo exporter recorded each weight's shape in value_info; ONNX Runtime 1.30's dynamic quantizer
    transposes Gemm weights and then failed shape inference on the stale record ((384) vs (2))."""
    from onnx import helper

    model = onnx.load(digits.path)
    weights = [t for t in model.graph.initializer if t.name in ("network.4.weight", "network.6.weight")]
    assert weights and not {info.name for info in model.graph.value_info} & {t.name for t in weights}  # exports are clean
    model.graph.value_info.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in weights)
    stale = tmp_path / "stale.onnx"
    onnx.save(model, stale)
    result = quantize(stale, method="int8_dynamic")
    assert set(result.weights) == {"network.4.weight", "network.6.weight"}
    assert accuracy(result.path, digits.data) >= digits.accuracy - 0.02
