"""The Ray Serve application over an exported ONNX model: two faces of one replica.

**The simple route.** POST ``{"inputs": <one example>}`` (or ``{"inputs": [<example>, ...]}``) as JSON to the
app's route. What an example is, and what the reply holds, is the model's kind's to say (the export
metadata records the kind's class: :class:`~deepseek_ray.data.ImageKind` takes pixel values,
:class:`~deepseek_ray.data.TabularKind` a row ``{column: value}``, :class:`~deepseek_ray.data.TimeSeriesKind`
a window, :class:`~deepseek_ray.data.TextKind` a string or token ids). The reply holds the label and class
probabilities (classification) or the prediction in the target's units, and the size of the batch the
request was served in. GET on the route describes the model and the controller's state.

**The Open Inference Protocol** (KServe V2 REST, as Triton speaks it, binary tensors included) under
``{route}/v2`` (``/v2`` when the route is ``/``): ``health/live``, ``health/ready``, ``models/{name}``,
``models/{name}/ready`` and ``models/{name}/infer``; ``name`` is the app's. Inputs: ``input`` (the model's
tensor, ``[n, *example_shape]``) or, for a text model that exported its tokenizer, ``text`` (``BYTES``).
Outputs: ``probabilities`` and ``class_index`` (classification) or ``prediction`` (regression).

Every request is timed from the replica's receipt; :class:`~deepseek_ray.deploy.DynamicBatchScheduler`
moves ``serve.batch``'s cap and wait to hold the latency threshold and refuses (503, ``Retry-After``) what it
cannot answer within it. A malformed request gets a 4xx with the reason; the replica carries on.

For ``serve run`` / ``serve deploy``: ``deepseek_ray.deploy.app:build_app`` with
``args: {model_path: runs/NAME/export/model.onnx}`` (see ``deployments/serve_mnist.yaml``); a local model is
shipped to the replicas through Ray, a URI (``s3://…``) is fetched by each (:mod:`~deepseek_ray.deploy.shipping`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from ..data.kinds import BadRequest, RequestParser, kind_of
from . import protocol
from .batching import DynamicBatchScheduler
from .metrics import ServingMetrics, since_ms
from .mirror import Mirror
from .shipping import kind_code, local_model, read_model_metadata, ship_model

#: compute shorter than this runs on the event loop; longer goes to the compute thread, so that the loop
#: keeps reading (and shedding) requests meanwhile
INLINE_COMPUTE_MS = 5.0
#: the replica's own Serve settings: our handler runs on the replica's event loop, with no hop to Serve's
#: user-code thread (an ONNX Runtime call took 100-180 µs there against 430-450 µs on that thread)
REPLICA_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
#: how often the next batch's wait is brought up to date while a batch computes in the compute thread
GATHER_REFRESH_S = 0.003


class HTTPError(Exception):
    """A request answered with ``status`` and ``{"error": reason}`` (the Open Inference Protocol's form too)."""

    def __init__(self, status: int, reason: str, headers: dict[str, str] | None = None):
        super().__init__(reason)
        self.status = status
        self.headers = headers or {}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """``body`` as JSON (orjson: numpy scalars and arrays too)."""
    content = orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(content, status_code=status, headers=headers, media_type="application/json")


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


def _model_specific(inputs: Any) -> bool:
    """Whether a request's inputs are text or table rows, which each model parses its own way (its tokenizer,
    its fitted transform), rather than numbers, which parse the same for any model of the same input shape.

    >>> _model_specific('a review'), _model_specific([{'bill_length_mm': 39.1}]), _model_specific([[0.5, 1.0]])
    (True, True, False)
    """
    first = inputs
    while isinstance(first, list) and first:
        first = first[0]
    return isinstance(first, (str, dict))


def _inputs_of(payload: Any) -> Any:
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest('the body must be a JSON object with the key "inputs"')
    return payload["inputs"]


@serve.deployment
class ModelServer:
    """One replica: an ONNX Runtime session or a ``torch.export`` program
    (:func:`~deepseek_ray.export.serving_session`) behind ``serve.batch``, tuned by :class:`DynamicBatchScheduler`."""

    def __init__(
        self,
        model_path: str,
        name: str = "model",
        route: str = "/",
        batching: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        threads: int = 1,
        gpu: bool = False,
        shadow: dict[str, Any] | None = None,
        build_args: dict[str, Any] | None = None,
        precision: str = "fp32",
        cuda_graphs: bool = True,
    ):
        from ..export import read_metadata, serving_session

        model_path = str(local_model(model_path))
        self.name = name
        self.meta = read_metadata(model_path)
        batching = batching or {}
        graph_batches = int(batching.get("max_batch", 32)) if cuda_graphs else 0
        self.session = serving_session(
            model_path, self.meta.get("optimize_level", 9), threads, gpu, precision, graph_batches
        )
        # the Open Inference Protocol's platform names, as Triton gives them
        self.platform = "pytorch_libtorch" if model_path.endswith(".pt2") else "onnxruntime_onnx"
        self.precision = precision
        self.input_name = self.session.get_inputs()[0].name
        self.kind = kind_of(self.meta)
        self.parser = request_parser(self.meta, self.session, model_path)
        self.inputs = self.kind.tensor_metadata(self.meta, self.parser.dtype)
        self.outputs = self._output_metadata()
        self.limits = {"max_body_bytes": 4 * 2**20, "max_examples": 256, "timeout_s": 30.0, **(limits or {})}
        self.scheduler = DynamicBatchScheduler(
            min_batch=int(batching.get("min_batch", 1)),
            max_batch=int(batching.get("max_batch", 32)),
            latency_threshold=float(batching.get("latency_threshold_ms", 100.0)),
            adaptive=bool(batching.get("adaptive", True)),
            fixed_wait_ms=float(batching.get("wait_ms", 10.0)),
        )
        self.metrics = ServingMetrics(route, self.scheduler.latency_threshold)
        # A torch program dispatches each op under the GIL, so in the compute thread it would contend with the
        # loop for it (on one H200 its batches took several times their offline time there): it runs on the loop.
        self._inline_ms = math.inf if self.platform == "pytorch_libtorch" else INLINE_COMPUTE_MS
        self._compute_thread = ThreadPoolExecutor(1, thread_name_prefix="onnxruntime")
        self._drill = (0.0, 0.0, False)  # extra ms per batch and per example, and failing (slow_down_for_drill)
        self.served = 0
        self._sampler: asyncio.Task | None = None
        # A candidate holds its shadow session's settings; a live replica mirrors to the candidate.
        self.shadow = shadow
        self.build_args = build_args or {}
        self.shadow_traffic = (
            None
            if shadow is not None
            else Mirror(_replica_context("app_name", name), _replica_context("replica_tag", uuid.uuid4().hex[:8]))
        )
        self._mirroring: asyncio.Task | None = None
        if self.shadow_traffic is not None:  # followed from the start, so a replica's first request is mirrored
            with contextlib.suppress(RuntimeError):  # Serve builds a replica on its loop; without one, at a request
                self._mirroring = asyncio.get_running_loop().create_task(self.shadow_traffic.keep_settings())
        self._apply_controller()

    # ------------------------------------------------------------------------------------ dispatch
    async def __call__(self, request: Request) -> Response:
        received = time.perf_counter()
        if self._sampler is None:  # the replica's first request
            self._sampler = asyncio.create_task(self._sample_controller())
            if self._mirroring is None and self.shadow_traffic is not None:  # built without an event loop
                self._mirroring = asyncio.create_task(self.shadow_traffic.keep_settings())
        scope = request.scope
        path = scope["path"][len(scope.get("root_path", "")) :].rstrip("/")
        face = "v2" if path.startswith("/v2") else "feedback" if path == "/feedback" else "simple"
        # Serve's ingress sets x-request-id (keeping the client's) and returns it: the key of the shadow log
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        try:
            if face == "v2":
                response = await self._v2(request, path[3:], request_id)
            elif face == "feedback":
                response = await self._feedback(request)
            else:
                response = await self._simple(request, request_id)
        except HTTPError as err:
            response = json_response({"error": str(err)}, err.status, err.headers)
        except (BadRequest, protocol.ProtocolError) as err:
            response = json_response({"error": str(err)}, getattr(err, "status", 400))
        latency_ms = since_ms(received)
        response.headers["server-timing"] = f"replica;dur={latency_ms:.2f}"  # W3C Server-Timing: the time inside
        self.metrics.record(face, response.status_code, latency_ms)
        if response.status_code < 300:
            self.scheduler.observe_latency(latency_ms)
        return response

    async def _simple(self, request: Request, request_id: str) -> Response:
        if request.method == "GET":
            return json_response(self.describe())
        if request.method != "POST":
            raise HTTPError(405, f"{request.method} is not served here: POST a JSON body, or GET the description")
        self._refuse_if_full()
        body = await self._body(request, ("application/json",))
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            raise HTTPError(400, f"the body is not valid JSON: {err}") from None
        inputs = _inputs_of(payload)
        examples = self.parser(inputs)
        rows, batch_sizes = await self._infer(examples, request_id, inputs if _model_specific(inputs) else None)
        answers = [
            {**self.kind.reply(row, self.meta), "batch_size": size} for row, size in zip(rows, batch_sizes, strict=True)
        ]
        return json_response(answers[0] if len(answers) == 1 else {"predictions": answers})

    async def _body(self, request: Request, content_types: tuple[str, ...]) -> bytes:
        """The body, refused early when it has the wrong content type or is larger than the limit."""
        content_type = request.headers.get("content-type", content_types[0]).split(";")[0].strip().lower()
        if content_type not in content_types:
            raise HTTPError(
                415, f"content type {content_type!r} is not accepted here; send {' or '.join(content_types)}"
            )
        limit = self.limits["max_body_bytes"]
        declared = request.headers.get("content-length", "0")
        if not declared.isdigit():
            raise HTTPError(400, f"content-length {declared!r} is not a number of bytes")
        if int(declared) > limit:
            raise HTTPError(413, f"the body has {declared} bytes; at most {limit} are accepted")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, f"the body is over {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    # ----------------------------------------------------------------------------------- inference
    async def _infer(
        self, examples: np.ndarray, request_id: str | None = None, inputs: Any = None
    ) -> tuple[list[np.ndarray], list[int]]:
        """Model outputs for ``examples``, each with the size of the batch it was computed in. A live replica
        then offers the request to its shadow (never delaying the answer): ``inputs`` as the client sent them
        when the candidate must parse them itself (text, rows), else the parsed ``examples``."""
        rows, sizes = await self._answer(examples)
        if self.shadow_traffic is not None and request_id is not None:
            self.shadow_traffic.offer(request_id, examples if inputs is None else inputs, rows)
        return rows, sizes

    async def _answer(self, examples: np.ndarray, *, shed: bool = True) -> tuple[list[np.ndarray], list[int]]:
        count = len(examples)
        if count > self.limits["max_examples"]:
            raise HTTPError(413, f"{count} examples in one request; at most {self.limits['max_examples']}")
        if not self.scheduler.admit(count, shed=shed):
            raise self._over_capacity()
        try:
            async with asyncio.timeout(self.limits["timeout_s"]):
                if self.scheduler.max_batch == 1:
                    outputs = await self._compute(examples)
                    return list(outputs), [count] * count
                if count == 1:  # most requests: no gather task around the one call
                    answers = [await self.predict(examples[0])]
                else:
                    answers = await asyncio.gather(*(self.predict(example) for example in examples))
        except TimeoutError:
            raise HTTPError(504, f"not answered within the request timeout ({self.limits['timeout_s']:g} s)") from None
        finally:
            self.scheduler.answered(count)
        return [row for row, _ in answers], [size for _, size in answers]

    def _refuse_if_full(self, size: int = 1) -> None:
        """503 with ``Retry-After`` when ``size`` more examples would not be answered within the threshold."""
        if self.scheduler.full(size):
            raise self._over_capacity()

    def _over_capacity(self) -> HTTPError:
        return HTTPError(
            503,
            f"over capacity: this request would not be answered within {self.scheduler.latency_threshold:g} ms",
            {"Retry-After": str(self.scheduler.retry_after_s())},
        )

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.0)
    async def predict(self, examples: list[np.ndarray]) -> list[tuple[np.ndarray, int]]:
        outputs = await self._compute(np.stack(examples))
        return [(row, len(examples)) for row in outputs]

    async def _compute(self, batch: np.ndarray) -> np.ndarray:
        size = len(batch)
        self.scheduler.started_batch(size)
        if self.scheduler.batch_ms(size) < self._inline_ms and not any(self._drill):
            outputs, compute_ms = self._run(batch)  # the loop is held: the next batch gathers what came meanwhile
        else:
            running = asyncio.get_running_loop().run_in_executor(self._compute_thread, self._run, batch)
            while not running.done():  # the next batch gathers until this one ends
                self._batcher.set_batch_wait_timeout_s(self.scheduler.gather_while_computing())
                await asyncio.wait([running], timeout=GATHER_REFRESH_S)
            outputs, compute_ms = running.result()
        if self.scheduler.observe_batch(size, compute_ms):
            self._apply_controller()
        self._batcher.set_batch_wait_timeout_s(self.scheduler.gather_while_computing(computed=size))
        self.served += size
        return outputs

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, float]:
        """The model's outputs, and the milliseconds they took (timed here: no event-loop delay in them)."""
        start = time.perf_counter()
        per_batch, per_example, fail = self._drill
        if per_batch or per_example:
            time.sleep((per_batch + per_example * len(batch)) / 1000)
        if fail:
            raise RuntimeError("this replica fails every batch (slow_down_for_drill(fail=True))")
        return self.session.run(None, {self.input_name: batch})[0], since_ms(start)

    @property
    def _batcher(self) -> Any:
        """``predict`` as ``serve.batch`` made it: its setters are added at run time, not in Ray's type hints."""
        return self.predict

    def _apply_controller(self) -> None:
        self._batcher.set_max_batch_size(self.scheduler.batch_size)
        self._batcher.set_batch_wait_timeout_s(self.scheduler.wait_timeout_s)

    async def _sample_controller(self) -> None:
        """The controller's gauges, each second (Serve's replica context is set by then)."""
        scheduler = self.scheduler
        while True:
            busy_wait_s = (
                scheduler.batch_ms(scheduler.batch_size) / 1000 if scheduler.adaptive else scheduler.wait_timeout_s
            )
            self.metrics.controller(scheduler.batch_size, busy_wait_s, scheduler.budget_ms * scheduler.safety)
            await asyncio.sleep(1.0)

    async def slow_down_for_drill(
        self, per_batch_ms: float = 0.0, per_example_ms: float = 0.0, fail: bool = False
    ) -> dict[str, Any]:
        """A drill, reachable through a deployment handle only (never from HTTP or the experiment file): every
        batch takes this much longer from now on, or raises (0, 0, False restores the model). Returns the
        controller state."""
        self._drill = (float(per_batch_ms), float(per_example_ms), bool(fail))
        return self.controller_state()

    # --------------------------------------------------------------------------------- shadow
    async def mirror(self, requests: list[Any]) -> list[np.ndarray | str | None]:
        """The candidate's side of shadow traffic (through its handle): for each mirrored request's inputs, parsed
        here (a numeric tensor, from the Open Inference Protocol, is taken as it is), the outputs; None for a
        request this model cannot parse. Mirrored work is bounded by the live side's in-flight cap, so it is not
        shed by the latency target (that would only throw evidence away); past the request timeout each is
        ``"dropped"`` (the candidate lags: the live side counts those as dropped, not as its errors)."""
        parsed: list[np.ndarray | None] = []
        for inputs in requests:
            try:
                numeric = isinstance(inputs, np.ndarray) and inputs.dtype.kind in "iuf"
                parsed.append(self.parser.numbers(inputs) if numeric else self.parser(inputs))
            except BadRequest:
                parsed.append(None)
        examples = [p for p in parsed if p is not None]
        if not examples:
            return [None] * len(parsed)
        try:
            rows, _ = await self._answer(np.concatenate(examples), shed=False)
        except HTTPError as err:
            if err.status != 504:
                raise
            return ["dropped" if p is not None else None for p in parsed]
        outputs: list[np.ndarray | str | None] = []
        start = 0
        for p in parsed:
            outputs.append(None if p is None else np.stack(rows[start : start + len(p)]))
            start += 0 if p is None else len(p)
        return outputs

    def shadow_settings(self) -> dict[str, Any] | None:
        """The candidate's shadow session (fraction, max_in_flight, timeout_s, log_dir, model, version, ...);
        None on a live replica."""
        return self.shadow

    def mirror_counts(self) -> dict[str, int]:
        """This live replica's mirrored, answered, dropped and failed counts (since it started)."""
        return dict(self.shadow_traffic.counts) if self.shadow_traffic is not None else {}

    def deployed_with(self) -> dict[str, Any]:
        """The arguments :func:`build_app` was given for this app (promotion redeploys with a new model)."""
        return self.build_args

    async def _feedback(self, request: Request) -> Response:
        """``POST {route}/feedback``: ground truth by request id, ``{"request_id": ..., "label": ...}`` or
        ``{"labels": [{"request_id": ..., "label": ...}, ...]}``. Labels of ids the log holds are recorded, the
        others listed (a client labels every request it sent; only the mirrored share is in the log); 404 when
        none is there."""
        if request.method != "POST":
            raise HTTPError(405, "POST labels to /feedback")
        mirror = self.shadow_traffic
        if mirror is None or mirror.log is None:
            raise HTTPError(404, f"no shadow session is running for {self.name!r}: nothing to label")
        try:
            payload = orjson.loads(await self._body(request, ("application/json",)))
        except orjson.JSONDecodeError as err:
            raise HTTPError(400, f"the body is not valid JSON: {err}") from None
        items = payload.get("labels", [payload]) if isinstance(payload, dict) else None
        if (
            not isinstance(items, list)
            or not items
            or not all(isinstance(i, dict) and isinstance(i.get("request_id"), str) and "label" in i for i in items)
        ):
            raise BadRequest(
                'send {"request_id": "...", "label": ...} or {"labels": [{"request_id": ..., "label": ...}]}'
            )
        ids = [item["request_id"] for item in items]
        labels = [self._label_value(item["label"]) for item in items]
        unknown = set(await mirror.unknown(ids))
        if len(unknown) == len(ids):
            shown = ", ".join(sorted(unknown)[:5]) + (" ..." if len(unknown) > 5 else "")
            raise HTTPError(
                404,
                f"not in the shadow log (not mirrored, or from before this session): {shown}; nothing was recorded",
            )
        known = [(i, label) for i, label in zip(ids, labels, strict=True) if i not in unknown]
        mirror.label([i for i, _ in known], [label for _, label in known])
        return json_response({"recorded": len(known), "not_mirrored": sorted(unknown)})

    def _label_value(self, label: Any) -> float:
        """A label as the log keeps it: a class index (from the index or the class name), or the target."""
        names = self.meta.get("labels") or []
        if self.meta.get("task") == "regression":
            if isinstance(label, (int, float)) and not isinstance(label, bool):
                return float(label)
            raise BadRequest(f"label {label!r}: this model predicts a number")
        if isinstance(label, str) and label in names:
            return float(names.index(label))
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(names):
            return float(label)
        raise BadRequest(f"label {label!r}: one of {names} or its index 0..{len(names) - 1}")

    def controller_state(self) -> dict[str, Any]:
        """The latency controller's cap, wait, budget and cost model now."""
        scheduler = self.scheduler
        return {
            "batch_cap": scheduler.batch_size,
            "wait_ms": round(scheduler.wait_timeout_s * 1000, 3),
            "budget_ms": round(scheduler.budget_ms, 3),
            "full_batch_ms": round(scheduler.batch_ms(scheduler.batch_size), 3),
            "pending": scheduler.pending,
            "safety": round(scheduler.safety, 3),
            "window_p99_ms": None if scheduler.window_p99_ms is None else round(scheduler.window_p99_ms, 3),
        }

    def describe(self) -> dict[str, Any]:
        """What a GET on the route returns: the model, what it takes, and the batching state."""
        spec = self.parser.spec
        return {
            "model": self.meta.get("architecture"),
            "name": self.name,
            "kind": self.kind.name,
            "task": self.meta.get("task", "classification"),
            "labels": self.meta.get("labels") or [],
            "input_shape": list(self.parser.example_shape),
            "input_dtype": np.dtype(self.parser.dtype).name,
            "accepts_text": self.parser.accepts_text,
            "columns": spec.get("columns"),
            "inputs": self.inputs,
            "outputs": self.outputs,
            "sha256": self.meta.get("sha256"),
            "quantization": (self.meta.get("quantization") or {}).get("type"),
            "platform": self.platform,
            "precision": self.precision,
            "cuda_graphs": getattr(self.session, "graphs", None) is not None,
            "batch_cap": self.scheduler.batch_size,
            "controller": self.controller_state(),
            "limits": self.limits,
            "served": self.served,
        }

    # ----------------------------------------------------------------------- Open Inference Protocol
    def _output_metadata(self) -> list[dict[str, Any]]:
        shape = [-1, *(int(d) if isinstance(d, int) else -1 for d in self.session.get_outputs()[0].shape[1:])]
        if self.meta.get("task") == "regression":
            return [{"name": "prediction", "datatype": "FP32", "shape": shape}]
        return [
            {"name": "probabilities", "datatype": "FP32", "shape": shape},
            {"name": "class_index", "datatype": "INT64", "shape": [-1]},
        ]

    async def _v2(self, request: Request, path: str, request_id: str) -> Response:
        if path == "":
            return json_response(protocol.server_metadata("deepseek_ray", _version(), ["binary_tensor_data"]))
        if path in ("/health/live", "/health/ready"):
            return json_response({"live": True} if path.endswith("live") else {"ready": True})
        parts = path.split("/")[1:]  # models, name, [versions, v,] rest
        if parts[0] != "models" or len(parts) < 2:
            raise HTTPError(404, f"no Open Inference Protocol route /v2{path}")
        if parts[1] != self.name:
            raise HTTPError(404, f"no model {parts[1]!r} here; this endpoint serves {self.name!r}")
        rest = parts[4:] if parts[2:3] == ["versions"] else parts[2:]
        if rest == [] and request.method == "GET":
            metadata = protocol.model_metadata(
                self.name, self.inputs, self.outputs, versions=["1"], platform=self.platform
            )
            return json_response(metadata)
        if rest == ["ready"]:
            return json_response({"name": self.name, "ready": True})
        if rest == ["infer"] and request.method == "POST":
            return await self._v2_infer(request, request_id)
        raise HTTPError(405 if rest in ([], ["infer"]) else 404, f"{request.method} /v2{path} is not served here")

    async def _v2_infer(self, request: Request, request_id: str) -> Response:
        self._refuse_if_full()
        body = await self._body(request, ("application/json", "application/octet-stream"))
        header = request.headers.get("inference-header-content-length")
        if header is not None and not header.isdigit():
            raise HTTPError(400, f"Inference-Header-Content-Length {header!r} is not a number of bytes")
        size = int(np.prod(self.parser.example_shape))
        infer = protocol.decode_infer_request(
            body, None if header is None else int(header), max_elements=self.limits["max_examples"] * size
        )
        examples = self._v2_examples(infer)
        # text goes to a shadow candidate as sent (its tokenizer may differ); a tensor as parsed
        rows, _ = await self._infer(examples, request_id, infer.inputs.get("text"))
        outputs = self._v2_outputs(np.stack(rows), infer.outputs)
        content, headers = protocol.encode_infer_response(
            self.name, outputs, request_id=infer.id, model_version="1", binary=infer.binary_for(outputs)
        )
        return Response(content, headers=headers)

    def _v2_examples(self, infer: protocol.InferRequest) -> np.ndarray:
        declared = {tensor["name"]: tensor for tensor in self.inputs}
        names = sorted(infer.inputs)
        if len(names) != 1 or names[0] not in declared:
            raise BadRequest(f"send exactly one input tensor, one of {sorted(declared)}; got {names}")
        name = names[0]
        tensor, datatype, shape = infer.inputs[name], infer.datatypes[name], infer.shapes[name]
        if datatype != declared[name]["datatype"]:
            raise BadRequest(f"input {name!r} is {datatype}; this model takes {declared[name]['datatype']}")
        if name == "text":
            return self.parser(tensor)  # strings: a candidate parses them with its own tokenizer
        if list(shape[1:]) != list(self.parser.example_shape):
            wanted = ", ".join(map(str, self.parser.example_shape))
            raise BadRequest(f"input {name!r} has shape {shape}; this model takes [n, {wanted}]")
        return self.parser.numbers(tensor)

    def _v2_outputs(self, rows: np.ndarray, wanted: list[str] | None) -> dict[str, np.ndarray]:
        if self.meta.get("task") == "regression":
            outputs = {"prediction": rows.astype(np.float32)}
        else:
            outputs = {"probabilities": rows.astype(np.float32), "class_index": rows.argmax(axis=1).astype(np.int64)}
        if wanted is None:
            return outputs
        unknown = sorted(set(wanted) - set(outputs))
        if unknown:
            raise BadRequest(f"no output {unknown}; this model has {sorted(outputs)}")
        return {name: outputs[name] for name in wanted}


