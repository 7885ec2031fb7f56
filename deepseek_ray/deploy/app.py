"""The Ray Serve application over an exported ONNX model, with adaptive batching and autoscaling.

POST a JSON body ``{"inputs": <one example>}`` (or ``{"inputs": [<example>, ...]}``) to the route. What an
example is, and what the reply holds, is the model's kind's to say (the export metadata records the kind's
class: :class:`~deepseek_ray.data.ImageKind` takes pixel values, :class:`~deepseek_ray.data.TabularKind` a row
``{column: value}``, :class:`~deepseek_ray.data.TimeSeriesKind` a window, :class:`~deepseek_ray.data.TextKind` a
string or token ids); shapes and dtype are checked against the ONNX model's input.

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
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from ..data.kinds import BadRequest, RequestParser, kind_of
from .batching import DynamicBatchScheduler


def _inputs_of(payload: Any) -> Any:
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest('the body must be a JSON object with the key "inputs"')
    return payload["inputs"]


def request_parser(meta: dict[str, Any], session: Any, model_path: str | Path) -> RequestParser:
    """The model's kind's request parser, after checking the metadata against the ONNX model's input."""
    from ..export import input_dtype

    declared = session.get_inputs()[0]
    example_shape = tuple(int(d) for d in meta["input_shape"])
    fixed = list(declared.shape[1:])
    if len(fixed) != len(example_shape) or any(
        isinstance(f, int) and f != e for f, e in zip(fixed, example_shape, strict=True)
    ):
        raise ValueError(
            f"{model_path}: the metadata's input_shape {list(example_shape)} does not fit the ONNX "
            f"input {declared.name!r} of shape {declared.shape}"
        )
    return kind_of(meta).request_parser(meta, input_dtype(session), Path(model_path).parent)


@serve.deployment
class ModelServer:
    """One replica: an ONNX Runtime session behind ``serve.batch``, tuned by :class:`DynamicBatchScheduler`."""

    def __init__(self, model_path: str, batching: dict[str, Any] | None = None, threads: int = 1):
        from ..export import onnx_session, read_metadata

        self.meta = read_metadata(model_path)
        self.session = onnx_session(model_path, self.meta.get("optimize_level", 9), threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.kind = kind_of(self.meta)
        self.parser = request_parser(self.meta, self.session, model_path)
        batching = batching or {}
        self.scheduler = DynamicBatchScheduler(
            min_batch=batching.get("min_batch", 1),
            max_batch=batching.get("max_batch", 32),
            latency_threshold=batching.get("latency_threshold_ms", 100.0),
        )
        self._batcher.set_max_batch_size(self.scheduler.batch_size)
        self._batcher.set_batch_wait_timeout_s(self.scheduler.wait_timeout_s)
        self.served = 0

    @property
    def _batcher(self) -> Any:
        """``predict`` as ``serve.batch`` made it: its setters are added at run time, not in Ray's type hints."""
        return self.predict

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse(self.describe())
        try:
            payload = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return JSONResponse({"error": f"the body is not valid JSON: {err}"}, status_code=400)
        try:
            examples = self.parser(_inputs_of(payload))
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
            self._batcher.set_max_batch_size(self.scheduler.batch_size)
        self.served += len(examples)
        return [{**self.kind.reply(row, self.meta), "batch_size": len(examples)} for row in outputs]

    def describe(self) -> dict[str, Any]:
        """What a GET on the route returns: the model, what it takes, and the batching state."""
        spec = self.parser.spec
        return {
            "model": self.meta.get("architecture"),
            "kind": self.kind.name,
            "task": self.meta.get("task", "classification"),
            "labels": self.meta.get("labels") or [],
            "input_shape": list(self.parser.example_shape),
            "input_dtype": np.dtype(self.parser.dtype).name,
            "accepts_text": self.parser.accepts_text,
            "columns": spec.get("columns"),
            "inputs": self.kind.tensor_metadata(self.meta, self.parser.dtype),
            "sha256": self.meta.get("sha256"),
            "quantization": (self.meta.get("quantization") or {}).get("type"),
            "batch_cap": self.scheduler.batch_size,
            "served": self.served,
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
    deployment = ModelServer.options(  # type: ignore[attr-defined]  # a Deployment once @serve.deployment ran
        # serve.batch can only fill a batch with requests the replica has accepted.
        max_ongoing_requests=max(2 * max_batch, 8),
        autoscaling_config={
            "min_replicas": int(scaling.get("min_replicas", 1)),
            "initial_replicas": max(1, int(scaling.get("min_replicas", 1))),
            "max_replicas": int(scaling.get("max_replicas", 2)),
            "target_ongoing_requests": float(scaling.get("target_ongoing_requests", 16)),
        },
        ray_actor_options={"num_cpus": float(args.get("num_cpus", 0.5)), **_kind_code(model_path)},
    )
    return deployment.bind(model_path, batching, int(args.get("threads", 1)))


def _kind_code(model_path: str) -> dict[str, Any]:
    """For a model whose kind is defined outside this package and outside any installed package (a plugin
    module in the user's project), the replicas' ``runtime_env`` ships that module's top-level package
    (Ray's ``py_modules``), so that a replica on any node imports it; ``{}`` otherwise."""
    import importlib
    import sysconfig

    from ..export import read_metadata
    from ..ray_compat import uploaded_py_modules

    module = str(read_metadata(model_path).get("kind_class") or "").partition(":")[0]
    top = module.split(".")[0]
    if not top or top == __name__.split(".")[0]:
        return {}
    package = importlib.import_module(top)
    where = Path(getattr(package, "__file__", None) or next(iter(package.__path__)))
    installed = Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])
    if any(where.is_relative_to(site) for site in installed):
        return {}  # an installed package: the nodes' environment has it
    uris = uploaded_py_modules([str(where.parent if where.name == "__init__.py" else where)])
    return {"runtime_env": {"py_modules": uris}} if uris else {}


def deploy(
    model_path: str | Path,
    *,
    name: str,
    route: str = "/predict",
    host: str = "127.0.0.1",
    port: int = 8000,
    batching: dict[str, Any] | None = None,
    autoscaling: dict[str, Any] | None = None,
    num_cpus: float = 0.5,
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
