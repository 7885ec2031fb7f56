"""A ``torch.export`` program (``.pt2``) run the way serving runs an ONNX Runtime session.

:class:`TorchProgramSession` answers ONNX Runtime's ``get_inputs()``, ``get_outputs()`` and
``run(None, {name: batch})``, so the Serve app serves either file the same way. It is what serves on a GPU
where ONNX Runtime has no CUDA provider (the CPU ``onnxruntime`` wheel): the program is moved to the device
with ``torch.export``'s own pass and run under ``torch.inference_mode``; ``precision`` ``fp16``/``bf16`` runs
it under ``torch.autocast`` (matrix products in half precision, reductions and softmax in fp32), so the
exported fp32 file serves at either precision without a second export. On a GPU, ``graph_batches`` > 0
captures the program as CUDA graphs, one per power-of-two batch size up to it, and a batch replays the
smallest graph that holds it (rows past the batch repeat its first row; their outputs are dropped): one
launch instead of one per operator, which is what a small model's batch costs on a fast GPU. The graphs
hold one example shape (``example_shape``, else the ``input_shape`` that export wrote beside the file: token
ids padded to ``max_len``); a batch of another shape, or larger than the largest graph, runs op by op.

>>> import tempfile, os, numpy as np, torch
>>> from deepseek_ray.export import ModelExporter
>>> path = os.path.join(tempfile.mkdtemp(), 'm.pt2')
>>> _ = ModelExporter(format='torch_export').export(torch.nn.Linear(4, 2), path, torch.randn(2, 4))
>>> session = serving_session(path)
>>> session.get_inputs()[0].type, session.get_inputs()[0].shape[1:], session.get_outputs()[0].shape[1:]
('tensor(float)', [4], [2])
>>> session.run(None, {session.get_inputs()[0].name: np.zeros((3, 4), np.float32)})[0].shape
(3, 2)
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

#: ``serve.precision`` → the autocast type (``None``: as exported)
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
_ORT_TYPES = {
    torch.float32: "tensor(float)",
    torch.float16: "tensor(float16)",
    torch.float64: "tensor(double)",
    torch.int64: "tensor(int64)",
    torch.int32: "tensor(int32)",
}


class TensorInfo(NamedTuple):
    """One input or output as ONNX Runtime's ``NodeArg`` describes it: dynamic dims are names."""

    name: str
    shape: list[int | str]
    type: str


class TorchProgramSession:
    """A ``.pt2`` program on ``device`` behind ONNX Runtime's session interface; see the module's example."""

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        precision: str = "fp32",
        threads: int = 0,
        graph_batches: int = 0,
        example_shape: list[int] | None = None,
    ):
        from torch.export.passes import move_to_device_pass

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}: allowed {', '.join(PRECISIONS)}")
        if not Path(path).is_file():
            raise ValueError(f"cannot load torch.export program {path}: no such file")
        program = torch.export.load(str(path))
        self.device = torch.device(device)
        if self.device.type != "cpu":
            program = move_to_device_pass(program, self.device)
        self._inputs = [_info(program, name) for name in program.graph_signature.user_inputs]
        self._outputs = [_info(program, name) for name in program.graph_signature.user_outputs]
        self.module = program.module()
        self.autocast = PRECISIONS[precision]
        if threads and self.device.type == "cpu":  # torch's pool is the process's: a replica owns its process
            torch.set_num_threads(threads)
        self.graphs: _GraphSet | None = None
        if graph_batches and self.device.type == "cuda":
            self.graphs = self._capture(graph_batches, example_shape or _metadata_shape(path))

    def get_inputs(self) -> list[TensorInfo]:
        return self._inputs

    def get_outputs(self) -> list[TensorInfo]:
        return self._outputs

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The program's outputs for ``feed`` (one array by input name), as float32 numpy arrays."""
        inputs = [torch.from_numpy(np.ascontiguousarray(feed[info.name])) for info in self._inputs]
        count = len(inputs[0])
        if self.graphs is not None and self.graphs.holds(inputs[0]):
            outputs = self.graphs.replay(inputs[0])
        else:
            outputs = self._eager(*(tensor.to(self.device) for tensor in inputs))
        return [output[:count].float().cpu().numpy() for output in outputs]

    def _eager(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # autocast's cast cache off: a CUDA graph must record the casts, not reuse tensors cached outside it
        with (
            torch.inference_mode(),
            torch.autocast(
                self.device.type,
                dtype=self.autocast or torch.float32,
                enabled=self.autocast is not None,
                cache_enabled=False,
            ),
        ):
            outputs = self.module(*inputs)
        return tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)

    def _capture(self, largest: int, example_shape: list[int] | None) -> _GraphSet | None:
        """CUDA graphs up to ``largest`` rows, or ``None`` (with a warning) where the program cannot have them."""
        info, known = self._inputs[0], list(example_shape or [])
        dims = [
            dim if isinstance(dim, int) else known[axis] if axis < len(known) else 0
            for axis, dim in enumerate(info.shape[1:])
        ]
        if len(self._inputs) != 1 or 0 in dims:
            why = f"one input of a known example shape (inputs: {[(i.name, i.shape) for i in self._inputs]})"
            warnings.warn(f"CUDA graphs need {why}; serving the program eagerly", stacklevel=3)
            return None
        dtype = {value: key for key, value in _ORT_TYPES.items()}[info.type]
        try:
            return _GraphSet(self._eager, [int(dim) for dim in dims], dtype, self.device, largest)
        except RuntimeError as err:  # an op that cannot be captured (a sync to the CPU, ...)
            warnings.warn(f"the program cannot be captured as a CUDA graph ({err}); serving it eagerly", stacklevel=3)
            return None