def _replica_context(field: str, otherwise: str) -> str:
    """A field of this replica's Serve context (``app_name``, ``replica_tag``), or ``otherwise`` outside Serve."""
    try:
        return str(getattr(serve.get_replica_context(), field))
    except Exception:  # outside Serve (a test building the class directly)
        return otherwise


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deepseek-ray")
    except PackageNotFoundError:  # pragma: no cover - a source checkout not installed
        return "0"


_AUTOSCALING_OURS = ("min_replicas", "max_replicas", "target_ongoing_requests", "upscale_delay_s", "downscale_delay_s")


def build_app(args: dict[str, Any]) -> serve.Application:
    """Serve's application builder (``serve run deepseek_ray.deploy.app:build_app model_path=...``).

    ``args``: ``model_path``, and optionally ``name`` (the model's name in the Open Inference Protocol),
    ``route``, ``batching`` (min_batch, max_batch, latency_threshold_ms, adaptive, wait_ms), ``limits``
    (max_body_bytes, max_examples, timeout_s), ``autoscaling`` (min_replicas, max_replicas,
    target_ongoing_requests, upscale_delay_s, downscale_delay_s), ``num_cpus``, ``num_gpus``, ``threads``,
    ``precision``, ``cuda_graphs``, ``max_queued_requests``, ``access_log``; the experiment file's ``serve``
    section spells them the same. ``model_path`` is an ``.onnx`` file, a ``.pt2`` program
    (``export.formats: [torch_export]``: served by torch, on the replica's GPU when ``num_gpus`` > 0) or a
    registered version (``models:/NAME@champion``, read from ``tracking_uri``).

    >>> build_app({'model_path': 'runs/mnist-quickstart/export/model.onnx'})  # needs Ray  # doctest: +SKIP
    """
    if "model_path" not in args:
        raise ValueError("build_app needs args.model_path (an exported .onnx file, or a models:/ URI)")
    model_path = local_model_path(str(args["model_path"]), args.get("tracking_uri"))
    meta = read_model_metadata(model_path)
    replica_path, runtime_env = ship_model(model_path, meta)
    runtime_env.update(kind_code(meta))
    runtime_env["env_vars"] = dict(REPLICA_ENV)
    batching = dict(args.get("batching") or {})
    scaling = dict(args.get("autoscaling") or {})
    max_batch = int(batching.get("max_batch", 32))
    min_replicas = int(scaling.get("min_replicas", 1))
    num_gpus = float(args.get("num_gpus", 0.0))
    deployment = ModelServer.options(  # type: ignore[attr-defined]  # a Deployment once @serve.deployment ran
        # Requests wait inside the replica, where they are timed and shed, rather than in Serve's queue.
        max_ongoing_requests=max(4 * max_batch, 32),
        max_queued_requests=int(args.get("max_queued_requests", 64)),
        backpressure_config={"status_code": 503, "retry_after_s": 1},
        autoscaling_config={
            "min_replicas": min_replicas,
            "initial_replicas": max(1, min_replicas),
            "max_replicas": int(scaling.get("max_replicas", 2)),
            "target_ongoing_requests": float(scaling.get("target_ongoing_requests", 16)),
            "upscale_delay_s": float(scaling.get("upscale_delay_s", 10.0)),
            "downscale_delay_s": float(scaling.get("downscale_delay_s", 60.0)),
            # the rest of Serve's autoscaling_config as given (metrics_interval_s, look_back_period_s, ...)
            **{key: value for key, value in scaling.items() if key not in _AUTOSCALING_OURS},
        },
        logging_config={"enable_access_log": bool(args.get("access_log", False))},
        max_surge_percent=100,  # a redeploy (a promotion) keeps the old replicas serving until the new are up
        ray_actor_options={
            "num_cpus": float(args.get("num_cpus", 0.5)),
            "num_gpus": num_gpus,
            "runtime_env": runtime_env,
        },
    )
    return deployment.bind(
        replica_path,
        str(args.get("name") or "model"),
        str(args.get("route") or "/"),
        batching,
        dict(args.get("limits") or {}),
        int(args.get("threads", 1)),
        num_gpus > 0,
        args.get("shadow_session"),
        {key: value for key, value in args.items() if key != "shadow_session"},
        str(args.get("precision", "fp32")),
        bool(args.get("cuda_graphs", True)),
    )


