"""A ``torch.export`` program (``.pt2``) run the way serving runs an ONNX Runtime session.

:class:`TorchProgramSession` answers ONNX Runtime's ``get_inputs()``, ``get_outputs()`` and
``run(None, {name: batch})``, so the Serve app serves either file the same way. It is what serves on a GPU
where ONNX Runtime has no CUDA provider (the CPU ``onnxruntime`` wheel): the program is moved to the device
with ``torch.export``'s own pass and run under ``torch.inference_mode``; ``precision`` ``fp16``/``bf16`` runs
it under ``torch.autocast`` (matrix products in half precision, reductions and softmax in fp32), so the
exported fp32 file serves at either precision without a second export.

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

    def __init__(self, path: str | Path, device: str = "cpu", precision: str = "fp32", threads: int = 0):
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

    def get_inputs(self) -> list[TensorInfo]:
        return self._inputs

    def get_outputs(self) -> list[TensorInfo]:
        return self._outputs

    def run(self, output_names: list[str] | None, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The program's outputs for ``feed`` (one array by input name), as float32 numpy arrays."""
        inputs = [torch.from_numpy(np.ascontiguousarray(feed[info.name])).to(self.device) for info in self._inputs]
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast is not None),
        ):
            outputs = self.module(*inputs)
        outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        return [output.float().cpu().numpy() for output in outputs]


def _info(program: Any, name: str) -> TensorInfo:
    node = next(node for node in program.graph.nodes if node.name == name)
    value = node.meta["val"]
    shape = [int(d) if isinstance(d, int) else str(d) for d in value.shape]
    return TensorInfo(name, shape, _ORT_TYPES.get(value.dtype, "tensor(float)"))


def serving_session(
    path: str | Path, optimize_level: int = 9, threads: int = 0, gpu: bool = False, precision: str = "fp32"
) -> Any:
    """What serves ``path``: an ONNX Runtime session for ``.onnx`` (its CUDA provider first when ``gpu``), a
    :class:`TorchProgramSession` for a ``.pt2`` program (on ``cuda`` when ``gpu``). ``precision`` other than
    ``fp32`` needs a ``.pt2``: an ONNX file runs as it was exported (``export.quantize`` makes smaller ones).

    >>> serving_session('model.onnx', precision='fp16')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: serve.precision fp16 runs a torch.export program (.pt2, serve.model: torch_export); model.onnx ...
    """
    if Path(path).suffix == ".pt2":
        return TorchProgramSession(path, "cuda" if gpu else "cpu", precision, threads)
    if precision != "fp32":
        raise ValueError(
            f"serve.precision {precision} runs a torch.export program (.pt2, serve.model: torch_export); "
            f"{Path(path).name} is ONNX, which runs as exported"
        )
    from .exporter import onnx_session

    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else None
    return onnx_session(path, optimize_level, threads, providers)
