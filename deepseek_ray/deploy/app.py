"""The Ray Serve application over an exported ONNX model, with adaptive batching and autoscaling.

POST a JSON body ``{"inputs": <one example>}`` (or ``{"inputs": [<example>, ...]}``) to the route. What an
example is follows the model's kind (the export metadata's ``kind`` and ``input_spec``; shapes and dtype
are checked against the ONNX model's input):

==============  ==================================================================================
kind            an example
==============  ==================================================================================
image           an array of pixel values 0–255 in the model's input shape (e.g. 28×28), or flat
tabular         a row as ``{column: value}`` (the fitted imputation/binning/encoding is applied here),
                or the encoded feature row (floats, as many as the model has features)
timeseries      a window: channels × lookback raw values (one channel may come as a flat list)
text            a string (tokenised with the tokenizer saved beside the model), or token ids
                (integers in ``[0, vocab_size)``, at most ``max_len``, padded with the pad id)
==============  ==================================================================================

The reply holds the predicted label and class probabilities (classification) or the prediction in the
target's units (regression: one value, or one per horizon step), and the size of the batch the request
was served in. A malformed body is answered 400 with the reason; the replica carries on.

For ``serve run`` / ``serve deploy``: ``deepseek_ray.deploy.app:build_app`` with
``args: {model_path: runs/NAME/export/model.onnx}`` (see ``deployments/serve_mnist.yaml``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from .batching import DynamicBatchScheduler


class BadRequest(ValueError):
    """A payload the model cannot take; its message is returned to the client."""


def _inputs_of(payload: Any) -> Any:
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest('the body must be a JSON object with the key "inputs"')
    return payload["inputs"]


def parse_inputs(payload: Any, example_shape: tuple[int, ...], dtype: type = np.float32) -> np.ndarray:
    """Turn a JSON payload of numbers into an array of examples shaped ``(n, *example_shape)``.

    ``dtype`` is the model input's type; an integer type accepts only whole numbers.

    >>> parse_inputs({'inputs': [[0] * 4] * 4}, (1, 4, 4)).shape
    (1, 1, 4, 4)
    >>> parse_inputs({'inputs': [0] * 16}, (1, 4, 4)).shape
    (1, 1, 4, 4)
    >>> parse_inputs({'inputs': [1.5, 2]}, (2,), np.int64)
    Traceback (most recent call last):
    ...
    deepseek_ray.deploy.app.BadRequest: "inputs" must hold whole numbers (the model takes int64)
    """
    inputs = _inputs_of(payload)
    try:
        # Float models: parsed straight into their dtype, so a value beyond its range is inf and refused below;
        # integer models: parsed as float64 first, to tell whole numbers from fractions.
        array = np.asarray(inputs, dtype=np.float64 if np.issubdtype(dtype, np.integer) else dtype)
    except (TypeError, ValueError):
        raise BadRequest('"inputs" must be a (nested) list of numbers, with every example of the same shape') from None
    size = int(np.prod(example_shape))
    if array.size == 0 or array.size % size:
        raise BadRequest(f'"inputs" has {array.size} numbers; each example needs {size} (shape {list(example_shape)})')
    if not np.isfinite(array).all():
        raise BadRequest('"inputs" contains NaN or infinity')
    if np.issubdtype(dtype, np.integer) and not (array == np.round(array)).all():
        raise BadRequest(f'"inputs" must hold whole numbers (the model takes {np.dtype(dtype).name})')
    # One example may come flat, as its own shape, or in a list; more come as a list of those.
    return array.reshape(-1, *example_shape).astype(dtype, copy=False)


@dataclass
class RequestParser:
    """Request → model input batch, for one exported model (built from its metadata and ONNX session).

    >>> parser = RequestParser(example_shape=(3,), kind='tabular')
    >>> parser({'inputs': [[1, 2, 3], [4, 5, 6]]}).shape
    (2, 3)
    >>> RequestParser(example_shape=(4,), dtype=np.int64, kind='text', spec={'vocab_size': 10, 'pad_id': 0, 'max_len': 4})(
    ...     {'inputs': [5, 6]}).tolist()
    [[5, 6, 0, 0]]
    """

    example_shape: tuple[int, ...]
    dtype: type = np.float32
    kind: str = "image"
    spec: dict[str, Any] = field(default_factory=dict)
    tokenizer: Any = None  # text: a Hugging Face fast tokenizer, when the export folder holds one
    transform: Any = None  # tabular: the fitted TabularTransform

    @classmethod
    def from_model(cls, meta: dict[str, Any], session: Any, model_path: str | Path) -> "RequestParser":
        """Check the metadata against the ONNX model's input; load the tokenizer or tabular transform."""
        from ..export import input_dtype

        declared = session.get_inputs()[0]
        example_shape = tuple(int(d) for d in meta["input_shape"])
        fixed = list(declared.shape[1:])
        if len(fixed) != len(example_shape) or any(isinstance(f, int) and f != e for f, e in zip(fixed, example_shape)):
            raise ValueError(f"{model_path}: the metadata's input_shape {list(example_shape)} does not fit the ONNX "
                             f"input {declared.name!r} of shape {declared.shape}")
        kind, spec = meta.get("kind", "image"), dict(meta.get("input_spec") or {})
        parser = cls(example_shape, input_dtype(session), kind, spec)
        if kind == "text" and spec.get("tokenizer"):
            from ..data.text import ensure_pad_token, load_tokenizer

            parser.tokenizer = ensure_pad_token(load_tokenizer(Path(model_path).parent / spec["tokenizer"]))
        if kind == "tabular" and spec.get("transform"):
            from ..data import TabularTransform

            parser.transform = TabularTransform.from_dict(spec["transform"])
        return parser

    def __call__(self, payload: Any) -> np.ndarray:
        inputs = _inputs_of(payload)
        if self.kind == "text" and _all(inputs, str):
            return self._tokenize([inputs] if isinstance(inputs, str) else inputs)
        if self.kind == "text":
            return self._token_ids(inputs)
        if self.kind == "tabular" and _all(inputs, dict):
            return self._rows([inputs] if isinstance(inputs, dict) else inputs)
        return parse_inputs(payload, self.example_shape, self.dtype)

    def _tokenize(self, texts: list[str]) -> np.ndarray:
        if self.tokenizer is None:
            raise BadRequest("this model takes token ids (its export folder holds no tokenizer): "
                             f'send {{"inputs": [<up to {self.example_shape[0]} integers>]}}')
        from ..data.text import encode_texts  # imported already: it loaded the tokenizer

        return encode_texts(self.tokenizer, texts, self.example_shape[0], self.dtype)

    def _token_ids(self, inputs: Any) -> np.ndarray:
        rows = inputs if isinstance(inputs, list) and inputs and all(isinstance(r, list) for r in inputs) else [inputs]
        max_len, vocab = self.example_shape[0], int(self.spec.get("vocab_size", 2**31))
        raw = "a string or a list of strings, or " if self.tokenizer is not None else ""
        out = np.full((len(rows), max_len), int(self.spec.get("pad_id", 0)), dtype=self.dtype)
        for i, row in enumerate(rows):
            if not isinstance(row, list) or not row or not all(isinstance(t, int) and not isinstance(t, bool) for t in row):
                raise BadRequest(f'"inputs" must be {raw}token ids: a list of integers, or a list of such lists')
            if len(row) > max_len:
                raise BadRequest(f'"inputs" example {i} has {len(row)} token ids; the model takes at most {max_len}')
            if min(row) < 0 or max(row) >= vocab:
                raise BadRequest(f'"inputs" example {i}: token ids must be in [0, {vocab}), got {min(row)}…{max(row)}')
            out[i, : len(row)] = row
        return out

    def _rows(self, records: list[dict[str, Any]]) -> np.ndarray:
        import pandas as pd

        if self.transform is None:
            raise BadRequest(f"this model takes feature rows of {self.example_shape[0]} numbers")
        try:
            features = self.transform.transform(pd.DataFrame.from_records(records))
        except KeyError as err:  # a missing column: the data layer names it and the columns found
            raise BadRequest(f"a row misses a column: {err.args[0]}") from None
        except (TypeError, ValueError) as err:
            raise BadRequest(f"a row has a value of the wrong type: {err}") from None
        return features.astype(self.dtype)


