"""Tabular preprocessing fitted on the training split: imputation, binning, one-hot encoding, scaling.

The fitted :class:`TabularTransform` is plain JSON (``to_dict``/``from_dict``), saved in the model
bundle's ``preprocessing``, so serving turns raw rows into exactly the features training saw.
Scaling (a per-feature mean/std) is kept apart from the encoding: the model bundle applies it inside
the exported graph, as it does for images.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config.registries import BIN_STRATEGIES
from ..files import fingerprint
from .datasets import ArrayDataset, DatasetSplits, Table, encode_labels, require_columns, sample_rows, split_indices
from .kinds import BadRequest, Baseline, DataKind, RequestParser, head, one_or_many, register_kind


# data.tabular.bins' strategies, {strategy: n}: n + 1 edges from the observed (training) values.
@BIN_STRATEGIES.register("quantile")
def _quantile_edges(observed: np.ndarray, count: int) -> np.ndarray:
    return np.quantile(observed, np.linspace(0, 1, count + 1))


@BIN_STRATEGIES.register("uniform")
def _uniform_edges(observed: np.ndarray, count: int) -> np.ndarray:
    return np.linspace(observed.min(), observed.max(), count + 1)


@dataclass
class ColumnRule:
    """How one input column becomes features: ``numeric`` (one value), ``binned`` (one-hot bins) or
    ``categorical`` (one-hot categories); ``fill`` replaces a missing value."""

    name: str
    kind: str
    fill: Any
    edges: list[float] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)

    def width(self) -> int:
        return {"numeric": 1, "binned": len(self.edges) - 1, "categorical": len(self.categories)}[self.kind]

    def feature_names(self) -> list[str]:
        if self.kind == "numeric":
            return [self.name]
        if self.kind == "binned":
            return [f"{self.name}={lo:g}-{hi:g}" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)]
        return [f"{self.name}={c}" for c in self.categories]

    def encode(self, values: pd.Series) -> np.ndarray:
        values = values.fillna(self.fill)
        if self.kind == "numeric":
            return values.to_numpy(np.float32)[:, None]
        if self.kind == "binned":
            # Bins are closed on the right: with edges [0, 18, 30], 18 is in 0-18 and 19 in 18-30.
            index = np.searchsorted(np.asarray(self.edges[1:-1]), values.to_numpy(np.float64), side="left")
            return np.eye(self.width(), dtype=np.float32)[index]
        lookup = {c: i for i, c in enumerate(self.categories)}
        onehot = np.zeros((len(values), self.width()), np.float32)
        for row, value in enumerate(values.astype(str)):
            if value in lookup:  # a category unseen in training gets all zeros
                onehot[row, lookup[value]] = 1.0
        return onehot


def bin_edges(values: pd.Series, spec: Any, column: str) -> list[float]:
    """Edges for ``spec``: explicit edges (a list), or ``{'quantile': n}`` / ``{'uniform': n}`` fitted on ``values``.

    >>> bin_edges(pd.Series([1., 2, 3, 4, 5]), {'uniform': 2}, 'x')
    [1.0, 3.0, 5.0]
    """
    if isinstance(spec, (list, tuple)):
        if len(spec) < 2 or list(spec) != sorted(spec):
            raise ValueError(f"bins.{column}: edges must be at least two increasing numbers, got {spec}")
        return [float(e) for e in spec]
    if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in BIN_STRATEGIES):
        allowed = ", ".join(f"{{{name!r}: n}}" for name in BIN_STRATEGIES.names())
        raise ValueError(f"bins.{column}: expected a list of edges or one of {allowed}; got {spec!r}")
    strategy, count = next(iter(spec.items()))
    edges = BIN_STRATEGIES[strategy](values.dropna().to_numpy(np.float64), int(count))
    return [float(e) for e in np.unique(edges)]


@dataclass
class TabularTransform:
    """Raw rows → a float feature matrix, fitted on the training rows only.

    >>> train = pd.DataFrame({'age': [5, 25, 40, None], 'city': ['a', 'b', 'a', None]})
    >>> t = TabularTransform.fit(train, bins={'age': [0, 18, 30, 120]})
    >>> t.feature_names()
    ['age=0-18', 'age=18-30', 'age=30-120', 'city=a', 'city=b']
    >>> t.transform(pd.DataFrame({'age': [19], 'city': ['c']})).tolist()
    [[0.0, 1.0, 0.0, 0.0, 0.0]]
    >>> TabularTransform.from_dict(t.to_dict()) == t
    True
    """

    columns: list[ColumnRule]

    @classmethod
    def fit(cls, frame: pd.DataFrame, bins: dict[str, Any] | None = None) -> TabularTransform:
        bins = bins or {}
        require_columns(frame, list(bins), key="bins")
        rules = []
        for name in frame.columns:
            values = frame[name]
            if name in bins:
                rules.append(
                    ColumnRule(name, "binned", float(values.median()), edges=bin_edges(values, bins[name], name))
                )
            elif pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
                rules.append(ColumnRule(name, "numeric", float(values.median()) if values.notna().any() else 0.0))
            else:
                text = values.dropna().astype(str)
                fill = text.mode().iloc[0] if len(text) else ""
                rules.append(ColumnRule(name, "categorical", fill, categories=sorted(text.unique().tolist())))
        return cls(rules)

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        require_columns(frame, [rule.name for rule in self.columns], key="input")
        return np.concatenate([rule.encode(frame[rule.name]) for rule in self.columns], axis=1)

    def feature_names(self) -> list[str]:
        return [name for rule in self.columns for name in rule.feature_names()]

    def numeric_mask(self) -> np.ndarray:
        """True for the features that are scaled (numeric columns; one-hot features stay 0/1)."""
        return np.concatenate([np.full(rule.width(), rule.kind == "numeric") for rule in self.columns])

    def to_dict(self) -> dict[str, Any]:
        return {"columns": [asdict(rule) for rule in self.columns]}

    @classmethod
    def from_dict(cls, blob: dict[str, Any]) -> TabularTransform:
        return cls([ColumnRule(**rule) for rule in blob["columns"]])


def infer_task(values: pd.Series) -> str:
    """``regression`` for a float label with many distinct values, else ``classification``."""
    many = values.nunique() > 20
    return "regression" if pd.api.types.is_float_dtype(values) and many else "classification"


def tabular_splits(name: str, table: Table, fractions: tuple[float, float, float], seed: int) -> DatasetSplits:
    """Split rows by ``seed``; fit the transform, the feature scaler and (for regression) the target
    scaler on the training rows; apply them to all three splits.

    Options (``table.options``): ``bins`` — ``{column: [edges] | {'quantile': n} | {'uniform': n}}``;
    ``scale`` — standardise numeric features (default true).
    """
    options = dict(table.options)
    bins, scale = options.pop("bins", None), options.pop("scale", True)
    if options:
        raise ValueError(f"tabular options: unknown {sorted(options)}; allowed: bins, scale")
    frame = table.frame.dropna(subset=[table.label]).reset_index(drop=True)
    task = table.task or infer_task(frame[table.label])
    features = frame.drop(columns=[table.label])
    parts = split_indices(len(frame), fractions, seed)
    transform = TabularTransform.fit(features.iloc[parts[0]], bins)
    encoded = transform.transform(features)
    mask = transform.numeric_mask()
    mean = np.where(mask & scale, encoded[parts[0]].mean(0), 0.0).astype(np.float32)
    std = np.where(mask & scale, encoded[parts[0]].std(0), 1.0).astype(np.float32)
    std[std == 0] = 1.0
    x = (encoded - mean) / std
    preprocessing = {
        "type": "tabular",
        "task": task,
        "transform": transform.to_dict(),
        "features": transform.feature_names(),
        "mean": mean.tolist(),
        "std": std.tolist(),
    }
    if task == "regression":
        target = frame[table.label].to_numpy(np.float32)
        target_mean, target_std = float(target[parts[0]].mean()), float(target[parts[0]].std()) or 1.0
        y, labels = ((target - target_mean) / target_std)[:, None], [table.label]
        preprocessing |= {"target_mean": target_mean, "target_std": target_std}
    else:
        y, labels = encode_labels(frame[table.label].astype(str))
    train, val, test = (ArrayDataset(x[idx], y[idx], idx) for idx in parts)
    return DatasetSplits(
        name,
        train,
        val,
        test,
        labels=labels,
        input_shape=(x.shape[1],),
        preprocessing=preprocessing,
        fingerprint=fingerprint(x, y, *parts),
        task=task,
        kind=TabularKind(),
    )


class TabularRequestParser(RequestParser):
    """Rows as ``{column: value}`` (imputed, binned and encoded here with the fitted transform), or the
    encoded feature rows as numbers.

    >>> from deepseek_ray.data import load_dataset
    >>> data = load_dataset('penguins')
    >>> parse = TabularRequestParser(data.input_shape, spec=data.kind.input_spec(data))
    >>> parse({'island': 'Biscoe', 'bill_length_mm': 46.1, 'bill_depth_mm': 13.2, 'flipper_length_mm': 211,
    ...        'body_mass_g': 4500, 'sex': 'female', 'year': 2007}).shape == (1, data.input_shape[0])
    True
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        blob = self.spec.get("transform")
        self.transform = TabularTransform.from_dict(blob) if blob else None

    def __call__(self, inputs: Any) -> np.ndarray:
        records = one_or_many(inputs, dict)
        return self.numbers(inputs) if records is None else self.rows(records)

    def rows(self, records: list[dict[str, Any]]) -> np.ndarray:
        if self.transform is None:
            raise BadRequest(f"this model takes feature rows of {self.example_shape[0]} numbers")
        try:
            features = self.transform.transform(pd.DataFrame.from_records(records))
        except KeyError as err:  # a missing column: the transform names it and the columns found
            raise BadRequest(f"a row misses a column: {err.args[0]}") from None
        except (TypeError, ValueError) as err:
            raise BadRequest(f"a row has a value of the wrong type: {err}") from None
        return features.astype(self.dtype)


