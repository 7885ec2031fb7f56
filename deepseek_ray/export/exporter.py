"""Export, checked: ``onnx.checker``, ONNX Runtime (or torch) parity on real inputs, and a metadata file.

Formats: ``onnx`` (``torch.onnx`` dynamo export), ``torch_export`` (a ``torch.export`` program, ``.pt2``, the
successor of TorchScript) and ``tensorrt`` (see :mod:`deepseek_ray.export.tensorrt`).

``optimize_level`` (0–9) picks ONNX Runtime's graph optimisation for every session that loads the
model (parity checks and serving read it from the metadata), and at 8–9 fuses transformer blocks
into the file:

=======  ==================================================================================
level    what is done
=======  ==================================================================================
0        ``ORT_DISABLE_ALL``
1–3      ``ORT_ENABLE_BASIC`` (constant folding, redundant nodes)
4–6      ``ORT_ENABLE_EXTENDED`` (+ fusions: GELU, LayerNorm, MatMul+Add)
7        ``ORT_ENABLE_ALL`` (+ layout optimisations)
8–9      ``ORT_ENABLE_ALL`` + ONNX Runtime's transformer fusions written into the file: Attention,
         SkipLayerNormalization, BiasGelu (``onnxscript.rewriter.ort_fusions``; where a graph holds
         no transformer block nothing changes)
=======  ==================================================================================

The transformer fusions come from onnxscript's ORT rewriter on the dynamo exporter's graph. What was
compared on the MiniLM classifier (6 layers; torch 2.13 / onnxruntime 1.32 here, torch 2.11 /
onnxruntime 1.30 / transformers 5.17 on the 16-core GPU host), fused operators counted with
``get_fused_operator_statistics()``:

* dynamo graph + ``onnxruntime.transformers.optimizer.optimize_model(model_type='bert', num_heads=12,
  hidden_size=384)``: 0 Attention, 12 SkipLayerNormalization, 6 BiasGelu — its attention patterns do
  not match the SDPA the dynamo exporter writes, with or without ``attn_implementation='eager'``;
* TorchScript exporter (``dynamo=False``) with eager attention + the same optimizer: 6 Attention and an
  EmbedLayerNormalization with transformers 5.24, but 0 Attention with transformers 5.17, and its
  mask index assumes right padding (1.1e-2 off for padding inside a sequence) unless
  ``use_raw_attention_mask`` is set; 3.9 ms at batch 1 on the host's 16 threads;
* dynamo graph + onnxscript's rewriter (used here): 6 Attention (raw additive mask, any padding),
  12 SkipLayerNormalization, 6 BiasGelu; 2.7–2.9 ms on the host's 16 threads against torch eager's
  5.5–5.8 ms (2.0×; 2.3× with both at 8 threads), and parity within 1e-7.

At one thread the model is bound by its matrix products (18 MatMul + 6 Attention are 85% of the
time), so fusions gain little there (1.2–1.5× torch eager); they pay off where many threads make the
per-node overhead count. The layout passes of level ≥ 7 are hardware specific, so they are applied
when a session loads the model, not baked into the file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..config.registries import EXPORT_FORMATS
from ..files import sha256_of
from ..runtime import quiet_logger

#: Each export format (export.formats' list) and the suffix of the file it writes.
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2", "tensorrt": ".engine"}
for _format, _suffix in SUFFIXES.items():
    EXPORT_FORMATS.register(_format)(_suffix)
FORMATS = tuple(SUFFIXES)
TRANSFORMER_FUSION_LEVEL = 8
_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
}


def graph_optimization_level(level: int):
    """ONNX Runtime's ``GraphOptimizationLevel`` for an ``optimize_level`` of 0–9.

    >>> graph_optimization_level(9).name
    'ORT_ENABLE_ALL'
    """
    import onnxruntime as ort

    if not 0 <= level <= 9:
        raise ValueError(f"optimize_level must be 0–9, got {level}")
    levels = ort.GraphOptimizationLevel
    if level == 0:
        return levels.ORT_DISABLE_ALL
    return (
        levels.ORT_ENABLE_BASIC if level <= 3 else levels.ORT_ENABLE_EXTENDED if level <= 6 else levels.ORT_ENABLE_ALL
    )


def onnx_session(path: str | Path, optimize_level: int = 9, threads: int = 0, providers: list[str] | None = None):
    """An ONNX Runtime session (CPU unless ``providers`` says otherwise) at ``optimize_level``.

    ``threads=0`` lets ONNX Runtime use every core (its default: one thread per physical core, pinned);
    ``1`` is the edge-device profile. Nodes run one after another (``ORT_SEQUENTIAL``) and idle pool
    threads spin between nodes: at batch 1 a MiniLM node lasts tens of microseconds, and on the
    16-core GPU host turning spinning off made a MiniLM call 1.4× slower (3.9 → 5.7 ms, 16 threads). A
    missing, truncated or corrupt file gives a ``ValueError`` naming the file, not a crash inside
    ONNX Runtime.

    >>> onnx_session('/nonexistent.onnx')
    Traceback (most recent call last):
    ...
    ValueError: cannot load ONNX model /nonexistent.onnx: no such file
    """
    import onnxruntime as ort

    if not Path(path).is_file():
        raise ValueError(f"cannot load ONNX model {path}: no such file")
    options = ort.SessionOptions()
    options.graph_optimization_level = graph_optimization_level(optimize_level)
    options.intra_op_num_threads = threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1")
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for bad files
        raise ValueError(f"cannot load ONNX model {path}: {str(err).splitlines()[0][:300]}") from None


@dataclass
class ExportResult:
    """A written model file and what was checked about it."""

    path: str
    format: str
    size_bytes: int
    sha256: str
    metadata_path: str
    max_abs_diff: float | None = None
    #: the runner the parity check used (:meth:`ModelExporter.runner`): more inputs, no second load of the file
    runner: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False, compare=False)
    #: the exported model's outputs on the parity inputs, and torch's (to score them without running either again)
    outputs: np.ndarray | None = field(default=None, repr=False, compare=False)
    expected: np.ndarray | None = field(default=None, repr=False, compare=False)


class ModelExporter:
    """Export a torch model (or a model bundle folder), check it, and write its metadata beside it.

    Axis 0 of the input is a dynamic ``batch``; ``sequence_axis`` (default: axis 1 of integer inputs,
    i.e. token ids) is a dynamic ``sequence``. The exported file is run on the parity inputs (``parity_inputs``,
    else the example input) and export fails with a ``ValueError`` when it differs from torch by more than
    ``parity_tolerance``: absolute for ``task=None``; for ``'classification'`` the predicted classes must also
    be identical; for ``'regression'`` the bound is ``parity_tolerance × max(1, max |prediction|)``.

    >>> import tempfile, os
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1))
    >>> path = os.path.join(tempfile.mkdtemp(), 'model.onnx')
    >>> out = ModelExporter(format='onnx', optimize_level=9).export(model, path, example_input=torch.randn(2, 4))
    >>> out.format, out.max_abs_diff < 1e-5
    ('onnx', True)
    """

    def __init__(
        self,
        format: str = "onnx",
        optimize_level: int = 9,
        opset: int = 18,
        dynamic_batch: bool = True,
        sequence_axis: int | None = None,
        parity_tolerance: float = 1e-3,
        output_name: str = "probabilities",
        task: str | None = None,
    ):
        if format not in FORMATS:
            raise ValueError(f"export format: unknown {format!r}; allowed: {', '.join(FORMATS)}")
        graph_optimization_level(optimize_level)  # validates the range
        self.format, self.optimize_level, self.opset = format, optimize_level, opset
        self.dynamic_batch, self.sequence_axis = dynamic_batch, sequence_axis
        self.parity_tolerance, self.output_name, self.task = parity_tolerance, output_name, task

    def export(
        self,
        model: nn.Module | str | Path,
        path: str | Path,
        example_input: torch.Tensor | None = None,
        metadata: dict[str, Any] | None = None,
        parity_inputs: torch.Tensor | None = None,
    ) -> ExportResult:
        """Write ``model`` (a module, or a model bundle folder) to ``path``; check it on ``parity_inputs``
        (default: the example input) in one pass; return what was written, with both models' outputs.

        Without ``example_input``, a bundle gives two examples drawn like its training data (its kind's
        :meth:`~deepseek_ray.data.DataKind.example_input`).
        """
        metadata = dict(metadata or {})
        if isinstance(model, (str, Path)):
            model, example_input = _from_bundle(model, example_input, metadata)
        if example_input is None:
            raise ValueError("example_input is needed to export a module (or pass a model bundle folder)")
        model, path = model.eval(), Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writers: dict[str, Callable[..., dict[str, Any] | None]] = {
            "onnx": self._write_onnx,
            "torch_export": self._write_torch_export,
            "tensorrt": self._write_tensorrt,
        }
        extra = writers[self.format](model, example_input, path) or {}
        run = self.runner(path)
        inputs = example_input if parity_inputs is None else parity_inputs
        expected, outputs = self.compare(model, inputs, run)
        diff = self.check_parity(expected, outputs, f"{self.format} export of {type(model).__name__}")
        meta_path = self._write_metadata(path, example_input, {**extra, **metadata, "max_abs_diff": diff})
        return ExportResult(
            str(path), self.format, path.stat().st_size, sha256_of(path), str(meta_path), diff, run, outputs, expected
        )

    def check_parity(self, expected: np.ndarray, outputs: np.ndarray, what: str = "the export") -> float:
        """Max |Δ| between torch's ``expected`` and the exported ``outputs``; a ``ValueError`` past the bound.

        >>> ModelExporter(task='classification').check_parity(np.array([[0.6, 0.4]]), np.array([[0.4, 0.6]]))
        Traceback (most recent call last):
        ...
        ValueError: the export differs from torch by 0.2 over 1 inputs (bound 0.001), classes identical: False
        """
        diff = float(np.abs(expected - outputs).max()) if expected.size else 0.0
        bound = self.parity_tolerance
        if self.task == "regression":
            bound *= max(1.0, float(np.abs(expected).max()))
        same = bool((expected.argmax(1) == outputs.argmax(1)).all()) if self.task == "classification" else True
        if not (diff <= bound and same):
            raise ValueError(
                f"{what} differs from torch by {diff:.3g} over {len(expected)} inputs (bound {bound:.3g})"
                + (f", classes identical: {same}" if self.task == "classification" else "")
            )
        return diff

    # ------------------------------------------------------------------------------------ writers
    def dynamic_axes(self, example: torch.Tensor) -> dict[int, str]:
        """The input's dynamic axes by name: ``{0: 'batch'}``, plus ``'sequence'`` for token ids.

        >>> ModelExporter().dynamic_axes(torch.zeros(2, 64, dtype=torch.long))
        {0: 'batch', 1: 'sequence'}
        """
        axes = {0: "batch"} if self.dynamic_batch else {}
        sequence = self.sequence_axis
        if sequence is None and not example.is_floating_point() and example.dim() >= 2:
            sequence = 1
        if sequence is not None:
            axes[sequence] = "sequence"
        return axes

    def _dynamic_shapes(self, example: torch.Tensor, named: bool = True) -> tuple[dict[int, Any]] | None:
        """Named dims give readable ONNX axes; ``torch.export`` alone prefers to infer their ranges (DYNAMIC)."""
        axes = self.dynamic_axes(example)
        dim = (lambda name: torch.export.Dim(name, min=1)) if named else (lambda name: torch.export.Dim.DYNAMIC)
        return ({axis: dim(name) for axis, name in axes.items()},) if axes else None

    def _write_onnx(self, model: nn.Module, example: torch.Tensor, path: Path, fuse: bool = True) -> dict[str, Any]:
        import onnx
        import onnx_ir as ir

        with quiet_logger("torch.onnx"):
            program = torch.onnx.export(
                model,
                (example,),
                dynamo=True,
                dynamic_shapes=self._dynamic_shapes(example),
                opset_version=self.opset,
                input_names=["input"],
                output_names=[self.output_name],
                verbose=False,
                optimize=True,
                custom_translation_table=ONNX_TRANSLATIONS or None,
            )
        if program is None:  # only with dynamo=False, which is never asked for here
            raise RuntimeError("torch.onnx.export returned no program")
        # Tidied and fused in memory, so the file is written once (the bytes are those the former
        # save → tidy → fuse rewrites gave), then checked as written.
        proto = _tidy_onnx(program.model_proto)
        extra = {}
        if fuse and self.optimize_level >= TRANSFORMER_FUSION_LEVEL:
            fused_model, fused = _ort_fusions(ir.serde.deserialize_model(proto))
            if fused:
                proto = ir.serde.serialize_model(fused_model)
            extra = {"fusions": fused}
        onnx.save(proto, str(path))
        onnx.checker.check_model(str(path), full_check=True)
        return extra

    def _write_torch_export(self, model: nn.Module, example: torch.Tensor, path: Path) -> None:
        program = torch.export.export(model, (example,), dynamic_shapes=self._dynamic_shapes(example, named=False))
        torch.export.save(program, str(path))

    def _write_tensorrt(self, model: nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
        from .tensorrt import build_engine, tensorrt_backend

        backend = tensorrt_backend()  # fails first, with what is missing, before any work
        if backend != "tensorrt":  # ONNX Runtime's GPU provider compiles the ONNX file when a session loads it
            self._write_onnx(model, example, path, fuse=False)
            return {"providers": [backend, "CPUExecutionProvider"]}
        onnx_path = Path(str(path) + ".onnx")  # TensorRT parses standard ONNX: no ONNX Runtime-only fusions
        self._write_onnx(model, example, onnx_path, fuse=False)
        return build_engine(onnx_path, path, example, self.dynamic_axes(example), self.optimize_level)

    # ------------------------------------------------------------------------------------ runners
    def runner(self, path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
        """Inputs → outputs (numpy arrays) of a file this exporter's format wrote, run as that format runs:
        an ONNX Runtime session at ``optimize_level``, the ``torch.export`` program, or the TensorRT engine
        (or ONNX Runtime's GPU provider, whichever backend built it). Each call loads the file once.

        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), 'm.onnx')
        >>> exporter = ModelExporter(optimize_level=7)
        >>> _ = exporter.export(torch.nn.Linear(4, 2), path, torch.randn(2, 4))
        >>> exporter.runner(path)(np.zeros((3, 4), np.float32)).shape
        (3, 2)
        """
        path = Path(path)
        if self.format == "torch_export":
            return _torch_export_runner(path)
        if self.format == "onnx":
            return self._onnx_runner(path)
        from .tensorrt import engine_runner, tensorrt_backend

        backend = tensorrt_backend()
        if backend == "tensorrt":
            return engine_runner(path)
        return self._onnx_runner(path, providers=[backend, "CPUExecutionProvider"])

    def _onnx_runner(self, path: Path, providers: list[str] | None = None) -> Callable[[np.ndarray], np.ndarray]:
        session = onnx_session(path, self.optimize_level, providers=providers)
        return lambda batch: onnx_predict(session, batch)

    def compare(
        self,
        model: nn.Module,
        inputs: torch.Tensor,
        runner: Callable[[np.ndarray], np.ndarray],
        batch_size: int = 256,
    ) -> tuple[np.ndarray, np.ndarray]:
        """torch's outputs and the exported model's (``runner``) on ``inputs``, in batches."""
        expected, outputs = [], []
        with torch.no_grad():
            for start in range(0, len(inputs), batch_size):
                chunk = inputs[start : start + batch_size]
                expected.append(model(chunk).float().numpy())
                outputs.append(np.asarray(runner(chunk.numpy())))
        return np.concatenate(expected), np.concatenate(outputs)

    def _write_metadata(self, path: Path, example: torch.Tensor, extra: dict[str, Any]) -> Path:
        shape: list[int | str] = list(example.shape)
        for axis, name in self.dynamic_axes(example).items():
            shape[axis] = name
        meta = {
            "format": self.format,
            "opset": self.opset,
            "optimize_level": self.optimize_level,
            "inputs": [{"name": "input", "shape": shape, "dtype": str(example.dtype).removeprefix("torch.")}],
            "outputs": [{"name": self.output_name}],
            "input_shape": list(example.shape[1:]),
            "example_shape": list(example.shape),
            "preprocessing": "inside the graph: raw inputs in, model outputs out",
            "sha256": sha256_of(path),
            "size_bytes": path.stat().st_size,
            **extra,
        }
        meta_path = path.with_suffix(path.suffix + ".json")
        meta_path.write_text(json.dumps(meta, indent=2, default=str))
        return meta_path


def _from_bundle(
    folder: str | Path, example: torch.Tensor | None, metadata: dict[str, Any]
) -> tuple[nn.Module, torch.Tensor]:
    """A bundle's model, an example drawn like its data, and its labels/preprocessing in ``metadata``."""
    from ..data import kind_of
    from ..models import load_bundle

    model, meta = load_bundle(folder)
    for key in ("labels", "input_shape", "architecture", "preprocessing"):
        metadata.setdefault(key, meta.get(key))
    return model, kind_of(meta).example_input(meta) if example is None else example