def tracking_uri_of(uri: str | None = None) -> str:
    """The MLflow store's URI as every process reads it: ``uri``, else ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///mlflow.db``; a relative sqlite path made absolute (replicas run in other folders).

    >>> tracking_uri_of('sqlite:////srv/mlflow.db')
    'sqlite:////srv/mlflow.db'
    """
    import os

    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def local_model_path(model_path: str, tracking_uri: str | None = None) -> str:
    """A model path serving can ship: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` read from the
    registry; a file or URI as it is.

    >>> local_model_path('runs/mnist/export/model.onnx')
    'runs/mnist/export/model.onnx'
    """
    from ..tracking.registry import is_registry_uri, resolve_model

    if not is_registry_uri(model_path):
        return model_path
    return str(resolve_model(model_path, tracking_uri_of(tracking_uri))[0])


def deploy(
    model_path: str | Path,
    *,
    name: str,
    route: str = "/predict",
    host: str = "127.0.0.1",
    port: int = 8000,
    **settings: Any,
) -> str:
    """Start Serve's HTTP proxy if needed, deploy the app under ``name`` at ``route``; return the URL.

    ``settings``: as :func:`build_app`'s args (``batching``, ``limits``, ``autoscaling``, ``num_cpus``,
    ``tracking_uri``, ...), and ``shadow`` (the experiment file's ``serve.shadow``: with a ``candidate``, a shadow
    session starts beside the live app, :func:`~deepseek_ray.deploy.shadow.start_shadow`).

    >>> deploy('runs/mnist-quickstart/export/model.onnx', name='mnist-quickstart',
    ...        route='/mnist')  # needs Serve  # doctest: +SKIP
    'http://127.0.0.1:8000/mnist'
    """
    from ..runtime import hush

    hush()
    _warn_if_slow_path(str(settings.pop("ingress", "proxy")))
    shadow = dict(settings.pop("shadow", None) or {})
    timeout = float((settings.get("limits") or {}).get("timeout_s", 30.0))
    # Serve's own timeout is a backstop behind the replica's, which answers 504 with the reason first.
    serve.start(http_options={"host": host, "port": port, "request_timeout_s": timeout + 5})
    hush()  # Serve configures its driver-side logger on start
    app = build_app({"model_path": str(model_path), "name": name, "route": route, **settings})
    serve.run(app, name=name, route_prefix=route, blocking=False)
    candidate = shadow.pop("candidate", None)
    if candidate:
        from .shadow import start_shadow

        shadow.pop("new_model", None)
        start_shadow(name, candidate, tracking_uri=settings.get("tracking_uri"), **shadow)
    return f"http://{host}:{port}{route}"


