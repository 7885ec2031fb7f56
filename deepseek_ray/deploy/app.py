"""The Ray Serve application over an exported ONNX model, with adaptive batching and autoscaling.

POST a JSON body ``{"inputs": <one example>}`` (or ``{"inputs": [<example>, ...]}``) to the route;
an example for MNIST is a 28×28 (or flat 784) array of pixel values 0–255. The reply holds the
predicted label, the class probabilities, and the size of the batch the request was served in.
A malformed body is answered 400 with the reason; the replica carries on.

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

from .batching import DynamicBatchScheduler


class BadRequest(ValueError):
    """A payload the model cannot take; its message is returned to the client."""


def parse_inputs(payload: Any, example_shape: tuple[int, ...]) -> np.ndarray:
    """Turn a JSON payload into a float32 array of examples shaped ``(n, *example_shape)``.

    >>> parse_inputs({'inputs': [[0] * 4] * 4}, (1, 4, 4)).shape
    (1, 1, 4, 4)
    >>> parse_inputs({'inputs': [0] * 16}, (1, 4, 4)).shape
    (1, 1, 4, 4)
    """
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest('the body must be a JSON object with the key "inputs"')
    try:
        array = np.asarray(payload["inputs"], dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest('"inputs" must be a (nested) list of numbers') from None
    size = int(np.prod(example_shape))
    if array.size == 0 or array.size % size:
        raise BadRequest(f'"inputs" has {array.size} numbers; each example needs {size} (shape {list(example_shape)})')
    if not np.isfinite(array).all():
        raise BadRequest('"inputs" contains NaN or infinity')
    # One example may come flat, as its own shape, or in a list; more come as a list of those.
    return array.reshape(-1, *example_shape)


@serve.deployment
class ModelServer:
    """One replica: an ONNX Runtime session behind ``serve.batch``, tuned by :class:`DynamicBatchScheduler`."""

    def __init__(self, model_path: str, batching: dict[str, Any] | None = None, threads: int = 1):
        from ..export import onnx_session, read_metadata

        self.meta = read_metadata(model_path)
        self.session = onnx_session(model_path, self.meta.get("optimize_level", 9), threads=threads)
        self.input_name = self.session.get_inputs()[0].name
        self.example_shape = tuple(int(d) for d in self.meta["input_shape"])
        self.labels = self.meta.get("labels") or []
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
            examples = parse_inputs(payload, self.example_shape)
        except BadRequest as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        if len(examples) > self.scheduler.max_batch:
            return JSONResponse({"error": f"at most {self.scheduler.max_batch} examples per request"}, status_code=413)
        answers = await asyncio.gather(*(self.predict(example) for example in examples))
        return JSONResponse(answers[0] if len(answers) == 1 else {"predictions": list(answers)})

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def predict(self, examples: list[np.ndarray]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        probabilities = self.session.run(None, {self.input_name: np.stack(examples)})[0]
        compute_ms = (time.perf_counter() - start) * 1000
        if self.scheduler.observe(len(examples), compute_ms):
            self.predict.set_max_batch_size(self.scheduler.batch_size)
        self.served += len(examples)
        answers = []
        for row in probabilities:
            index = int(row.argmax())
            answers.append({
                "label": self.labels[index] if index < len(self.labels) else index,
                "class_index": index,
                "probabilities": [round(float(p), 6) for p in row],
                "batch_size": len(examples),
            })
        return answers

    def describe(self) -> dict[str, Any]:
        """What a GET on the route returns: the model and the batching state."""
        return {
            "model": self.meta.get("architecture"), "labels": self.labels, "input_shape": list(self.example_shape),
            "sha256": self.meta.get("sha256"), "batch_cap": self.scheduler.batch_size, "served": self.served,
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