def fuse_transformer_blocks(path: str | Path) -> dict[str, int]:
    """Rewrite ``path`` in place with ONNX Runtime's transformer fusions; returns what was fused.

    A graph without attention, LayerNorm or GELU is left as it is (and an empty dict comes back).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), 'm.onnx')
    >>> _ = ModelExporter(optimize_level=7).export(torch.nn.Linear(4, 2), path, torch.randn(2, 4))
    >>> fuse_transformer_blocks(path)
    {}
    """
    import onnx_ir as ir

    model, fused = _ort_fusions(ir.load(str(path)))
    if fused:
        ir.save(model, str(path))
    return fused


def _ort_fusions(model: Any) -> tuple[Any, dict[str, int]]:
    """ONNX Runtime's transformer fusions on an ``onnx_ir`` model: the rewritten model and what was fused."""
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model, stats = optimize_for_ort(model)
    return model, {name: count for name, count in stats.items() if count}


def _tidy_onnx(model: Any) -> Any:
    """Store fake-quantized weights as integers and drop the exporter's debug records, in place; returns ``model``.

    ``torch.onnx`` keeps a stack trace, FX node and class path per node (over a third of a small CNN's
    file, and the build machine's file paths); the graph does not need them.
    """
    _store_quantized_weights(model)
    for item in [*model.graph.node, *model.graph.value_info]:
        del item.metadata_props[:]
    drop_initializer_shapes(model)
    return model


