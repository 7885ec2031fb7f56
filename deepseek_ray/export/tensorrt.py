"""TensorRT: a real engine when the ``tensorrt`` package imports, else ONNX Runtime's GPU providers.

Order of preference, decided by :func:`tensorrt_backend`:

1. ``tensorrt`` imports: the ONNX export is parsed and built into a serialized engine (fp16; int8 too
   at ``optimize_level`` ≥ 8 when the graph carries QuantizeLinear/DequantizeLinear, i.e. a QAT or
   static-PTQ model, which TensorRT quantizes explicitly).
2. ONNX Runtime has ``TensorrtExecutionProvider`` or ``CUDAExecutionProvider`` (onnxruntime-gpu): the file
   is the ONNX model, and its metadata names the provider that sessions load it with.
3. Neither: a ``RuntimeError`` that names what is missing. Nothing is pretended.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
MAX_BATCH, MAX_SEQUENCE = 64, 512  # upper bounds of the engine's dynamic axes


def tensorrt_backend() -> str:
    """``'tensorrt'`` when the package imports, else the first ONNX Runtime GPU provider; else an error.

    >>> try:  # 'tensorrt' or a provider on an NVIDIA machine; elsewhere the error names the way out
    ...     backend = tensorrt_backend()
    ... except RuntimeError as err:
    ...     backend = "export with format='onnx'" if "format='onnx'" in str(err) else str(err)
    >>> backend in ("tensorrt", *GPU_PROVIDERS, "export with format='onnx'")
    True
    """
    try:
        import tensorrt  # noqa: F401

        return "tensorrt"
    except ImportError as err:
        missing = f"{type(err).__name__}: {err}"
    import onnxruntime as ort

    available = ort.get_available_providers()
    for provider in GPU_PROVIDERS:
        if provider in available:
            return provider
    raise RuntimeError(
        f"format 'tensorrt' needs the `tensorrt` package ({missing}) or onnxruntime-gpu with "
        f"{' or '.join(GPU_PROVIDERS)} (this onnxruntime has {available}). Install `tensorrt` on an NVIDIA GPU "
        f"machine (pip install 'deepseek-ray[tensorrt]'), or export with format='onnx'."
    )


def build_engine(
    onnx_path: Path, engine_path: Path, example: torch.Tensor, axes: dict[int, str], level: int
) -> dict[str, Any]:
    """Parse ``onnx_path`` with TensorRT and write a serialized engine to ``engine_path``."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ValueError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    int8 = level >= 8 and _has_qdq(onnx_path)
    if int8:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    shape = list(example.shape)
    low = [1 if axis in axes else size for axis, size in enumerate(shape)]
    high = [
        (MAX_BATCH if axes[axis] == "batch" else MAX_SEQUENCE) if axis in axes else size
        for axis, size in enumerate(shape)
    ]
    profile.set_shape(network.get_input(0).name, low, shape, high)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path} (see the TensorRT log above)")
    engine_path.write_bytes(bytes(engine))
    return {
        "engine": "tensorrt",
        "tensorrt_version": trt.__version__,
        "precision": "int8+fp16" if int8 else "fp16",
        "onnx_path": str(onnx_path),
    }


def engine_runner(engine_path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Run a serialized engine on CUDA through torch's memory and stream."""
    import tensorrt as trt

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(Path(engine_path).read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    source = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    target = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)

    def run(batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch)).cuda()
        context.set_input_shape(source, tuple(x.shape))
        out = torch.empty(tuple(context.get_tensor_shape(target)), dtype=torch.float32, device="cuda")
        context.set_tensor_address(source, x.data_ptr())
        context.set_tensor_address(target, out.data_ptr())
        stream = torch.cuda.current_stream()
        context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return out.cpu().numpy()

    return run


def _has_qdq(onnx_path: Path) -> bool:
    import onnx

    return any(
        node.op_type == "QuantizeLinear" for node in onnx.load(str(onnx_path), load_external_data=False).graph.node
    )
