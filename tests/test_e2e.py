"""`deepseek-ray run` end to end on a reduced config, against the session's Ray cluster.

The run leaves its endpoint up on the cluster, so these tests also exercise the served model.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from pathlib import Path

import aiohttp
import numpy as np
import onnx
import pytest
import requests
import torch

from conftest import run_cli

# What Ray's own output looks like: worker prefixes, its log format, its status tables.
RAY_LOG_LINE = re.compile(r"\((pid|raylet|train_|TrainController|ServeController|ProxyActor)|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(INFO|WARNING|ERROR)|Trial status|ray\._private|-- ")


def test_run_prints_progress_and_a_final_table_without_ray_logs(e2e_run):
    out, err = e2e_run["proc"].stdout, e2e_run["proc"].stderr
    assert err.strip() == "", err
    assert not [line for line in out.splitlines() if RAY_LOG_LINE.search(line)]
    for progress in ("search   trial  1/3", "best", "train    epoch  1/2", "train_loss=", "export", "endpoint up"):
        assert progress in out
    for row in ("best architecture", "test accuracy (torch)", "test accuracy (ONNX Runtime)", "model size", "endpoint",
                "wall: search", "wall: train", "total wall"):
        assert row in out


def test_artifacts_bundle_and_onnx(e2e_run):
    from deepseek_ray.export import onnx_predict, onnx_session
    from deepseek_ray.models import load_bundle

    run_dir = e2e_run["run_dir"]
    best = json.loads((run_dir / "search" / "best.json").read_text())
    assert len(best["trials"]) == 3 and len({t["trial_id"] for t in best["trials"]}) == 3
    model, meta = load_bundle(run_dir / "model")
    assert meta["architecture"] == best["best_architecture"] and meta["seed"] == 0
    assert not any(k.startswith("module.") for k in torch.load(run_dir / "model" / "weights.pt", weights_only=True))
    onnx.checker.check_model(str(run_dir / "export" / "model.onnx"))
    x = torch.rand(5, 1, 8, 8) * 255
    with torch.no_grad():
        expected = model(x).numpy()
    got = onnx_predict(onnx_session(run_dir / "export" / "model.onnx"), x.numpy())
    assert np.abs(expected - got).max() <= 1e-4
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["values"]["test accuracy (torch)"] == pytest.approx(summary["values"]["test accuracy (ONNX Runtime)"], abs=1e-6)


def test_mlflow_run_has_params_metrics_artifact_and_registered_model(e2e_run):
    db = sqlite3.connect(e2e_run["mlflow_db"])
    params = dict(db.execute("select key, value from params").fetchall())
    for key in ("config_hash", "data_hash", "git_commit", "versions.torch", "versions.ray", "config.train.epochs"):
        assert key in params, key
    metrics = {row[0] for row in db.execute("select key from metrics")}
    assert {"search/best_val_accuracy", "train/val_accuracy", "train/test_accuracy", "export/max_abs_diff"} <= metrics
    nested = db.execute("select count(*) from tags where key = 'mlflow.parentRunId'").fetchone()[0]
    assert nested == 3  # one nested run per trial
    versions = db.execute("select name, version from model_versions").fetchall()
    assert ("tiny", 1) in versions
    # The artifacts themselves, as a user lists them: the exported model is in the pipeline's run.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{e2e_run['mlflow_db']}")
    runs = client.search_runs([client.get_experiment_by_name("tiny-tests").experiment_id])
    (run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]  # the pipeline's run, not a trial's
    files = _artifact_files(client, run.info.run_id)
    assert {"export/model.onnx", "export/model.onnx.json", "model/model.onnx", "model/MLmodel"} <= set(files), files
    local = client.download_artifacts(run.info.run_id, "export/model.onnx", str(e2e_run["run_dir"] / "downloaded"))
    assert Path(local).read_bytes() == (e2e_run["run_dir"] / "export" / "model.onnx").read_bytes()


def _artifact_files(client, run_id: str, folder: str | None = None) -> list[str]:
    """Every artifact path of a run, folders walked."""
    found = []
    for item in client.list_artifacts(run_id, folder):
        found += _artifact_files(client, run_id, item.path) if item.is_dir else [item.path]
    return found


def test_endpoint_answers_and_rejects_bad_payloads(e2e_run):
    url = e2e_run["url"]
    image = (np.random.default_rng(0).random((8, 8)) * 255).tolist()
    answer = requests.post(url, json={"inputs": image}, timeout=30).json()
    assert answer["label"] in [str(i) for i in range(10)] and abs(sum(answer["probabilities"]) - 1) < 1e-4
    for body, reason in (("not json", "not valid JSON"), (json.dumps({"x": 1}), '"inputs"'),
                         (json.dumps({"inputs": [1, 2, 3]}), "each example needs 64"),
                         (json.dumps({"inputs": [["a"] * 8] * 8}), "numbers")):
        reply = requests.post(url, data=body, timeout=30)
        assert reply.status_code == 400 and reason in reply.json()["error"], reply.text
    assert requests.post(url, json={"inputs": image}, timeout=30).status_code == 200  # the replica is still up


def test_concurrent_requests_are_batched(e2e_run):
    url = e2e_run["url"]
    image = (np.random.default_rng(1).random((8, 8)) * 255).tolist()

    async def burst() -> list[int]:
        async with aiohttp.ClientSession() as session:
            async def one() -> int:
                async with session.post(url, json={"inputs": image}) as reply:
                    assert reply.status == 200
                    return (await reply.json())["batch_size"]

            return await asyncio.gather(*(one() for _ in range(32)))

    sizes = asyncio.run(burst())
    assert max(sizes) > 1, sizes


def test_stages_run_alone_from_the_previous_artifact(e2e_run, tiny_config_path, ray_address, workdir, cluster):
    """``train`` from search/best.json, ``export`` from the bundle, ``serve`` from the export: each alone."""
    run_dir, address = e2e_run["run_dir"], ["--address", ray_address, "--set", f"serve.port={cluster.serve_port}"]
    weights, onnx_file = run_dir / "model" / "weights.pt", run_dir / "export" / "model.onnx"
    weights.unlink(), onnx_file.unlink()
    # The run's 2 epochs are done: a rerun under the same name resumes from their checkpoint, so a third
    # epoch is all it trains (README: a crashed or stopped training continues where it was).
    proc = run_cli(["train", str(tiny_config_path), *address, "--set", "train.epochs=3"], cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    best = json.loads((run_dir / "search" / "best.json").read_text())["best_architecture"]
    assert weights.is_file() and f"train    {best}" in proc.stdout, proc.stdout
    assert "epoch  3/3" in proc.stdout and "epoch  1/3" not in proc.stdout, proc.stdout
    proc = run_cli(["export", str(tiny_config_path), *address], cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    assert onnx_file.is_file() and "classes identical" in proc.stdout
    proc = run_cli(["serve", str(tiny_config_path), *address], cwd=workdir)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    reply = requests.post(e2e_run["url"], json={"inputs": [[[0.0] * 8] * 8]}, timeout=30)
    assert reply.status_code == 200 and reply.json()["label"] in [str(i) for i in range(10)], reply.text


def test_verbose_shows_ray_output(ray_address, tiny_config_path, tmp_path):
    proc = run_cli(["search", str(tiny_config_path), "--address", ray_address, "--verbose", "--set", "search.budget.trials=1",
                    "--set", "search.scheduler.max_t=1", "--set", "tracking.enabled=false"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert RAY_LOG_LINE.search(proc.stdout + proc.stderr)
