"""Post-training quantization of an exported ONNX model with ``onnxruntime.quantization``.

==============  ==============================================================================================
method          what ONNX Runtime does
==============  ==============================================================================================
int8_dynamic    int8 weights (per channel) of MatMul/Gemm/Attention/LSTM/GRU/Gather; activations quantized on
                the fly. Convolutions stay fp32: ONNX Runtime's CPU ``ConvInteger`` has no int8-weight kernel.
int8_static     QDQ model: int8 weights (per channel) and uint8 activations whose ranges come from
                calibration data (MinMax, entropy or percentile), after ``quant_pre_process``.
int4            weight-only, 4 bits per weight plus one fp32 scale per ``block_size`` block
                (``MatMulNBits`` for MatMul, ``GatherBlockQuantized`` for embeddings). Linear layers that
                the exporter wrote as ``Gemm`` are rewritten as MatMul + Add first so the quantizer reaches them.
==============  ==============================================================================================

Attention blocks fused at ``optimize_level`` ≥ 8 hold their Q/K/V weights in an ``Attention`` node, which
``int4`` (and ``int8_static``) cannot reach; quantize an export made at level ≤ 7 for full coverage.
:attr:`QuantizeResult.float_weight_bytes` shows what stayed fp32.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..export import input_dtype, onnx_predict, onnx_session, read_metadata, sha256_of

METHODS = ("int8_dynamic", "int8_static", "int4")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DYNAMIC_OP_TYPES = ["MatMul", "Gemm", "Attention", "LSTM", "GRU", "Gather", "EmbedLayerNormalization"]


@dataclass
class QuantizeResult:
    """A quantized model and how its weights shrank."""

    path: str
    method: str
    size_bytes: int
    fp32_size_bytes: int
    metadata_path: str
    #: fp32 weight name → (bytes in fp32, bytes now: quantized values + scales + zero points)
    weights: dict[str, tuple[int, int]] = field(default_factory=dict)
    float_weight_bytes: int = 0  # fp32 weights left unquantized

    @property
    def size_ratio(self) -> float:
        """File size relative to the fp32 model."""
        return self.size_bytes / self.fp32_size_bytes

    @property
    def covered_ratio(self) -> float:
        """Bytes of the quantized weights relative to the same weights in fp32."""
        before = sum(b for b, _ in self.weights.values())
        return sum(a for _, a in self.weights.values()) / before if before else float("nan")


def quantize(
    model_path: str | Path, output_path: str | Path | None = None, method: str = "int8_dynamic",
    calibration: Any = None, *, calibration_samples: int = 256, calibration_method: str = "minmax",
    block_size: int = 128, per_channel: bool = True,
) -> QuantizeResult:
    """Quantize the ONNX model at ``model_path`` with ``method`` (``int8_dynamic``, ``int8_static``, ``int4``).

    ``calibration`` (``int8_static`` only): raw model inputs (array or tensor), of which the first
    ``calibration_samples`` set the activation ranges. The result is written to ``output_path``
    (default: ``model.<method>.onnx`` beside the source) with a metadata file like the exporter's.

    >>> import tempfile, os, torch
    >>> from deepseek_ray.export import ModelExporter
    >>> folder = tempfile.mkdtemp()
    >>> _ = ModelExporter().export(torch.nn.Linear(64, 8), os.path.join(folder, 'm.onnx'), torch.randn(2, 64))
    >>> result = quantize(os.path.join(folder, 'm.onnx'), method='int8_dynamic')
    >>> round(result.covered_ratio, 2)     # 1 byte per weight + a scale and zero point per channel
    0.27
    """
    if method not in METHODS:
        raise ValueError(f"quantize method: unknown {method!r}; allowed: {', '.join(METHODS)}")
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration_method: unknown {calibration_method!r}; allowed: {', '.join(CALIBRATION_METHODS)}")
    source = Path(model_path)
    model = _load(source)
    output = Path(output_path or source.with_name(f"{source.stem}.{method}{source.suffix}"))
    if method == "int8_dynamic":
        _int8_dynamic(source, output, per_channel)
    elif method == "int8_static":
        _int8_static(source, output, _calibration(source, calibration, calibration_samples), calibration_method, per_channel)
    else:
        _int4(model, output, block_size)
    settings = {"type": method, "block_size": block_size} if method == "int4" else {"type": method}
    if method == "int8_static":
        settings.update(calibration_samples=calibration_samples, calibration_method=calibration_method)
    before, after = weight_bytes(source), weight_bytes(output)
    return QuantizeResult(
        str(output), method, output.stat().st_size, source.stat().st_size, str(_write_metadata(source, output, settings)),
        weights=compare_weights(before, after), float_weight_bytes=_float_bytes(output),
    )


def _load(path: Path) -> Any:
    import onnx

    if not path.is_file():
        raise ValueError(f"cannot quantize {path}: no such file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as err:  # protobuf's DecodeError, onnx's ValidationError
        raise ValueError(f"cannot quantize {path}: not a valid ONNX model ({str(err).splitlines()[0][:200]})") from None
    return model


def _int8_dynamic(source: Path, output: Path, per_channel: bool) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(source, output, op_types_to_quantize=DYNAMIC_OP_TYPES, per_channel=per_channel,
                     weight_type=QuantType.QInt8)


class ArrayCalibrationReader:
    """Feeds calibration examples to ONNX Runtime's calibrator in batches (a ``CalibrationDataReader``).

    >>> reader = ArrayCalibrationReader('input', np.zeros((5, 3), np.float32), batch_size=2)
    >>> [batch['input'].shape[0] for batch in iter(reader.get_next, None)]
    [2, 2, 1]
    """

    def __init__(self, input_name: str, examples: np.ndarray, batch_size: int = 32):
        self.batches: Iterator[dict[str, np.ndarray]] = iter(
            {input_name: examples[start : start + batch_size]} for start in range(0, len(examples), batch_size)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.batches, None)


def _calibration(source: Path, examples: Any, samples: int) -> ArrayCalibrationReader:
    """Checked calibration data: a wrong shape is reported here, not deep inside the calibrator."""
    if examples is None:
        raise ValueError("int8_static needs calibration data: quantize(..., calibration=inputs), e.g. training examples")
    examples = np.asarray(examples)[:samples]
    session = onnx_session(source, optimize_level=0)
    onnx_predict(session, examples[:1])  # raises a clear ValueError on a shape mismatch
    return ArrayCalibrationReader(session.get_inputs()[0].name, examples.astype(input_dtype(session)))


def _int8_static(source: Path, output: Path, reader: ArrayCalibrationReader, method: str, per_channel: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(source), str(prepared), auto_merge=True)
        except Exception:  # symbolic shape inference gives up on some dynamic-sequence graphs; ONNX's own suffices
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(prepared, output, reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, calibrate_method=calibrate)


def _int4(model: Any, output: Path, block_size: int) -> None:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(linear_as_matmul(model), bits=4, block_size=block_size, is_symmetric=True,
                                     op_types_to_quantize=("MatMul", "Gather"), quant_axes=(("MatMul", 0), ("Gather", 1)))
    quantizer.process()
    quantizer.model.save_model_to_file(str(output), use_external_data_format=False)


def linear_as_matmul(model: Any) -> Any:
    """Rewrite ``Gemm`` nodes with a constant weight (the exporter's ``nn.Linear``) as ``MatMul`` + ``Add``.

    The weight keeps its name (transposed when ``transB``), so size reports still find it.

    >>> from onnx import helper, numpy_helper, TensorProto
    >>> gemm = helper.make_node('Gemm', ['x', 'w', 'b'], ['y'], transB=1)
    >>> graph = helper.make_graph([gemm], 'g', [helper.make_tensor_value_info('x', TensorProto.FLOAT, [1, 3])],
    ...     [helper.make_tensor_value_info('y', TensorProto.FLOAT, [1, 2])],
    ...     [numpy_helper.from_array(np.ones((2, 3), np.float32), 'w'), numpy_helper.from_array(np.zeros(2, np.float32), 'b')])
    >>> [node.op_type for node in linear_as_matmul(helper.make_model(graph)).graph.node]
    ['MatMul', 'Add']
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    uses: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten = []
    for node in graph.node:
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attributes.get("alpha", 1.0) == 1.0 and attributes.get("beta", 1.0) == 1.0 and not attributes.get("transA", 0)
        weight = node.input[1] if node.op_type == "Gemm" else None
        if weight not in constants or uses[weight] > 1 or not plain:
            rewritten.append(node)
            continue
        if attributes.get("transB", 0):
            constants[weight].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(constants[weight]).T), weight))
        product = node.output[0] if len(node.input) < 3 else f"{node.output[0]}_matmul"
        rewritten.append(helper.make_node("MatMul", [node.input[0], weight], [product], name=f"{node.name}_matmul"))
        if len(node.input) == 3:
            rewritten.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_bias"))
    del graph.node[:]
    graph.node.extend(rewritten)
    return model