def _all(inputs: Any, kind: type) -> bool:
    """``inputs`` is one ``kind`` or a non-empty list of them."""
    return isinstance(inputs, kind) or (isinstance(inputs, list) and bool(inputs) and all(isinstance(i, kind) for i in inputs))


@serve.deployment
class ModelServer:
    """One replica: an ONNX Runtime session behind ``serve.batch``, tuned by :class:`DynamicBatchScheduler`."""

    def __init__(self, model_path: str, batching: dict[str, Any] | None = None, threads: int = 1):
        from ..export import onnx_session, read_metadata

        self.meta = read_metadata(model_path)
        self.session = onnx_session(model_path, self.meta.get("optimize_level", 9), threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.parser = RequestParser.from_model(self.meta, self.session, model_path)
        self.labels = self.meta.get("labels") or []
        self.regression = self.meta.get("task") == "regression"
        batching = batching or {}
        self.scheduler = DynamicBatchScheduler(
            min_batch=batching.get("min_batch", 1), max_batch=batching.get("max_batch", 32),
            latency_threshold=batching.get("latency_threshold_ms", 100.0),
        )
        self.predict.set_max_batch_size(self.scheduler.batch_size)
        self.predict.set_batch_wait_timeout_s(self.scheduler.wait_timeout_s)
        self.served = 0

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse(self.describe())
        try:
            payload = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return JSONResponse({"error": f"the body is not valid JSON: {err}"}, status_code=400)
        try:
            examples = self.parser(payload)
        except BadRequest as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        if len(examples) > self.scheduler.max_batch:
            return JSONResponse({"error": f"at most {self.scheduler.max_batch} examples per request"}, status_code=413)
        answers = await asyncio.gather(*(self.predict(example) for example in examples))
        return JSONResponse(answers[0] if len(answers) == 1 else {"predictions": list(answers)})

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict(self, examples: list[np.ndarray]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        outputs = self.session.run(None, {self.input_name: np.stack(examples)})[0]
        compute_ms = (time.perf_counter() - start) * 1000
        if self.scheduler.observe(len(examples), compute_ms):
            self.predict.set_max_batch_size(self.scheduler.batch_size)
        self.served += len(examples)
        return [self._answer(row, len(examples)) for row in outputs]

    def _answer(self, row: np.ndarray, batch_size: int) -> dict[str, Any]:
        if self.regression:  # in the target's units: one value, or one per horizon step
            values = [float(v) for v in np.ravel(row)]
            return {"prediction": values[0] if len(values) == 1 else values, "target": self.labels[0] if self.labels else None,
                    "batch_size": batch_size}
        index = int(row.argmax())
        return {
            "label": self.labels[index] if index < len(self.labels) else index,
            "class_index": index,
            "probabilities": [round(float(p), 6) for p in row],
            "batch_size": batch_size,
        }

    def describe(self) -> dict[str, Any]:
        """What a GET on the route returns: the model, what it takes, and the batching state."""
        spec = self.parser.spec
        return {
            "model": self.meta.get("architecture"), "kind": self.parser.kind, "task": self.meta.get("task", "classification"),
            "labels": self.labels, "input_shape": list(self.parser.example_shape), "input_dtype": np.dtype(self.parser.dtype).name,
            "accepts_text": self.parser.tokenizer is not None, "columns": spec.get("columns"),
            "sha256": self.meta.get("sha256"), "quantization": (self.meta.get("quantization") or {}).get("type"),
            "batch_cap": self.scheduler.batch_size, "served": self.served,
        }


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve's application builder (``serve run deepseek_ray.deploy.app:build_app model_path=...``).

    ``args``: ``model_path``, and optionally ``batching`` (min_batch, max_batch, latency_threshold_ms),
    ``autoscaling`` (min_replicas, max_replicas, target_ongoing_requests), ``num_cpus``, ``threads``.
    """
    if "model_path" not in args:
        raise ValueError("build_app needs args.model_path (an exported .onnx file)")
    model_path = str(Path(args["model_path"]).resolve())
    batching = dict(args.get("batching") or {})
    scaling = dict(args.get("autoscaling") or {})
    max_batch = int(batching.get("max_batch", 32))
    deployment = ModelServer.options(
        # serve.batch can only fill a batch with requests the replica has accepted.
        max_ongoing_requests=max(2 * max_batch, 8),
        autoscaling_config={
            "min_replicas": int(scaling.get("min_replicas", 1)),
            "initial_replicas": max(1, int(scaling.get("min_replicas", 1))),
            "max_replicas": int(scaling.get("max_replicas", 2)),
            "target_ongoing_requests": float(scaling.get("target_ongoing_requests", 16)),
        },
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 0.5))},
    )
    return deployment.bind(model_path, batching, int(args.get("threads", 1)))


def deploy(
    model_path: str | Path, *, name: str, route: str = "/predict", host: str = "127.0.0.1", port: int = 8000,
    batching: dict[str, Any] | None = None, autoscaling: dict[str, Any] | None = None, num_cpus: float = 0.5,
) -> str:
    """Start Serve's HTTP proxy if needed, deploy the app under ``name`` at ``route``; return the URL.

    >>> deploy('runs/mnist-quickstart/export/model.onnx', name='mnist-quickstart', route='/mnist')  # doctest: +SKIP
    'http://127.0.0.1:8000/mnist'
    """
    from ..runtime import hush

    hush()
    serve.start(http_options={"host": host, "port": port})
    hush()  # Serve configures its driver-side logger on start
    app = build_app({"model_path": model_path, "batching": batching, "autoscaling": autoscaling, "num_cpus": num_cpus})
    serve.run(app, name=name, route_prefix=route, blocking=False)
    return f"http://{host}:{port}{route}"
