"""`deepseek-ray run` on the non-image kinds, end to end through the CLI against the session's Ray cluster:
tabular classification (penguins, served, real HTTP) and time-series regression (co2, ``--no-serve``).

Both runs start together (each mostly waits on Ray start-up and its Train worker group), shrunk to two
trials of two epochs and a final training just long enough to meet the run's own baseline; the tests then
check what a user would: the table's metric names, each model against the baseline in the same table,
ONNX Runtime against torch on real inputs, and the endpoint's answers and 400s.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import torch

from conftest import ROOT, cli_env

SHRINK = ["--set", "search.budget.trials=2", "--set", "search.scheduler.max_t=2", "--set", "search.scheduler.grace_period=1",
          "--set", "train.workers=1", "--set", "train.early_stopping_patience=null",
          "--set", "tracking.experiment_name=tasks-tests"]


@pytest.fixture(scope="module")
def task_runs(cluster, tmp_path_factory) -> dict:
    """Both pipelines, started at once; returns each one's process, wall and run folder."""

    # One working directory (so one mlflow.db) per run: two processes creating one sqlite store race
    # in MLflow's schema migration, and test_e2e counts the runs in its own store.
    work = tmp_path_factory.mktemp("tasks")
    env = cli_env()
    commands = {
        "tabular": ["run", str(ROOT / "examples" / "tabular.yaml"), "--address", cluster.address, *SHRINK,
                    "--set", "name=penguins-tests", "--set", "train.epochs=20", "--set", "serve.route=/penguins-tests",
                    "--set", f"serve.port={cluster.serve_port}", "--set", "serve.autoscaling.max_replicas=1",
                    "--set", "serve.model=int8_dynamic"],  # the endpoint serves the quantized variant
        "timeseries": ["run", str(ROOT / "examples" / "timeseries.yaml"), "--address", cluster.address, "--no-serve", *SHRINK,
                       "--set", "name=co2-tests", "--set", "train.epochs=10", "--set", "data.limit=500",
                       "--set", "data.window.lookback=12",
                       "--set", "export.formats=[onnx, torch_export, tensorrt]"],
    }
    start = time.perf_counter()
    for kind in commands:
        (work / kind).mkdir()
    procs = {kind: subprocess.Popen([sys.executable, "-m", "deepseek_ray", *args], cwd=work / kind, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE) for kind, args in commands.items()}
    runs = {}
    for kind, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, f"{kind} run failed\nstdout:\n{out}\nstderr:\n{err}"
        name = "penguins-tests" if kind == "tabular" else "co2-tests"
        run_dir = work / kind / "runs" / name
        runs[kind] = {"stdout": out, "stderr": err, "wall": time.perf_counter() - start, "run_dir": run_dir,
                      "summary": json.loads((run_dir / "summary.json").read_text())["values"]}
    runs["url"] = f"http://127.0.0.1:{cluster.serve_port}/penguins-tests"
    runs["work"] = work
    return runs