def drop_initializer_shapes(model: Any) -> int:
    """Remove ``value_info`` entries that repeat an initializer's shape; returns how many went.

    The dynamo exporter records every weight's shape there too. A tool that rewrites a weight in
    place (ONNX Runtime 1.30's dynamic quantizer transposes ``Gemm`` weights) then fails ONNX's shape
    inference on the stale record: "Inferred shape and existing shape differ in dimension 0: (384)
    vs (2)". An initializer carries its own shape, so nothing is lost.

    >>> from onnx import helper, numpy_helper, TensorProto
    >>> graph = helper.make_graph([helper.make_node('Identity', ['w'], ['y'])], 'g', [],
    ...     [helper.make_tensor_value_info('y', TensorProto.FLOAT, [2])],
    ...     [numpy_helper.from_array(np.ones(2, np.float32), 'w')],
    ...     value_info=[helper.make_tensor_value_info('w', TensorProto.FLOAT, [2])])
    >>> drop_initializer_shapes(helper.make_model(graph))
    1
    """
    weights = {tensor.name for tensor in model.graph.initializer}
    kept = [info for info in model.graph.value_info if info.name not in weights]
    dropped = len(model.graph.value_info) - len(kept)
    del model.graph.value_info[:]
    model.graph.value_info.extend(kept)
    return dropped