@register_kind("tabular")
class TabularKind(DataKind):
    """Loaders return a :class:`Table`; the label is a class (classification) or a float with many values
    (regression). Requests send a row ``{column: value}`` or the encoded feature row."""

    parser = TabularRequestParser

    def split(
        self,
        name: str,
        raw: Table,
        fractions: tuple[float, float, float],
        seed: int,
        limit: int | None = None,
        **options: Any,
    ) -> DatasetSplits:
        table = Table(sample_rows(raw.frame, limit, seed), raw.label, raw.task, options)
        return tabular_splits(name, table, fractions, seed)

    def model_inputs(self, data: DatasetSplits) -> dict[str, Any]:
        return {"in_features": data.input_shape[0], **head(data)}

    def baseline(self, data: DatasetSplits) -> Baseline:
        """scikit-learn's logistic regression (classification) or ridge regression, on the same features."""
        from sklearn.linear_model import LogisticRegression, Ridge

        x_train, x_test = data.train.x.numpy(), data.test.x.numpy()  # the model's own (scaled) features
        if data.task == "regression":
            fitted = Ridge(alpha=1.0).fit(x_train, data.train.y.numpy().ravel())
            return Baseline(
                "scikit-learn ridge regression", outputs=data.in_target_units(fitted.predict(x_test))[:, None]
            )
        fitted = LogisticRegression(max_iter=2000).fit(x_train, data.train.y.numpy())
        return Baseline("scikit-learn logistic regression", outputs=fitted.predict_proba(x_test))

    def input_spec(self, data: DatasetSplits, export_dir: Path | None = None) -> dict[str, Any]:
        """The raw columns and the fitted transform, so that a replica accepts raw rows."""
        prep = data.preprocessing
        return {
            "columns": [rule["name"] for rule in prep["transform"]["columns"]],
            "transform": prep["transform"],
            "features": prep["features"],
        }

    def request_hint(self, meta: dict[str, Any]) -> str:
        return f'{{"inputs": {{column: value, ...}} or <{meta["input_shape"][0]} feature values>}}'