def _onnx_vs_torch(run_dir: Path, inputs: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    from deepseek_ray.export import onnx_predict, onnx_session
    from deepseek_ray.models import load_bundle

    model, _ = load_bundle(run_dir / "model")
    with torch.no_grad():
        expected = model(inputs).numpy()
    return expected, onnx_predict(onnx_session(run_dir / "export" / "model.onnx"), inputs.numpy())


# ------------------------------------------------------------------------------------- tabular
def test_tabular_table_reports_accuracy_for_every_variant_and_the_baseline(task_runs):
    run = task_runs["tabular"]
    assert run["stderr"].strip() == "", run["stderr"]  # no stray library warnings
    values = run["summary"]
    for row in ("val accuracy (final)", "test accuracy (torch)", "test accuracy (ONNX Runtime)",
                "test accuracy (ONNX Runtime int8_dynamic)", "baseline test accuracy (scikit-learn logistic regression)"):
        assert 0.0 <= values[row] <= 1.0, (row, values[row])
    assert values["test accuracy (torch)"] == pytest.approx(values["test accuracy (ONNX Runtime)"], abs=1e-9)
    # The species are linearly separable in the four measurements: the linear baseline scores 0.98-1.0 on
    # every seed and split tried, so the bar is that ceiling. The searched MLP (20 epochs) matched it on seeds
    # 0, 1, 3 and was 0.02 short on seed 2 (its search drew lr 2.6e-4); 0.04 is two of the 51 test birds.
    # With 2 epochs (the old setting) it scored 0.73 while the old bar was > 0.5.
    baseline = values["baseline test accuracy (scikit-learn logistic regression)"]
    for row in ("test accuracy (torch)", "test accuracy (ONNX Runtime int8_dynamic)"):
        assert values[row] >= baseline - 0.04, (row, values[row], baseline)
    assert "MAE" not in " ".join(values) and "val_accuracy=" in run["stdout"] and "classes identical" in run["stdout"]


def test_tabular_onnx_matches_torch_on_real_rows(task_runs):
    from deepseek_ray.data import load_dataset
    from deepseek_ray.export import read_metadata

    run_dir = task_runs["tabular"]["run_dir"]
    data = load_dataset("penguins", (0.7, 0.15, 0.15), 0, bins={"year": {"uniform": 3}})
    expected, got = _onnx_vs_torch(run_dir, data.raw("test"))
    assert np.abs(expected - got).max() <= 1e-4 and (expected.argmax(1) == got.argmax(1)).all()
    meta = read_metadata(run_dir / "export" / "model.onnx")
    assert meta["kind"] == "tabular" and meta["inputs"][0]["dtype"] == "float32" and meta["input_shape"] == [12]
    assert (run_dir / "export" / "model.int8_dynamic.onnx").is_file()


def test_tabular_endpoint_takes_raw_rows_and_feature_rows(task_runs):
    from deepseek_ray.data import TabularTransform
    from deepseek_ray.export import onnx_predict, onnx_session, read_metadata

    url, run_dir = task_runs["url"], task_runs["tabular"]["run_dir"]
    row = {"island": "Biscoe", "bill_length_mm": 46.1, "bill_depth_mm": 13.2, "flipper_length_mm": 211.0,
           "body_mass_g": 4500.0, "sex": "female", "year": 2007}
    answer = requests.post(url, json={"inputs": row}, timeout=30).json()
    meta = read_metadata(run_dir / "export" / "model.onnx")
    import pandas as pd

    features = TabularTransform.from_dict(meta["input_spec"]["transform"]).transform(pd.DataFrame([row]))
    local = onnx_predict(onnx_session(run_dir / "export" / "model.int8_dynamic.onnx"), features)[0]  # serve.model
    assert answer["label"] == meta["labels"][int(local.argmax())] and answer["label"] in ("Adelie", "Chinstrap", "Gentoo")
    assert np.allclose(answer["probabilities"], local, atol=1e-5)
    by_features = requests.post(url, json={"inputs": features[0].tolist()}, timeout=30).json()
    assert by_features["class_index"] == answer["class_index"]
    several = requests.post(url, json={"inputs": [row, {**row, "island": "Torgersen"}]}, timeout=30).json()
    assert len(several["predictions"]) == 2
    described = requests.get(url, timeout=30).json()
    assert described["kind"] == "tabular" and "bill_length_mm" in described["columns"]
    assert described["quantization"] == "int8_dynamic"


def test_tabular_endpoint_rejects_bad_payloads_and_stays_up(task_runs):
    url = task_runs["url"]
    good = {"island": "Dream", "bill_length_mm": 39.0, "bill_depth_mm": 18.0, "flipper_length_mm": 190.0,
            "body_mass_g": 3700.0, "sex": "male", "year": 2008}
    partial = {k: v for k, v in good.items() if k != "bill_length_mm"}
    for body, reason in (({"inputs": partial}, "bill_length_mm"), ({"inputs": {**good, "body_mass_g": "heavy"}}, "wrong type"),
                         ({"inputs": [1.0, 2.0, 3.0]}, "each example needs 12"), ({"inputs": [None] * 12}, "NaN"),
                         ({"rows": [good]}, '"inputs"')):
        reply = requests.post(url, json=body, timeout=30)
        assert reply.status_code == 400 and reason in reply.json()["error"], (body, reply.text)
    assert requests.post(url, json={"inputs": good}, timeout=30).status_code == 200


# ---------------------------------------------------------------------------------- time series
def test_timeseries_table_reports_mae_in_target_units(task_runs):
    run = task_runs["timeseries"]
    assert run["stderr"].strip() == "", run["stderr"]
    values = run["summary"]
    maes = {row: values[row] for row in ("val MAE (final, target units)", "test MAE (torch, target units)",
                                         "test MAE (ONNX Runtime, target units)", "test MAE (torch.export, target units)",
                                         "test MAE (ONNX Runtime int8_dynamic, target units)",
                                         "test MAE (ONNX Runtime int8_static, target units)",
                                         "baseline test MAE (persistence: last value, target units)")}
    # CO₂ in ppm: weekly changes are a fraction of a ppm, so a forecast worth the name errs by well under 5 ppm
    # (static int8 too: its level arithmetic stays float, not clamped to the training windows' range).
    assert all(0 < mae < 5 for mae in maes.values()), maes
    # ... and beats the last value. The TCN (10 epochs) scored 0.969, 0.969, 1.20, 0.974 × persistence on
    # seeds 0-3 (seed 2's 2-trial search drew the smallest TCN at lr 4e-4); 2 epochs gave 1.08 on seed 0.
    persistence = maes.pop("baseline test MAE (persistence: last value, target units)")
    assert all(mae < persistence for mae in maes.values()), (persistence, maes)
    assert values["test MAE (torch, target units)"] == pytest.approx(values["test MAE (ONNX Runtime, target units)"], abs=1e-3)
    assert "accuracy" not in " ".join(values) and values["endpoint"] == "not served (--no-serve)"
    tensorrt = values.get("test MAE (TensorRT, target units)", values.get("test MAE (TensorRT)"))
    # No TensorRT on CPU machines: reported as not built (the other formats carry on); elsewhere a real MAE.
    assert str(tensorrt).startswith("not built") or 0 < tensorrt < 5, tensorrt
    assert "val_mae=" in run["stdout"] and "best by val_mae" in run["stdout"]
    best = json.loads((run["run_dir"] / "search" / "best.json").read_text())
    assert (best["metric"], best["mode"]) == ("val_mae", "min")


def test_timeseries_onnx_matches_torch_on_real_windows(task_runs):
    from deepseek_ray.data import load_dataset
    from deepseek_ray.export import read_metadata

    run_dir = task_runs["timeseries"]["run_dir"]
    data = load_dataset("co2", (0.7, 0.15, 0.15), 0, 500, lookback=12)
    windows = data.raw("test")
    expected, got = _onnx_vs_torch(run_dir, windows)
    assert 250 < expected.min() and expected.max() < 450  # level forecasts in ppm, not standardised values
    assert np.abs(expected - got).max() <= 1e-4 * np.abs(expected).max()
    meta = read_metadata(run_dir / "export" / "model.onnx")
    assert meta["task"] == "regression" and meta["input_shape"] == [1, 12] and meta["inputs"][0]["dtype"] == "float32"
    assert (run_dir / "export" / "model.pt2").is_file()


def test_timeseries_model_served_rejects_wrong_windows(task_runs):
    """The replica's request parser on the co2 export: a window of 12 values in, anything else a BadRequest (400)."""
    from deepseek_ray.data import BadRequest
    from deepseek_ray.deploy.app import request_parser
    from deepseek_ray.export import onnx_session, read_metadata

    path = task_runs["timeseries"]["run_dir"] / "export" / "model.onnx"
    parser = request_parser(read_metadata(path), onnx_session(path), path)
    assert parser([330.0] * 12).shape == (1, 1, 12)
    for bad in ([330.0] * 11, "330", [[330.0] * 12, [330.0] * 6]):
        with pytest.raises(BadRequest):
            parser(bad)


# ------------------------------------------------------------------------------ text (no Ray)
def test_text_endpoint_parser_tokenizes_like_training(tmp_path):
    """Raw strings sent to a text endpoint become exactly the token ids training saw."""
    import pandas as pd

    from deepseek_ray.data import BadRequest, TextPreprocessor
    from deepseek_ray.data.text import TextRequestParser

    frame = pd.DataFrame({"text": [f"review {i} was {'great fun' if i % 2 else 'dull and slow'}" for i in range(60)],
                          "label": ["fresh" if i % 2 else "rotten" for i in range(60)]})
    pre = TextPreprocessor(tokenizer="bpe", max_len=8, output_dir=tmp_path / "tok")
    data = pre.process(frame)
    spec = data.kind.input_spec(data, tmp_path)  # copies the tokenizer beside the (would-be) model
    assert spec["tokenizer"] == "tokenizer.json" and (tmp_path / "tokenizer.json").is_file()

    parser = TextRequestParser((8,), np.int64, spec, export_dir=tmp_path)
    assert parser.accepts_text
    texts = ["review 3 was great fun", "a dull and slow review that goes on and on"]
    assert (parser(texts) == pre.encode(texts)).all()
    assert parser([5, 6]).tolist() == [[5, 6] + [spec["pad_id"]] * 6]
    for bad, reason in (([1.5, 2], "token ids"), ([[1] * 9], "at most 8"), ([spec["vocab_size"]], "must be in")):
        with pytest.raises(BadRequest, match=reason):
            parser(bad)
    with pytest.raises(BadRequest, match="no tokenizer"):
        TextRequestParser((8,), np.int64, spec)("no tokenizer here")


# ------------------------------------------------------------------------- the image baseline (tiny.yaml: off)
def test_image_baseline_stage_trains_the_plain_cnn(cluster, tiny_config_path):
    """The stage the pipeline runs when ``train.baseline`` is on, alone: the plain CNN as a Ray task, trained
    with tiny.yaml's recipe (2 epochs, random shifts) and scored on the run's test split."""
    import io

    from deepseek_ray.config import load
    from deepseek_ray.data import from_config
    from deepseek_ray.report import Reporter
    from deepseek_ray.stages import baseline_stage
    from deepseek_ray.tracking import Tracker

    cfg = load(tiny_config_path, overrides={"train.baseline": True})
    data = from_config(cfg.data, cfg.seed)
    log = io.StringIO()
    result = baseline_stage(cfg, data, Reporter(stream=log), Tracker(enabled=False))
    assert result.description == "plain 2-conv CNN" and f"test accuracy={result.test_score:.4f}" in log.getvalue()
    # Ten digits, so an untrained CNN or one fed shuffled labels scores about 0.1; two epochs gave 0.59-0.78
    # over seeds 0-3 (0.78 on seed 0).
    assert result.test_score > 0.45


# ---------------------------------------------------------------------------- text, end to end (shrunk)
def test_text_pipeline_end_to_end(cluster, tmp_path):
    """examples/text_fewshot.yaml in-process on 300 reviews (1 trial, 1 epoch, 1 worker): tokenizer trained on
    the training split, search, train, the majority baseline, ONNX export with the tokenizer beside it."""
    import io

    from deepseek_ray.config import load
    from deepseek_ray.data import from_config
    from deepseek_ray.deploy.app import request_parser
    from deepseek_ray.export import onnx_predict, onnx_session, read_metadata
    from deepseek_ray.models import load_bundle
    from deepseek_ray.pipeline import run_pipeline
    from deepseek_ray.report import Reporter

    cfg = load(ROOT / "examples" / "text_fewshot.yaml", overrides={
        "name": "text-tests", "output_dir": str(tmp_path / "runs"), "tracking.enabled": False,
        "data.limit": 300, "data.split.train": 0.6, "data.split.val": 0.2, "data.split.test": 0.2,
        "data.text.max_len": 32,
        "search.budget.trials": 1, "search.scheduler.max_t": 1, "search.scheduler.grace_period": 1,
        "train.epochs": 1, "train.workers": 1, "train.early_stopping_patience": None})
    log = io.StringIO()
    values = run_pipeline(cfg, serve=False, reporter=Reporter(stream=log)).values
    assert values["search: trials / stop"].startswith("1 / "), log.getvalue()
    assert values["test accuracy (torch)"] == pytest.approx(values["test accuracy (ONNX Runtime)"], abs=1e-9)
    assert 0 <= values["test accuracy (ONNX Runtime int8_dynamic)"] <= 1
    # The majority baseline in the run's own table, against the labels of the same split recomputed here.
    data = from_config(cfg.data, cfg.seed)
    train_y, test_y = data.train.y.numpy(), data.targets("test")
    majority = int(np.bincount(train_y).argmax())
    row = f"baseline test accuracy (majority class: {data.labels[majority]})"
    assert values[row] == pytest.approx((test_y == majority).mean())  # 0.45 ("fresh"); the test majority gives 0.55

    export = cfg.run_dir / "export" / "model.onnx"
    meta, session = read_metadata(export), onnx_session(export)
    assert (export.parent / meta["input_spec"]["tokenizer"]).is_file()
    texts = ["a tender, funny and beautifully acted film", "dull, slow and far too long"]
    ids = request_parser(meta, session, export)(texts)  # raw strings, through the tokenizer saved with the export
    model, _ = load_bundle(cfg.run_dir / "model")
    with torch.no_grad():
        expected = model(torch.as_tensor(ids)).numpy()
    assert ids.shape == (2, 32) and np.abs(onnx_predict(session, ids) - expected).max() <= 1e-4