def _store_quantized_weights(model: Any) -> int:
    """Fold every ``QuantizeLinear`` of a constant weight into the integer tensor it computes.

    A fake-quantized model exports as float weight → QuantizeLinear → DequantizeLinear; storing the
    integer weight instead makes the file 4× smaller and is what ONNX Runtime's QDQ fusions look for.
    Returns how many weights were folded.
    """
    from onnx import numpy_helper

    graph = model.graph
    constants = {tensor.name: tensor for tensor in graph.initializer}
    folded = [
        node
        for node in graph.node
        if node.op_type == "QuantizeLinear" and len(node.input) == 3 and all(name in constants for name in node.input)
    ]
    for node in folded:
        weight, scale, zero = (numpy_helper.to_array(constants[name]) for name in node.input)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1) % max(weight.ndim, 1)
        shape = [-1 if d == axis else 1 for d in range(weight.ndim)] if scale.ndim else []
        limits = np.iinfo(zero.dtype)
        values = np.clip(np.rint(weight / scale.reshape(shape)) + zero.reshape(shape), limits.min, limits.max)
        stored = f"{node.input[0]}_quantized"  # keeps the weight's name readable in size reports
        graph.initializer.append(numpy_helper.from_array(values.astype(zero.dtype), stored))
        for consumer in graph.node:
            consumer.input[:] = [stored if name == node.output[0] else name for name in consumer.input]
        graph.node.remove(node)
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(tensor)
    return len(folded)


