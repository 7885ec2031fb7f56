"""Time series as forecasting windows, split by time.

The series is cut into three consecutive segments (train, then val, then test) and windows are made
inside each segment, so no window — its inputs or its target — crosses a split boundary. The
per-channel scaling is fitted on the training segment only, and the target is scaled with its own
input channel's mean and std: a forecaster can then add the window's last (scaled) target value back
to a predicted change (the ``relative`` option of the TCN and LSTM builders).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..files import fingerprint
from .datasets import ArrayDataset, DatasetSplits, Table, require_columns
from .kinds import Baseline, DataKind, register_kind, shape_text


def time_segments(n: int, fractions: tuple[float, float, float]) -> list[tuple[int, int]]:
    """``[start, end)`` of the train, val and test segments, in time order.

    >>> time_segments(100, (0.7, 0.15, 0.15))
    [(0, 70), (70, 85), (85, 100)]
    """
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return [(0, n_train), (n_train, n_train + n_val), (n_train + n_val, n)]


def windows(values: np.ndarray, target: np.ndarray, start: int, end: int, lookback: int, horizon: int):
    """Inputs ``(N, C, lookback)``, targets ``(N, horizon)`` and window starts, all inside ``[start, end)``.

    >>> x, y, starts = windows(np.arange(10.)[:, None], np.arange(10.), 0, 6, lookback=3, horizon=1)
    >>> x.shape, y.ravel().tolist(), starts.tolist()
    ((3, 1, 3), [3.0, 4.0, 5.0], [0, 1, 2])
    """
    starts = np.arange(start, end - lookback - horizon + 1)
    x = (
        np.stack([values[s : s + lookback].T for s in starts])
        if len(starts)
        else np.zeros((0, values.shape[1], lookback))
    )
    y = (
        np.stack([target[s + lookback : s + lookback + horizon] for s in starts])
        if len(starts)
        else np.zeros((0, horizon))
    )
    return x.astype(np.float32), y.astype(np.float32), starts


def time_ordered(frame: pd.DataFrame, label: str, name: str = "data") -> pd.DataFrame:
    """The numeric channels in time order. One date/time column (datetime values, or text that parses as
    dates) orders the rows and is then dropped; any other non-numeric column is an error naming it.

    >>> frame = pd.DataFrame({'week': ['2024-01-15', '2024-01-01', '2024-01-08'], 'ppm': [3.0, 1.0, 2.0]})
    >>> time_ordered(frame, 'ppm')['ppm'].tolist()
    [1.0, 2.0, 3.0]
    """
    times, text, stamps = [], [], None
    for column in frame.columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            continue
        try:  # parsed once: the same stamps order the rows below
            stamps = values if pd.api.types.is_datetime64_any_dtype(values) else pd.to_datetime(values, format="mixed")
            times.append(column)
        except (TypeError, ValueError):
            text.append(column)
    if label in times or label in text:
        raise ValueError(f"data.label: the forecast target {label!r} of {name} must hold numbers")
    if text or len(times) > 1:
        raise ValueError(
            f"{name}: a time series takes numeric columns and at most one date/time column; "
            f"not numeric: {', '.join(map(str, text or times))}"
        )
    if stamps is None:  # no date/time column: the rows are in time order already
        return frame
    order = stamps.argsort(kind="stable")
    return frame.iloc[order].drop(columns=times).reset_index(drop=True)


def timeseries_splits(
    name: str,
    table: Table,
    fractions: tuple[float, float, float],
    lookback: int = 24,
    horizon: int = 1,
) -> DatasetSplits:
    """Forecast ``table.label`` ``horizon`` steps ahead from the last ``lookback`` steps of every column.

    >>> from deepseek_ray.data import load_dataset
    >>> splits = load_dataset('sunspots', split=(0.7, 0.15, 0.15), lookback=12)
    >>> splits.input_shape, splits.model_inputs(), splits.task
    ((1, 12), {'in_channels': 1, 'out_features': 1, 'target_channel': 0}, 'regression')
    """
    require_columns(table.frame, [table.label])
    if lookback < 1 or horizon < 1:
        raise ValueError(f"lookback and horizon must be ≥ 1, got lookback={lookback}, horizon={horizon}")
    frame = time_ordered(table.frame, table.label, name)
    values = frame.to_numpy(np.float64)
    target_channel = list(frame.columns).index(table.label)
    segments = time_segments(len(values), fractions)
    train_end = segments[0][1]
    mean, std = values[:train_end].mean(0), values[:train_end].std(0)
    std[std == 0] = 1.0
    scaled = (values - mean) / std
    parts = []
    for start, end in segments:
        x, y, starts = windows(scaled, scaled[:, target_channel], start, end, lookback, horizon)
        if not len(x):
            raise ValueError(
                f"data.split: a segment of {end - start} steps of {name} is too short for "
                f"lookback={lookback} + horizon={horizon}; lower lookback or enlarge the split"
            )
        parts.append(ArrayDataset(x, y, starts))
    preprocessing = {
        "type": "timeseries",
        "task": "regression",
        "channels": [str(c) for c in frame.columns],
        "target": table.label,
        "target_channel": target_channel,
        "lookback": lookback,
        "horizon": horizon,
        "mean": [[float(m)] for m in mean],
        "std": [[float(s)] for s in std],
        "target_mean": float(mean[target_channel]),
        "target_std": float(std[target_channel]),
        "segments": segments,
    }
    train, val, test = parts
    return DatasetSplits(
        name,
        train,
        val,
        test,
        labels=[table.label],
        input_shape=(values.shape[1], lookback),
        preprocessing=preprocessing,
        fingerprint=fingerprint(values, np.asarray(segments), np.asarray([lookback, horizon])),
        task="regression",
        kind=TimeSeriesKind(),
    )


@register_kind("timeseries")
class TimeSeriesKind(DataKind):
    """Loaders return a time-ordered :class:`Table` whose label is the forecast target; options ``lookback``
    and ``horizon``. Requests send a window: channels × lookback raw values (one channel may come flat)."""

    def split(
        self,
        name: str,
        raw: Table,
        fractions: tuple[float, float, float],
        seed: int,
        limit: int | None = None,
        **options: Any,
    ) -> DatasetSplits:
        frame = raw.frame if limit is None else raw.frame.iloc[:limit]  # the first steps: time order is kept
        return timeseries_splits(name, Table(frame, raw.label, raw.task), fractions, **options)

    def model_inputs(self, data: DatasetSplits) -> dict[str, Any]:
        # target_channel: the input channel a window-relative forecaster adds its change to
        return {
            "in_channels": data.input_shape[0],
            "out_features": data.preprocessing["horizon"],
            "target_channel": int(data.preprocessing.get("target_channel", 0)),
        }

    def baseline(self, data: DatasetSplits) -> Baseline:
        """Persistence: the last observed value of the target, repeated over the horizon."""
        prep = data.preprocessing
        channel = prep["channels"].index(prep["target"])
        last = data.raw("test")[:, channel, -1].numpy()  # the last observed value of each raw window
        return Baseline("persistence: last value", outputs=np.repeat(last[:, None], prep["horizon"], axis=1))

    def input_spec(self, data: DatasetSplits, export_dir: Path | None = None) -> dict[str, Any]:
        return {key: data.preprocessing[key] for key in ("channels", "target", "lookback", "horizon")}

    def request_hint(self, meta: dict[str, Any]) -> str:
        shape = shape_text(meta)
        return f'{{"inputs": <{shape} window: channels × lookback steps>}}'
