"""FastAPI + uvicorn over the project's own request parser and ONNX Runtime session: the peer the Serve app
must match. One process per uvicorn worker, compute inline on the event loop, no batching, no shedding.

    BENCH_MODEL_PATH=/tmp/bench_serve/models/mnist/model.onnx \\
        python -m uvicorn --app-dir bench/serve_peers fastapi_peer:app --port 8610 --workers 1
"""

from __future__ import annotations

import json
import os

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from deepseek_ray.data.kinds import BadRequest, kind_of
from deepseek_ray.deploy.app import request_parser
from deepseek_ray.export import onnx_predict, read_metadata, serving_session

MODEL_PATH = os.environ["BENCH_MODEL_PATH"]
META = read_metadata(MODEL_PATH)
SESSION = serving_session(  # as the Serve replica opens it: ONNX Runtime for .onnx, torch for a .pt2 program
    MODEL_PATH,
    META.get("optimize_level", 9),
    int(os.environ.get("BENCH_THREADS", "1")),
    gpu=bool(os.environ.get("BENCH_GPU")),
    precision=os.environ.get("BENCH_PRECISION", "fp32"),
    graph_batches=int(os.environ.get("BENCH_GRAPH_BATCHES", "0")),
)
KIND = kind_of(META)
PARSER = request_parser(META, SESSION, MODEL_PATH)
app = FastAPI()


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/predict")
async def predict(request: Request) -> Response:
    try:
        payload = json.loads(await request.body())
        examples = PARSER(payload["inputs"])
    except (ValueError, KeyError, TypeError, BadRequest) as err:
        return JSONResponse({"error": str(err)}, status_code=400)
    rows = onnx_predict(SESSION, examples)
    answers = [KIND.reply(row, META) for row in rows]
    body = answers[0] if len(answers) == 1 else {"predictions": answers}
    return Response(json.dumps(body).encode(), media_type="application/json")
