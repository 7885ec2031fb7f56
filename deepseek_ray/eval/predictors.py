"""Anything that names a model → one :class:`Predictor`: a function of a batch that returns the model's outputs
(probability rows for a classifier, values for a regressor), as served.

A model is an exported ONNX file (its ``.onnx.json`` metadata beside it, when there), an export folder holding
one, a model bundle folder (``bundle.json`` + ``weights.pt``), an MLflow model URI (``models:/name/3``,
``models:/name@champion``, ``runs:/…``: downloaded, then the ``.onnx`` inside is used), an ONNX Runtime
session, an in-memory torch module, or a plain function of a numpy batch. torch, ONNX Runtime and MLflow
are imported only when a model needs them.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

MLFLOW_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


@dataclass
class Predictor:
    """A model as a function of a batch. ``parser`` (the model kind's request parser, built on first use)
    turns raw inputs — ``{column: value}`` rows, strings — into the model's batch, as Serve does.

    >>> double = Predictor(lambda batch: batch * 2, name='double')
    >>> double(np.ones((3, 2))).shape
    (3, 2)
    """

    run: Callable[[np.ndarray], np.ndarray]
    name: str = "model"
    meta: dict[str, Any] = field(default_factory=dict)
    make_parser: Callable[[], Callable[[Any], np.ndarray]] | None = None
    batch_size: int = 512
    _parser: Callable[[Any], np.ndarray] | None = field(default=None, repr=False)

    def __call__(self, inputs: Any) -> np.ndarray:
        batch = self.parse(inputs)
        if len(batch) == 0:
            return np.zeros((0,))
        outputs = [np.asarray(self.run(batch[i : i + self.batch_size])) for i in range(0, len(batch), self.batch_size)]
        return np.concatenate(outputs)

    def parse(self, inputs: Any) -> np.ndarray:
        """Numbers pass as they are (reshaped to the model's example shape when only that differs); other
        inputs (rows, strings) go through the parser."""
        if hasattr(inputs, "detach"):  # a torch tensor
            inputs = inputs.detach().cpu().numpy()
        if isinstance(inputs, np.ndarray) and inputs.dtype.kind in "fiub":
            shape = self.meta.get("input_shape")
            if shape and inputs.ndim >= 1 and inputs[0].size == np.prod(shape) and list(inputs.shape[1:]) != shape:
                inputs = inputs.reshape(len(inputs), *shape)
            return inputs
        if self.make_parser is None:
            return np.asarray(inputs)
        if self._parser is None:
            self._parser = self.make_parser()
        return self._parser(inputs)

    def from_frame(self, frame: Any) -> np.ndarray:
        """A table's rows as this model's batch: ``{column: value}`` records through the parser, or, for a model
        whose parser takes no records, its one text column, or its numbers."""
        from ..data import BadRequest

        if self.make_parser is not None:
            try:
                return self.parse(frame.to_dict("records"))
            except BadRequest:
                if frame.shape[1] == 1 and not np.issubdtype(frame.dtypes.iloc[0], np.number):
                    return self.parse(frame.iloc[:, 0].astype(str).tolist())
        return self.parse(frame.to_numpy(dtype=np.float32))


def as_predictor(model: Any, *, tracking_uri: str | None = None) -> Predictor | None:
    """The :class:`Predictor` of a model (see the module); ``None`` stays ``None`` (online use needs no model).

    >>> as_predictor(None) is None
    True
    >>> as_predictor(lambda batch: batch.sum(1))(np.ones((2, 3))).tolist()
    [3.0, 3.0]
    >>> as_predictor('nowhere/model.onnx')
    Traceback (most recent call last):
    ...
    FileNotFoundError: no model at nowhere/model.onnx: expected an .onnx file, an export or bundle folder, \
or an MLflow URI (models:/name/3, models:/name@champion)
    """
    if model is None or isinstance(model, Predictor):
        return model
    if isinstance(model, str) and model.startswith(MLFLOW_SCHEMES):
        return _from_mlflow(model, tracking_uri)
    if isinstance(model, str | Path):
        return _from_path(Path(model))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return _from_module(model, type(model).__name__)
    if hasattr(model, "get_inputs") and hasattr(model, "run"):  # an ONNX Runtime session
        return _from_session(model, "onnx session")
    if callable(model):
        return Predictor(model, getattr(model, "__name__", "function"))
    raise TypeError(f"cannot use a {type(model).__name__} as a model: pass a file, folder, MLflow URI or module")


def _from_path(path: Path) -> Predictor:
    if path.is_file() and path.suffix == ".onnx":
        return _from_onnx(path)
    if path.is_dir():
        if (path / "bundle.json").is_file():
            return _from_bundle(path)
        found = _find_onnx(path)
        if found is not None:
            return _from_onnx(found)
    raise FileNotFoundError(
        f"no model at {path}: expected an .onnx file, an export or bundle folder, or an MLflow URI "
        "(models:/name/3, models:/name@champion)"
    )


def _find_onnx(folder: Path) -> Path | None:
    """The folder's ONNX model: ``model.onnx`` if there, else the only ``.onnx`` file below it."""
    if (folder / "model.onnx").is_file():
        return folder / "model.onnx"
    found = sorted(folder.rglob("*.onnx"))
    if len(found) > 1:
        raise ValueError(f"{folder} holds several ONNX models ({', '.join(p.name for p in found)}): name one")
    return found[0] if found else None


def _from_onnx(path: Path) -> Predictor:
    from ..export import onnx_session, read_metadata

    meta = read_metadata(path) if Path(str(path) + ".json").is_file() else {}
    return _from_session(onnx_session(path, meta.get("optimize_level", 9)), str(path), meta, path.parent)


def _from_session(session: Any, name: str, meta: dict[str, Any] | None = None, folder: Path | None = None) -> Predictor:
    from ..export import input_dtype, onnx_predict

    meta = meta or {}

    def make_parser() -> Callable[[Any], np.ndarray]:
        from ..data import kind_of

        return kind_of(meta).request_parser(meta, input_dtype(session), folder or Path("."))

    return Predictor(
        lambda batch: onnx_predict(session, batch), name, meta, make_parser if meta.get("input_shape") else None
    )


def _from_module(module: Any, name: str, meta: dict[str, Any] | None = None, folder: Path | None = None) -> Predictor:
    import torch

    module.eval()
    device = next((p.device for p in module.parameters()), torch.device("cpu"))

    def run(batch: np.ndarray) -> np.ndarray:
        array = np.asarray(batch)
        tensor = torch.as_tensor(array.astype(np.float32) if array.dtype.kind == "f" else array, device=device)
        with torch.no_grad():
            output = module(tensor)
        output = getattr(output, "logits", output)  # a transformers model returns an output object
        output = output[0] if isinstance(output, tuple | list) else output
        return output.float().cpu().numpy()

    make_parser = None
    if meta and meta.get("input_shape"):

        def make_parser() -> Callable[[Any], np.ndarray]:
            from ..data import kind_of

            kind = kind_of(meta)
            dtype = kind.example_input(meta, 1).numpy().dtype
            return kind.request_parser(meta, dtype, folder or Path("."))

    return Predictor(run, name, dict(meta or {}), make_parser)


def _from_bundle(folder: Path) -> Predictor:
    from ..models.bundle import load_bundle

    model, meta = load_bundle(folder)
    return _from_module(model, str(folder), meta, folder)


def _from_mlflow(uri: str, tracking_uri: str | None) -> Predictor:
    """Download an MLflow model and use the ONNX file inside; an unreachable store or unknown name is a
    ``ValueError`` saying which store was asked."""
    import mlflow

    store = tracking_uri or mlflow.get_tracking_uri()
    local = tempfile.mkdtemp(prefix="deepseek_ray_eval_")
    try:
        source = _registry_source(uri, tracking_uri) if tracking_uri else uri
        folder = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=local, tracking_uri=tracking_uri)
        )
    except Exception as err:  # MLflow raises its own, REST and file-system errors alike
        message = str(err).splitlines()[0][:300] if str(err) else type(err).__name__
        raise ValueError(
            f"cannot load {uri} from the MLflow store at {store}: {message} "
            "(set MLFLOW_TRACKING_URI or pass tracking_uri=)"
        ) from None
    found = folder if folder.is_file() and folder.suffix == ".onnx" else _find_onnx(folder)
    if found is None:
        raise ValueError(f"{uri} holds no ONNX model (downloaded to {folder}); log it with mlflow.onnx.log_model")
    return _from_onnx(found)


def _registry_source(uri: str, tracking_uri: str) -> str:
    """Where a ``models:/name/3`` or ``models:/name@alias`` lives, asked of ``tracking_uri``'s registry
    (:func:`deepseek_ray.tracking.registry.download_uri`); any other MLflow URI as it is."""
    from ..tracking.registry import download_uri, is_registry_uri

    return download_uri(uri, tracking_uri) if is_registry_uri(uri) else uri
