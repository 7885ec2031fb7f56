"""One Ray cluster for the whole suite (`ray start --head`, as users run it), shared by in-process
tests (``ray.init(address=...)``) and by the CLI in subprocesses (``--address``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
GCS_PORT = int(os.environ.get("DEEPSEEK_RAY_TEST_PORT", "6391"))
DASHBOARD_PORT = 8266
SERVE_PORT = 18080

# Ray Train's worker group takes ~20–45 s to start on these 2-core machines; 60 s is too close.
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "240")


def _ray_bin() -> str:
    return shutil.which("ray") or str(Path(sys.executable).parent / "ray")


@pytest.fixture(scope="session")
def ray_address() -> str:
    """Start a head node for the session (4 logical CPUs: 2 trials or 2 workers, plus Serve) and join it."""
    command = [_ray_bin(), "start", "--head", f"--port={GCS_PORT}", "--num-cpus=4", "--include-dashboard=true",
               f"--dashboard-port={DASHBOARD_PORT}", "--disable-usage-stats"]
    subprocess.run([_ray_bin(), "stop", "--force"], capture_output=True)  # a cluster left by an aborted run
    started = subprocess.run(command, capture_output=True, text=True)
    assert started.returncode == 0, started.stdout + started.stderr
    address = f"127.0.0.1:{GCS_PORT}"
    import ray

    from deepseek_ray.runtime import connect

    try:
        connect(address, namespace="tests")
        yield address
    finally:
        ray.shutdown()
        subprocess.run([_ray_bin(), "stop", "--force"], capture_output=True)


@pytest.fixture(scope="session")
def tiny_config_path() -> Path:
    return DATA / "tiny.yaml"


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch working directory for runs (artifacts, mlflow.db)."""
    return tmp_path_factory.mktemp("work")


def run_cli(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run ``python -m deepseek_ray ARGS`` and return the finished process."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-m", "deepseek_ray", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def e2e_run(ray_address: str, tiny_config_path: Path, workdir: Path) -> dict:
    """`deepseek-ray run` on the tiny config against the session cluster; the endpoint stays up."""
    start = time.perf_counter()
    proc = run_cli(["run", str(tiny_config_path), "--address", ray_address], cwd=workdir)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return {"proc": proc, "wall": time.perf_counter() - start, "run_dir": workdir / "runs" / "tiny",
            "url": f"http://127.0.0.1:{SERVE_PORT}/tiny", "mlflow_db": workdir / "mlflow.db"}
