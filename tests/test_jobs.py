"""`ray job submit` runs the main job on a `ray start --head` cluster, as the README shows."""

from __future__ import annotations

import os
import subprocess

from conftest import ROOT, _ray_bin


def test_ray_job_submit_runs_the_pipeline(cluster):
    env = {**os.environ, "RAY_ADDRESS": cluster.dashboard}
    command = [_ray_bin(), "job", "submit", "--working-dir", ".", "--", "python", "-m", "deepseek_ray", "run",
               "tests/data/tiny.yaml", "--no-serve", "--set", "name=tiny-job", "--set", "search.budget.trials=2",
               "--set", "train.epochs=1"]
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "succeeded" in output.lower()
    assert "joined cluster" in output and "experiment tiny-job" in output and "test accuracy (ONNX Runtime)" in output