def missing_serve_settings(ingress: str = "proxy") -> dict[str, str]:
    """Of :func:`~deepseek_ray.runtime.serve_settings`, those the cluster's processes lack (as a Ray task sees
    its node's environment), by name with the value wanted.

    >>> missing_serve_settings('haproxy')  # needs Ray  # doctest: +SKIP
    {'RAY_SERVE_ENABLE_HA_PROXY': '1'}
    """
    import os

    import ray

    from ..runtime import HAPROXY_THREADS, serve_settings

    wanted = serve_settings(ingress)

    @ray.remote(num_cpus=0)
    def environment(names: list[str]) -> dict[str, str | None]:
        return {name: os.environ.get(name) for name in names}

    seen = ray.get(environment.remote(list(wanted)))
    return {
        name: value
        for name, value in wanted.items()
        if seen.get(name) != value and not (name == HAPROXY_THREADS and seen.get(name))
    }


def _warn_if_slow_path(ingress: str) -> None:
    import logging

    missing = missing_serve_settings(ingress)
    if missing:
        settings = " ".join(f"{name}={value}" for name, value in missing.items())
        logging.getLogger(__name__).warning(
            "this cluster's Serve runs without %s: requests take the slower path (set them where Ray starts: "
            "cluster.yaml's ray start commands, the KubeRay manifest's env)",
            settings,
        )
