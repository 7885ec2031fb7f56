"""A BentoML 1.4 service over the same ONNX file, with BentoML's adaptive batching at the benchmark's latency
threshold. It runs in its own virtual environment (never the project's): it parses with numpy itself (the
project's parser is not installed there) and answers probabilities as a JSON list.

    BENCH_MODEL_PATH=... BENCH_INPUT_SHAPE=1,28,28 BENCH_WORKERS=1 BENCH_MAX_BATCH=32 BENCH_MAX_LATENCY_MS=100 \\
        /tmp/bento-venv/bin/bentoml serve bento_service:Model --host 127.0.0.1 --port 8620
A request is a batch of one: ``{"inputs": [<one example>]}``.
"""

from __future__ import annotations

import os

import bentoml
import numpy as np

SHAPE = tuple(int(d) for d in os.environ["BENCH_INPUT_SHAPE"].split(","))


@bentoml.service(
    workers=int(os.environ.get("BENCH_WORKERS", "1")), traffic={"timeout": 30}, logging={"access": {"enabled": False}}
)
class Model:
    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(os.environ.get("BENCH_THREADS", "1"))
        options.inter_op_num_threads = 1
        providers = os.environ.get("BENCH_PROVIDERS", "CPUExecutionProvider").split(",")
        self.session = ort.InferenceSession(os.environ["BENCH_MODEL_PATH"], options, providers=providers)
        first = self.session.get_inputs()[0]
        self.name = first.name
        self.dtype = np.int64 if "int64" in first.type else np.float32

    @bentoml.api(
        batchable=True,
        max_batch_size=int(os.environ.get("BENCH_MAX_BATCH", "32")),
        max_latency_ms=int(os.environ.get("BENCH_MAX_LATENCY_MS", "100")),
    )
    def predict(self, inputs: np.ndarray) -> np.ndarray:
        batch = np.asarray(inputs).reshape(-1, *SHAPE).astype(self.dtype, copy=False)
        return self.session.run(None, {self.name: batch})[0]