def weight_bytes(model_path: str | Path) -> dict[str, tuple[str, int]]:
    """Every initializer of an ONNX model: name → (element type, bytes); int4 counts half a byte.

    >>> weight_bytes('runs/mnist-quickstart/export/model.onnx')  # doctest: +SKIP
    {'network.stem.0.weight': ('float32', 1152), ...}
    """
    import onnx
    from onnx import helper

    packed = {onnx.TensorProto.INT4, onnx.TensorProto.UINT4}  # two values per byte
    sizes = {}
    for tensor in onnx.load(str(model_path)).graph.initializer:
        count = int(np.prod(tensor.dims, dtype=np.int64))
        if tensor.data_type in packed:
            sizes[tensor.name] = ("int4", (count + 1) // 2)
        else:
            numpy_type = helper.tensor_dtype_to_np_dtype(tensor.data_type)
            sizes[tensor.name] = (str(numpy_type), count * numpy_type.itemsize)
    return sizes


def compare_weights(before: dict[str, tuple[str, int]], after: dict[str, tuple[str, int]]) -> dict[str, tuple[int, int]]:
    """For each fp32 weight the quantizer replaced: (fp32 bytes, bytes of what replaced it).

    ONNX Runtime names the replacements after the weight (``W_quantized``, ``W_scale``, ``W_Q4``, ``W_scales`` …).

    >>> compare_weights({'w': ('float32', 400)}, {'w_quantized': ('int8', 100), 'w_scale': ('float32', 4)})
    {'w': (400, 104)}
    """
    new = {name: size for name, (_, size) in after.items() if name not in before}
    replaced = sorted((name for name, (kind, _) in before.items() if kind == "float32" and name not in after),
                      key=len, reverse=True)  # longest first, so 'w.1' does not claim what belongs to 'w.10'
    report = {}
    for name in replaced:
        parts = [other for other in new if other.startswith(f"{name}_")]
        report[name] = (before[name][1], sum(new.pop(other) for other in parts))
    return dict(sorted(report.items()))


def _float_bytes(model_path: Path, smallest: int = 1024) -> int:
    return sum(size for kind, size in weight_bytes(model_path).values() if kind == "float32" and size >= smallest)


def _write_metadata(source: Path, output: Path, settings: dict[str, Any]) -> Path:
    try:
        meta = read_metadata(source)
    except FileNotFoundError:
        meta = {}
    meta.pop("max_abs_diff", None)  # measured for the fp32 model only
    meta.update(quantization=settings, source_sha256=sha256_of(source), sha256=sha256_of(output),
                size_bytes=output.stat().st_size)
    path = Path(str(output) + ".json")
    path.write_text(json.dumps(meta, indent=2, default=str))
    return path


__all__ = ["ArrayCalibrationReader", "CALIBRATION_METHODS", "METHODS", "QuantizeResult", "compare_weights",
           "linear_as_matmul", "quantize", "weight_bytes"]
