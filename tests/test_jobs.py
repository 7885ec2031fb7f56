"""`ray job submit` runs the main job on a `ray start --head` cluster with token authentication on, as the
README shows: a cluster of its own (not the suite's ``ray.init`` one), stopped with the test."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ROOT, _ray_bin, free_port


@pytest.fixture
def head_node(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """`ray start --head --block` with a token of its own; yields the dashboard URL and a client's environment."""
    port, dashboard_port = free_port(), free_port()
    token = secrets.token_hex(16)
    # Token authentication on, with a token of this cluster's own; no drain on SIGTERM (no Serve app to quiesce).
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "head.log"
    # Ray's socket paths live under the temp dir and may not exceed 107 bytes: pytest's tmp_path is too deep.
    temp_dir = tempfile.mkdtemp(prefix="ray-job-", dir="/tmp")
    with log.open("w") as out:
        head = subprocess.Popen(
            [_ray_bin(), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dashboard_port}",
             "--num-cpus=4", "--include-dashboard=true", "--disable-usage-stats", f"--temp-dir={temp_dir}",
             # The suite's own Ray already holds the agent's default HTTP port (52365): without ports of its own
             # this head's job agent never comes up and every submission is "No available agent to submit job".
             f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
             f"--ray-client-server-port={free_port()}"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    url = f"http://127.0.0.1:{dashboard_port}"
    try:
        _wait_for_jobs_api(url, token, head, log)
        yield url, {**env, "RAY_ADDRESS": url}
    finally:
        head.terminate()  # --block stops the head's processes when it is told to end
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _wait_for_jobs_api(url: str, token: str, head: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert head.poll() is None, f"ray start --head exited:\n{log.read_text()[-3000:]}"
        try:
            if requests.get(f"{url}/api/jobs/", headers={"Authorization": f"Bearer {token}"}, timeout=5).ok:
                return
        except requests.ConnectionError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the head's job API at {url} did not come up in {timeout} s")


def test_ray_job_submit_runs_the_pipeline_on_a_token_cluster(head_node):
    url, env = head_node
    refused = subprocess.run([_ray_bin(), "job", "list"], env={**env, "RAY_AUTH_TOKEN": "not-the-token"},
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0, "token authentication is off: a wrong token was accepted"

    command = [_ray_bin(), "job", "submit", "--working-dir", ".", "--", "python", "-m", "deepseek_ray", "run",
               "tests/data/tiny.yaml", "--no-serve", "--set", "name=tiny-job", "--set", "search.budget.trials=2",
               "--set", "train.epochs=1"]
    deadline = time.monotonic() + 120
    while True:  # the job API answers before the head's job agent has registered, more so on a busy machine
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        output = proc.stdout + proc.stderr
        if "No available agent to submit job" not in output or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert proc.returncode == 0, output
    assert "succeeded" in output.lower()
    assert "joined cluster" in output and "experiment tiny-job" in output and "test accuracy (ONNX Runtime)" in output