class _GraphSet:
    """The program captured as one CUDA graph per power-of-two batch size up to ``largest`` (largest first,
    all in one memory pool), each with its static input and outputs."""

    def __init__(self, forward: Any, shape: list[int], dtype: torch.dtype, device: torch.device, largest: int):
        sizes = [1 << k for k in range(max(1, largest).bit_length())]
        if sizes[-1] < largest:
            sizes.append(largest)
        self.largest, self.shape, self.dtype = sizes[-1], shape, dtype
        pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, tuple[torch.Tensor, ...]]] = {}
        for size in reversed(sizes):
            static = torch.zeros([size, *shape], dtype=dtype, device=device)
            warmup = torch.cuda.Stream()
            warmup.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(warmup):  # kernels chosen and memory allotted before the capture
                for _ in range(2):
                    forward(static)
            torch.cuda.current_stream().wait_stream(warmup)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                outputs = forward(static)
            self._graphs[size] = (graph, static, outputs)
        self._sizes = sorted(self._graphs)

    def holds(self, batch: torch.Tensor) -> bool:
        return len(batch) <= self.largest and list(batch.shape[1:]) == self.shape and batch.dtype == self.dtype

    def replay(self, batch: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs of the smallest graph that holds ``batch`` (on the CPU), valid until the next replay."""
        count = len(batch)
        size = next(size for size in self._sizes if size >= count)
        graph, static, outputs = self._graphs[size]
        static[:count].copy_(batch)
        static[count:].copy_(static[:1].expand_as(static[count:]))
        graph.replay()
        return outputs


def _metadata_shape(path: str | Path) -> list[int] | None:
    """The example shape past the batch that export recorded beside ``path``, if it did."""
    meta = Path(f"{path}.json")
    return json.loads(meta.read_text()).get("input_shape") if meta.is_file() else None


def _info(program: Any, name: str) -> TensorInfo:
    node = next(node for node in program.graph.nodes if node.name == name)
    value = node.meta["val"]
    shape = [int(d) if isinstance(d, int) else str(d) for d in value.shape]
    return TensorInfo(name, shape, _ORT_TYPES.get(value.dtype, "tensor(float)"))


def serving_session(
    path: str | Path,
    optimize_level: int = 9,
    threads: int = 0,
    gpu: bool = False,
    precision: str = "fp32",
    graph_batches: int = 0,
) -> Any:
    """What serves ``path``: an ONNX Runtime session for ``.onnx`` (its CUDA provider first when ``gpu``), a
    :class:`TorchProgramSession` for a ``.pt2`` program (on ``cuda`` when ``gpu``, replaying CUDA graphs up to
    ``graph_batches`` rows when that is > 0). ``precision`` other than ``fp32`` needs a ``.pt2``: an ONNX file
    runs as it was exported (``export.quantize`` makes smaller ones).

    >>> serving_session('model.onnx', precision='fp16')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: serve.precision fp16 runs a torch.export program (.pt2, serve.model: torch_export); model.onnx ...
    """
    if Path(path).suffix == ".pt2":
        return TorchProgramSession(path, "cuda" if gpu else "cpu", precision, threads, graph_batches if gpu else 0)
    if precision != "fp32":
        raise ValueError(
            f"serve.precision {precision} runs a torch.export program (.pt2, serve.model: torch_export); "
            f"{Path(path).name} is ONNX, which runs as exported"
        )
    from .exporter import onnx_session

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else None
    return onnx_session(path, optimize_level, threads, providers)