def _torch_export_runner(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    from .torch_program import TorchProgramSession

    session = TorchProgramSession(path)
    name = session.get_inputs()[0].name
    return lambda batch: session.run(None, {name: batch})[0]


#: ONNX translations of custom torch ops, used by every ONNX export (later stages register theirs here).
ONNX_TRANSLATIONS: dict[Any, Callable[..., Any]] = {}


def register_onnx_translation(op: Any, translation: Callable[..., Any]) -> None:
    """Make ``torch.onnx`` export ``op`` (a ``torch.ops`` overload) through an onnxscript function.

    >>> import deepseek_ray.quantization  # registers its fake quantizer
    >>> torch.ops.deepseek_ray.fake_quantize.default in ONNX_TRANSLATIONS
    True
    """
    ONNX_TRANSLATIONS[op] = translation


def read_metadata(model_path: str | Path) -> dict[str, Any]:
    """The metadata written beside an exported model (``model.onnx`` → ``model.onnx.json``).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), 'model.onnx')
    >>> _ = ModelExporter().export(torch.nn.Linear(4, 2), path, torch.randn(2, 4))
    >>> read_metadata(path)['opset'], read_metadata(path)['inputs'][0]['shape']
    (18, ['batch', 4])
    """
    meta_path = Path(str(model_path) + ".json")
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"no metadata beside {model_path} (expected {meta_path}); run `deepseek-ray export` first"
        )
    return json.loads(meta_path.read_text())


