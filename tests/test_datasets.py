"""The dataset registry, user files, tabular and time-series preprocessing, and leakage checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from deepseek_ray.data import (
    Table, TabularTransform, available_datasets, cutmix, load_dataset, tabular_splits, timeseries_splits,
)
from deepseek_ray.data.sources import rotten_tomatoes
from deepseek_ray.models import InferenceModel, build_model, load_bundle, save_bundle


def test_registry_has_every_promised_dataset():
    expected = {"mnist5k", "digits", "rotten_tomatoes", "penguins", "iris", "wine", "breast_cancer", "diabetes",
                "sunspots", "co2", "macrodata", "stocks"}
    assert expected <= set(available_datasets())


@pytest.mark.parametrize("name, kind, task, inputs", [
    ("iris", "tabular", "classification", {"in_features": 4, "num_classes": 3}),
    ("penguins", "tabular", "classification", {"in_features": 10, "num_classes": 3}),
    ("diabetes", "tabular", "regression", {"in_features": 10, "out_features": 1}),
    ("sunspots", "timeseries", "regression", {"in_channels": 1, "out_features": 1, "target_channel": 0}),
    ("macrodata", "timeseries", "regression", {"in_channels": 11, "out_features": 1, "target_channel": 10}),
    ("stocks", "timeseries", "regression", {"in_channels": 4, "out_features": 1, "target_channel": 0}),
])
def test_named_datasets_load_with_their_model_inputs(name, kind, task, inputs):
    splits = load_dataset(name, seed=0)
    assert (splits.kind.name, splits.task, splits.model_inputs()) == (kind, task, inputs)
    assert min(len(splits.train), len(splits.val), len(splits.test)) > 0
    assert torch.isfinite(splits.train.x).all() and isinstance(splits.train, torch.utils.data.Dataset)


def test_rotten_tomatoes_is_the_real_labelled_corpus():
    frame = rotten_tomatoes().frame
    assert len(frame) == 12808 and set(frame.label) == {"fresh", "rotten"}
    splits = load_dataset("rotten_tomatoes", limit=300, seed=0, max_len=16)
    assert splits.kind.name == "text" and splits.train.x.dtype == torch.int64 and splits.train.x.shape[1] == 16
    assert splits.model_inputs()["num_classes"] == 2


def test_splits_are_deterministic_per_seed():
    a, b, c = (load_dataset("penguins", seed=s) for s in (1, 1, 2))
    assert torch.equal(a.train.x, b.train.x) and a.fingerprint == b.fingerprint
    assert a.fingerprint != c.fingerprint


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_user_files_load_with_a_named_label_column(tmp_path, suffix):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"size": rng.normal(size=60), "colour": rng.choice(["red", "blue"], 60),
                          "kind": rng.choice(["a", "b", "c"], 60)})
    path = tmp_path / f"table{suffix}"
    {".csv": lambda: frame.to_csv(path, index=False), ".parquet": lambda: frame.to_parquet(path),
     ".jsonl": lambda: frame.to_json(path, orient="records", lines=True)}[suffix]()
    splits = load_dataset(str(path), label="kind", seed=0)
    assert splits.kind.name == "tabular" and splits.model_inputs() == {"in_features": 3, "num_classes": 3}
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60


def test_missing_file_and_missing_label_column_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file: .*nope.csv"):
        load_dataset(str(tmp_path / "nope.csv"), label="y")
    pd.DataFrame({"a": [1, 2], "b": [3, 4]}).to_csv(tmp_path / "t.csv", index=False)
    with pytest.raises(KeyError, match=r"\['y'\] not found; the columns are \['a', 'b'\]"):
        load_dataset(str(tmp_path / "t.csv"), label="y")
    with pytest.raises(ValueError, match="data.label: a file dataset"):
        load_dataset(str(tmp_path / "t.csv"))


def test_to_ray_gives_a_ray_dataset(ray_address):
    import ray

    ray.init(address=ray_address, ignore_reinit_error=True)
    ds = load_dataset("iris").train.to_ray()
    row = ds.take(1)[0]
    assert ds.count() == 120 and row["x"].shape == (4,)


# --------------------------------------------------------------------------------------- tabular
def _ages(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(0, 90, n).astype(float), "income": rng.normal(50, 10, n),
                         "city": rng.choice(["paris", "lima", None], n), "label": rng.choice(["x", "y"], n)})


def test_binning_with_explicit_edges_is_closed_on_the_right():
    t = TabularTransform.fit(pd.DataFrame({"age": [5.0, 40.0]}), bins={"age": [0, 18, 30, 50, 120]})
    assert t.feature_names() == ["age=0-18", "age=18-30", "age=30-50", "age=50-120"]
    onehot = t.transform(pd.DataFrame({"age": [0, 18, 19, 30, 31, 99]}))
    assert onehot.argmax(1).tolist() == [0, 0, 1, 1, 2, 3]


def test_quantile_and_uniform_bins_and_bad_specs():
    values = pd.DataFrame({"v": np.arange(100.0)})
    quantile = TabularTransform.fit(values, bins={"v": {"quantile": 4}}).columns[0].edges
    uniform = TabularTransform.fit(values, bins={"v": {"uniform": 2}}).columns[0].edges
    assert quantile == [0.0, 24.75, 49.5, 74.25, 99.0] and uniform == [0.0, 49.5, 99.0]
    with pytest.raises(ValueError, match="bins.v: expected a list of edges or one of"):
        TabularTransform.fit(values, bins={"v": {"kmeans": 3}})
    with pytest.raises(KeyError, match=r"bins: column\(s\) \['w'\] not found"):
        TabularTransform.fit(values, bins={"w": [0, 1]})


def test_tabular_fit_uses_the_training_rows_only():
    frame = _ages()
    splits = tabular_splits("ages", Table(frame, "label", options={"bins": {"income": {"quantile": 3}}}), (0.6, 0.2, 0.2), seed=0)
    train_rows = frame.iloc[splits.train.rows].drop(columns="label")
    refit = TabularTransform.fit(train_rows, bins={"income": {"quantile": 3}})
    assert splits.preprocessing["transform"] == refit.to_dict()
    # Wild values outside the training split change nothing that was fitted.
    wild = frame.copy()
    held_out = np.concatenate([splits.val.rows, splits.test.rows])
    wild.loc[held_out, "age"] = 1e6
    wild.loc[held_out, "income"] = -1e6
    wild.loc[held_out, "city"] = "atlantis"
    again = tabular_splits("ages", Table(wild, "label", options={"bins": {"income": {"quantile": 3}}}), (0.6, 0.2, 0.2), seed=0)
    for key in ("transform", "mean", "std"):
        assert again.preprocessing[key] == splits.preprocessing[key]
    assert torch.allclose(again.train.x, splits.train.x)
    # The imputer's fill values are training medians / modes.
    rules = {rule.name: rule for rule in refit.columns}
    assert rules["age"].fill == float(train_rows.age.median()) and rules["city"].fill == train_rows.city.mode()[0]


def test_the_fitted_tabular_transform_travels_in_the_bundle(tmp_path):
    splits = load_dataset("penguins", seed=0, bins={"body_mass_g": [0, 3500, 4500, 10000]})
    model = build_model({"type": "mlp", **splits.model_inputs()}).eval()
    save_bundle(tmp_path, model.state_dict(), {"type": "mlp", **splits.model_inputs()}, labels=splits.labels,
                input_shape=splits.input_shape, preprocessing=splits.preprocessing, seed=0)
    served, meta = load_bundle(tmp_path)
    raw_rows = load_dataset.__globals__["_REGISTRY"]["penguins"][1]().frame.iloc[splits.test.rows]
    features = TabularTransform.from_dict(meta["preprocessing"]["transform"]).transform(raw_rows.drop(columns="species"))
    with torch.no_grad():
        expected = torch.softmax(model(splits.test.x), -1)
        assert torch.allclose(served(torch.as_tensor(features)), expected, atol=1e-5)


def test_regression_targets_are_scaled_on_train_and_unscaled_by_the_bundle():
    splits = load_dataset("diabetes", seed=0)
    assert abs(float(splits.train.y.mean())) < 1e-5 and abs(float(splits.train.y.std(unbiased=False)) - 1) < 1e-4
    target_scaling = {k: splits.preprocessing[k] for k in ("task", "target_mean", "target_std")}
    model = InferenceModel(torch.nn.Identity(), target_scaling)
    in_units = splits.train.y * splits.preprocessing["target_std"] + splits.preprocessing["target_mean"]
    assert torch.allclose(model(splits.train.y), in_units)
    assert 25 <= float(in_units.min()) and float(in_units.max()) <= 346


# ----------------------------------------------------------------------------------- time series
def test_time_series_splits_by_time_without_windows_crossing():
    splits = load_dataset("co2", split=(0.7, 0.15, 0.15), lookback=10, horizon=2)
    (_, train_end), (val_start, val_end), (test_start, _) = splits.preprocessing["segments"]
    span = 10 + 2
    assert splits.train.rows.max() + span <= train_end
    assert splits.val.rows.min() >= val_start and splits.val.rows.max() + span <= val_end
    assert splits.test.rows.min() >= test_start
    assert splits.train.x.shape[1:] == (1, 10) and splits.train.y.shape[1:] == (2,)


def test_time_series_scaling_uses_the_training_segment_only():
    series = pd.DataFrame({"v": np.sin(np.arange(200) / 5.0)})
    base = timeseries_splits("s", Table(series, "v"), (0.6, 0.2, 0.2), lookback=8)
    shifted = series.copy()
    shifted.loc[120:, "v"] += 100.0  # only val and test change
    again = timeseries_splits("s", Table(shifted, "v"), (0.6, 0.2, 0.2), lookback=8)
    assert again.preprocessing["mean"] == base.preprocessing["mean"] and torch.equal(again.train.x, base.train.x)
    assert not torch.equal(again.test.x, base.test.x)
    raw = base.raw("train")
    assert torch.allclose(raw[0, 0], torch.as_tensor(series.v.to_numpy()[:8], dtype=torch.float32), atol=1e-5)


def test_time_series_target_is_scaled_like_its_input_channel():
    # Window-relative forecasters add the last scaled input value of the target channel to a predicted
    # change: that needs the target in the same units as its channel, and the channel named.
    splits = load_dataset("macrodata", split=(0.7, 0.15, 0.15), lookback=8)
    channel = splits.model_inputs()["target_channel"]
    assert splits.preprocessing["channels"][channel] == splits.preprocessing["target"] == "infl"
    assert torch.allclose(splits.train.x[1:, channel, -1], splits.train.y[:-1, 0])  # next window's last = this target
    raw_target = splits.test.y * splits.preprocessing["target_std"] + splits.preprocessing["target_mean"]
    assert torch.allclose(splits.raw("test")[1:, channel, -1], raw_target[:-1, 0], atol=1e-4)


def test_a_user_time_series_file_is_ordered_by_its_date_column(tmp_path):
    weeks = pd.date_range("2020-01-05", periods=60, freq="W")
    frame = pd.DataFrame({"week": weeks.strftime("%Y-%m-%d"), "temp": np.arange(60.0), "ppm": 400 + np.arange(60.0)})
    path = tmp_path / "series.csv"
    frame.sample(frac=1.0, random_state=0).to_csv(path, index=False)  # rows out of order on disk
    splits = load_dataset(str(path), split=(0.6, 0.2, 0.2), label="ppm", kind="timeseries", lookback=6)
    assert splits.preprocessing["channels"] == ["temp", "ppm"]  # the date orders the rows and is dropped
    first = splits.raw("train")[0]
    assert first[1].tolist() == [400.0, 401.0, 402.0, 403.0, 404.0, 405.0]
    frame.assign(city="Oslo").to_csv(path, index=False)
    with pytest.raises(ValueError, match="not numeric: city"):
        load_dataset(str(path), label="ppm", kind="timeseries", lookback=6)


def test_too_short_a_segment_is_a_clear_error():
    with pytest.raises(ValueError, match="too short for lookback=40"):
        load_dataset("sunspots", lookback=40)


# ---------------------------------------------------------------------------------------- images
def test_cutmix_mixes_labels_by_pasted_area():
    x = torch.cat([torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8)])
    mixed, soft = cutmix(1.0, 2)(x, torch.tensor([0, 1]), torch.Generator().manual_seed(3))
    share_of_ones = mixed.mean(dim=(1, 2, 3))
    assert torch.allclose(soft[:, 1], share_of_ones) and torch.allclose(soft.sum(1), torch.ones(2))
