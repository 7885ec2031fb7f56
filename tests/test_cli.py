"""The CLI as users run it, in subprocesses: the README's quickstart file end to end (shrunk with ``--set``),
``datasets``, a search killed with SIGKILL and finished by ``search --resume``, Ctrl-C, and the exit codes of
bad input (README, "Exit codes")."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import ROOT, cli_env, run_cli

TINY_SEARCH = ["--set", "search.budget.trials=4", "--set", "search.scheduler.max_t=2", "--set", "tracking.enabled=false"]


def start_cli(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """``python -m deepseek_ray ARGS`` in the background, its output to ``log``."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "deepseek_ray", *args], cwd=cwd, env=cli_env(), stdout=out,
                                stderr=subprocess.STDOUT)


def wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None, f"ended before {text!r}:\n{log.read_text()}"
        assert time.monotonic() < deadline, f"no {text!r} in {timeout} s:\n{log.read_text()}"
        time.sleep(0.2)


def test_the_quickstart_file_runs_end_to_end_and_serves(cluster, tmp_path):
    from ray import serve

    small = ["--set", "data.limit=1000", "--set", "search.budget.trials=2", "--set", "search.scheduler.max_t=1",
             "--set", "train.epochs=1", "--set", "train.early_stopping_patience=null",
             "--set", "train.collective_timeout_s=120",
             "--set", "serve.autoscaling.max_replicas=1", "--set", f"serve.port={cluster.serve_port}"]
    proc = run_cli(["run", str(ROOT / "examples" / "quickstart.yaml"), "--address", cluster.address, *small],
                   cwd=tmp_path)
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    values = json.loads((tmp_path / "runs" / "mnist-quickstart" / "summary.json").read_text())["values"]
    assert values["test accuracy (ONNX Runtime)"] == values["test accuracy (torch)"]
    assert "baseline test accuracy (plain 2-conv CNN)" in values  # the image baseline runs
    try:
        digit = [[[0.0] * 28] * 28]
        reply = requests.post(f"http://127.0.0.1:{cluster.serve_port}/mnist", json={"inputs": digit}, timeout=30)
        assert reply.status_code == 200 and reply.json()["label"] in [str(i) for i in range(10)], reply.text
    finally:
        serve.delete("mnist-quickstart")


def test_datasets_lists_the_registry():
    """Through the ``deepseek-ray`` console script the install puts beside Python, as users type it."""
    script = shutil.which("deepseek-ray") or str(Path(sys.executable).parent / "deepseek-ray")
    assert Path(script).is_file(), "pip install -e . installs the deepseek-ray command"
    proc = subprocess.run([script, "datasets"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=cli_env())
    assert proc.returncode == 0, proc.stderr
    assert {"digits", "mnist5k", "rotten_tomatoes"} <= set(proc.stdout.split())


def test_a_search_killed_with_sigkill_finishes_with_search_resume(ray_address, tiny_config_path, tmp_path):
    log = tmp_path / "search.log"
    args = ["search", str(tiny_config_path), "--address", ray_address, *TINY_SEARCH]
    driver = start_cli(args, tmp_path, log)
    wait_for(log, "trial  2/4", driver)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    before = log.read_text()
    assert "best architecture" not in before  # killed mid-search
    proc = run_cli([*args, "--resume"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    best = json.loads((tmp_path / "runs" / "tiny" / "search" / "best.json").read_text())
    ids = [t["trial_id"] for t in best["trials"]]
    assert len(ids) == 4 and len(set(ids)) == 4, ids  # the budget, once each
    finished_before = before.count(" terminated ") + before.count(" pruned ")
    # Only the trials that had not finished ran after the kill (the resumed run reports each one it ends). The one
    # whose end was printed last may run again: Tune saves the experiment's state after its callbacks report.
    ended_after = proc.stdout.count(" terminated ") + proc.stdout.count(" pruned ")
    assert 4 - finished_before <= ended_after <= 4 - finished_before + 1, proc.stdout


def test_ctrl_c_stops_a_run_with_exit_code_130(ray_address, tiny_config_path, tmp_path):
    log = tmp_path / "run.log"
    driver = start_cli(["search", str(tiny_config_path), "--address", ray_address, *TINY_SEARCH], tmp_path, log)
    wait_for(log, "search   started", driver)
    driver.send_signal(signal.SIGINT)
    assert driver.wait(timeout=120) == 130, log.read_text()
    assert "interrupted" in log.read_text()


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["validate", "no/such/file.yaml"], 1, "no/such/file.yaml"),
        (["validate", "tests/data/tiny.yaml", "--set", "train.epochs"], 2, "expected KEY=VALUE"),
        (["validate", "tests/data/tiny.yaml", "--set", "train.epochs=many"], 1, "train.epochs: got 'many'"),
        (["validate", "tests/data/tiny.yaml", "--set", "search.strategy.type=bayes"], 1, "search.strategy.type: got 'bayes'"),
        (["run"], 2, "the following arguments are required: file"),
    ],
)
def test_bad_input_exits_with_its_code_and_says_why(args, code, says):
    proc = run_cli(args, cwd=ROOT, timeout=120)
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_a_file_that_is_not_yaml_exits_1(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    proc = run_cli(["validate", str(broken)], cwd=tmp_path, timeout=120)
    assert proc.returncode == 1 and "not valid YAML: line 2" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