def onnx_predict(session: Any, batch: np.ndarray) -> np.ndarray:
    """Run a session on a batch (cast to the model's input type); returns the first output.

    A batch whose shape does not fit the model's input is a ``ValueError`` naming both shapes.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), 'm.onnx')
    >>> _ = ModelExporter().export(torch.nn.Linear(4, 2), path, torch.randn(2, 4))
    >>> onnx_predict(onnx_session(path), np.zeros((3, 4))).shape
    (3, 2)
    """
    expected = session.get_inputs()[0]
    fixed = [d if isinstance(d, int) else None for d in expected.shape]
    if len(fixed) != batch.ndim or any(f is not None and f != n for f, n in zip(fixed, batch.shape, strict=True)):
        shown = [d if d is not None else "N" for d in fixed]
        raise ValueError(
            f"input of shape {list(batch.shape)} does not fit the model's input {expected.name!r} of shape {shown}"
        )
    return session.run(None, {expected.name: np.asarray(batch).astype(input_dtype(session), copy=False)})[0]


def input_dtype(session: Any) -> type:
    """The numpy type of a session's first input (float32 unless the model says otherwise).

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), 'ids.onnx')  # a model of token ids, as text models are
    >>> _ = ModelExporter().export(torch.nn.Embedding(10, 3), path, torch.tensor([[1, 2, 3]]))
    >>> input_dtype(onnx_session(path))
    <class 'numpy.int64'>
    """
    return _NUMPY_TYPES.get(session.get_inputs()[0].type, np.float32)


__all__ = [
    "ExportResult",
    "FORMATS",
    "ModelExporter",
    "drop_initializer_shapes",
    "fuse_transformer_blocks",
    "graph_optimization_level",
    "input_dtype",
    "onnx_predict",
    "onnx_session",
    "read_metadata",
    "register_onnx_translation",
]
