"""Kinds of data as registered classes: each built-in kind's parts without Ray, and a kind registered from
outside the package (``tests/toy_kind.py``) through ``run_pipeline`` and the Serve app."""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests

from deepseek_ray.data import KINDS, BadRequest, get_kind, kind_of, load_dataset


@pytest.mark.parametrize("name, kind, inputs", [
    ("digits", "image", {"in_channels": 1, "num_classes": 10}),
    ("penguins", "tabular", {"in_features": 10, "num_classes": 3}),
    ("sunspots", "timeseries", {"in_channels": 1, "out_features": 1, "target_channel": 0}),
])
def test_each_kind_owns_its_model_inputs_baseline_and_requests(name, kind, inputs):
    data = load_dataset(name)
    assert data.kind == get_kind(kind) and data.kind.name == kind and data.model_inputs() == inputs
    baseline = data.kind.baseline(data)
    trained = baseline.model_spec is not None
    assert trained == (kind == "image")  # images train a plain CNN; the others score outright
    if not trained:
        assert len(baseline.outputs) == len(data.test)
    meta = {"input_shape": list(data.input_shape), "input_spec": data.kind.input_spec(data), "labels": data.labels,
            "task": data.task}
    parser = data.kind.request_parser(meta, np.float32, ".")
    raw = data.raw("test")[:2].numpy()
    assert np.allclose(parser(raw.tolist()), raw)  # numbers in the model's shape pass through every kind
    with pytest.raises(BadRequest, match="NaN"):
        parser([float("nan")] * int(np.prod(data.input_shape)))
    assert data.kind.tensor_metadata(meta, np.float32)[0]["shape"] == [-1, *data.input_shape]


def test_kinds_are_registered_once_and_found_from_metadata():
    assert {"image", "tabular", "text", "timeseries"} <= set(KINDS.names())
    with pytest.raises(KeyError, match="data.kind: unknown 'audio'; allowed: image, tabular, text, timeseries"):
        get_kind("audio")
    assert kind_of({"kind": "text"}).name == "text"
    assert kind_of({"kind_class": "deepseek_ray.data.timeseries:TimeSeriesKind"}).name == "timeseries"
    assert kind_of({}).name == "image"  # metadata written before kinds were recorded


def test_a_kind_registered_outside_the_package_runs_through_the_pipeline_and_serve(cluster, tmp_path):
    from deepseek_ray.config import ExperimentConfig
    from deepseek_ray.export import read_metadata
    from deepseek_ray.pipeline import run_pipeline
    from deepseek_ray.report import Reporter
    from tests import toy_kind  # registers the kind and its dataset, as a user's plugin module would

    space = tmp_path / "space.yaml"
    space.write_text("type: hpo\nmodel: mlp\nhidden: {choice: [16, 32]}\nlayers: 1\n"
                     "lr: {loguniform: [3.0e-3, 1.0e-2]}\n")
    cfg = ExperimentConfig.model_validate({
        "name": "toy-bits", "output_dir": str(tmp_path / "runs"), "data": {"dataset": "toy_bits"},
        "search": {"space": str(space), "budget": {"trials": 2}, "scheduler": {"type": "fifo"}, "concurrency": 2},
        "train": {"epochs": 2, "workers": 1, "early_stopping_patience": None},
        "serve": {"route": "/toy-bits", "port": cluster.serve_port,
                  "autoscaling": {"min_replicas": 1, "max_replicas": 1}},
        "tracking": {"enabled": False},
    })
    log = io.StringIO()
    summary = run_pipeline(cfg, reporter=Reporter(stream=log)).values
    baseline = next(v for k, v in summary.items() if k.startswith("baseline test accuracy (majority class"))
    assert 0.5 <= baseline < 1, log.getvalue()
    assert summary["test accuracy (torch)"] == summary["test accuracy (ONNX Runtime)"]
    meta = read_metadata(cfg.run_dir / "export" / "model.onnx")
    assert (meta["kind"], meta["kind_class"]) == ("bitstring", "tests.toy_kind:BitStringKind")

    url = summary["endpoint"]
    answer = requests.post(url, json={"inputs": "111111111110"}, timeout=60)
    assert answer.status_code == 200 and answer.json()["label"] in ("few", "many"), answer.text
    bad = requests.post(url, json={"inputs": "0101"}, timeout=60)
    assert bad.status_code == 400 and f"strings of {toy_kind.BITS} bits" in bad.json()["error"]
    assert requests.get(url, timeout=60).json()["kind"] == "bitstring"


def test_a_text_file_is_read_by_the_text_kind_whatever_its_column_is_called(tmp_path):
    import pandas as pd

    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": [f"a {'fine' if i % 2 else 'dull'} film, number {i}" for i in range(40)],
                  "sentiment": ["pos" if i % 2 else "neg" for i in range(40)]}).to_csv(path, index=False)
    data = load_dataset(str(path), label="sentiment")
    assert data.kind.name == "text" and data.labels == ["neg", "pos"] and data.train.x.dtype.is_floating_point is False
