"""The peer servers as child processes on 127.0.0.1: started, waited for, and stopped (by their own pid)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENTO_PYTHON = Path(os.environ.get("BENCH_BENTO_VENV", "/tmp/bento-venv")) / "bin" / "python"


def wait_until_answers(url: str, body: bytes, timeout_s: float = 120, proc: subprocess.Popen | None = None) -> None:
    """Until a POST of ``body`` answers 200 (or the process dies, or time is up)."""
    deadline, last = time.time() + timeout_s, "no answer"
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode} before answering")
        try:
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as reply:
                if reply.status == 200:
                    return
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code}: {err.read()[:200]!r}"
        except OSError as err:
            last = str(err)
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_s:.0f} s ({last})")


class Peer:
    """One server process group (uvicorn or BentoML with their workers), killed as a group on ``close``."""

    def __init__(self, cmd: list[str], env: dict[str, str], url: str, log_name: str):
        self.url = url
        self.log = open(f"/tmp/bench_serve/{log_name}.log", "a")  # noqa: SIM115  # closed in close()
        self.proc = subprocess.Popen(
            cmd, env={**os.environ, **env}, cwd=HERE, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this Popen started, no other
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def fastapi_peer(
    model_path: Path,
    port: int,
    workers: int,
    threads: int = 1,
    gpu: bool = False,
    precision: str = "fp32",
    graph_batches: int = 0,
) -> Peer:
    env = {"BENCH_MODEL_PATH": str(model_path), "BENCH_THREADS": str(threads), "BENCH_PRECISION": precision,
           "BENCH_GRAPH_BATCHES": str(graph_batches)}
    if gpu:
        env["BENCH_GPU"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "fastapi_peer:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    return Peer(cmd, env, f"http://127.0.0.1:{port}/predict", "fastapi_peer")


def bento_available() -> str | None:
    """None when the BentoML venv is usable, else why not."""
    if not BENTO_PYTHON.is_file():
        return (
            f"no BentoML venv at {BENTO_PYTHON.parent.parent} (python -m venv /tmp/bento-venv && "
            "/tmp/bento-venv/bin/pip install 'bentoml>=1.4,<1.5' onnxruntime numpy)"
        )
    probe = subprocess.run(
        [str(BENTO_PYTHON), "-c", "import bentoml, onnxruntime; print(bentoml.__version__)"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"BentoML does not import: {probe.stderr.strip()[-300:]}"


def bento_peer(
    model_path: Path,
    input_shape: list[int],
    port: int,
    workers: int,
    max_batch: int,
    max_latency_ms: float,
    threads: int = 1,
    providers: str = "",
) -> Peer:
    env = {
        "BENCH_MODEL_PATH": str(model_path),
        "BENCH_INPUT_SHAPE": ",".join(map(str, input_shape)),
        "BENCH_WORKERS": str(workers),
        "BENCH_MAX_BATCH": str(max_batch),
        "BENCH_MAX_LATENCY_MS": str(int(max_latency_ms)),
        "BENCH_THREADS": str(threads),
        "BENTOML_HOME": "/tmp/bench_serve/bentoml",
        "BENTOML_DO_NOT_TRACK": "True",
    }
    if providers:
        env["BENCH_PROVIDERS"] = providers
    cmd = [
        str(BENTO_PYTHON.parent / "bentoml"),
        "serve",
        "bento_service:Model",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Peer(cmd, env, f"http://127.0.0.1:{port}/predict", "bento_peer")


def as_batch_of_one(body: bytes) -> bytes:
    """``{"inputs": x}`` → ``{"inputs": [x]}``: BentoML's batchable API takes a batch per request."""
    return json.dumps({"inputs": [json.loads(body)["inputs"]]}).encode()
