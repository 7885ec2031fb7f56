"""In-memory datasets, deterministic splits, and the registry of named datasets.

A registered loader returns raw data of one *kind* (:mod:`deepseek_ray.data.kinds`); the kind's class
splits it and fits what is fitted on the training split (never on val/test):

=============  ==========================================  ===============================================
kind           loader returns                              fitted on the training split
=============  ==========================================  ===============================================
``image``      ``(images (N, C, H, W), labels (N,))``      pixel mean/std
``tabular``    :class:`Table` (a frame and its label)      imputers, encoders, bins, scalers
``text``       :class:`Table` (``text`` and label)         the tokenizer (``bpe``/``wordpiece``)
``timeseries`` :class:`Table` (time-ordered, a target)     per-channel mean/std; split by time
=============  ==========================================  ===============================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from ..config import OPTIONS_KIND, DataConfig
from ..config.registries import KINDS
from .kinds import DataKind, get_kind

FILE_SUFFIXES = (".csv", ".parquet", ".jsonl")


class ArrayDataset(Dataset):
    """A map-style dataset over two arrays, features ``x`` and labels ``y``.

    It fetches whole batches at once (``__getitems__``), so a ``DataLoader`` with a batch sampler costs
    one slice per batch instead of one Python call per example. ``rows`` (optional) names each example's
    source row, so augmented copies can be traced back to the row they came from.

    >>> ds = ArrayDataset(np.zeros((4, 3), np.float32), np.arange(4))
    >>> len(ds), ds[1][1].item(), ds.__getitems__([0, 2])[0].shape
    (4, 1, torch.Size([2, 3]))
    """

    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, rows: np.ndarray | None = None):
        self.x = torch.as_tensor(x)
        self.y = torch.as_tensor(y)
        self.rows = None if rows is None else np.asarray(rows)
        if len(self.x) != len(self.y):
            raise ValueError(f"x has {len(self.x)} rows but y has {len(self.y)}")

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index], self.y[index]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return self.x[index], self.y[index]

    def to_ray(self):
        """This dataset as a ``ray.data.Dataset`` with columns ``x`` and ``y`` (needs a Ray session).

        >>> ArrayDataset(np.zeros((4, 3), np.float32), np.arange(4)).to_ray().count()  # starts Ray  # doctest: +SKIP
        4
        """
        import pyarrow as pa
        import ray.data
        from ray.data.extensions import ArrowTensorArray

        columns = {
            name: ArrowTensorArray.from_numpy(t.numpy()) if t.dim() > 1 else pa.array(t.numpy())
            for name, t in (("x", self.x), ("y", self.y))
        }
        return ray.data.from_arrow(pa.table(columns))


@dataclass
class DatasetSplits:
    """The train/val/test splits of one dataset, and what a model needs to know about them.

    ``preprocessing`` holds what was fitted on the training split (normalisation, the tabular
    transform, the tokenizer's path); it travels in the model bundle so that export and serving
    apply the same.
    """

    name: str
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    labels: list[str]
    input_shape: tuple[int, ...]
    preprocessing: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    task: str = "classification"  # or "regression"
    kind: DataKind = field(kw_only=True)  # the kind's class: splitting, model inputs, export spec, serving

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def model_inputs(self) -> dict[str, Any]:
        """The data-derived arguments a model builder needs (merged into its spec by search and train).

        >>> load_dataset('digits').model_inputs()
        {'in_channels': 1, 'num_classes': 10}
        >>> load_dataset('diabetes').model_inputs()
        {'in_features': 10, 'out_features': 1}
        >>> load_dataset('macrodata').model_inputs()
        {'in_channels': 11, 'out_features': 1, 'target_channel': 10}
        """
        return self.kind.model_inputs(self)

    def raw(self, split: str = "test") -> torch.Tensor:
        """A split's inputs as they arrive from outside (before normalisation): what a served model takes."""
        x = getattr(self, split).x
        if "mean" in self.preprocessing:  # text has no "mean": its token ids are raw already
            mean = torch.as_tensor(self.preprocessing["mean"], dtype=x.dtype)
            std = torch.as_tensor(self.preprocessing["std"], dtype=x.dtype)
            return x * std + mean
        return x

    def targets(self, split: str = "test") -> np.ndarray:
        """A split's labels as a served model's outputs are compared with them: class indices, or
        regression targets in the target's units (un-scaled by the training split's mean and std)."""
        y = getattr(self, split).y.numpy()
        return self.in_target_units(y) if self.task == "regression" else y

    def in_target_units(self, values: Any) -> Any:
        """Standardised regression values back in the target's units (the training split's mean and std)."""
        prep = self.preprocessing
        return values * float(prep.get("target_std", 1.0)) + float(prep.get("target_mean", 0.0))

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "kind": self.kind.name,
            "task": self.task,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "data_hash": self.fingerprint,
        }


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into train/val/test by ``fractions``.

    >>> [len(part) for part in split_indices(10, (0.8, 0.1, 0.1), seed=0)]
    [8, 1, 1]
    """
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def encode_labels(values: pd.Series | np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Class indices (int64) and the sorted class names.

    >>> encode_labels(np.array(['b', 'a', 'b']))
    (array([1, 0, 1]), ['a', 'b'])
    """
    classes = sorted(pd.unique(np.asarray(values)).tolist())
    index_of = {c: i for i, c in enumerate(classes)}
    return np.array([index_of[c] for c in np.asarray(values).tolist()], dtype=np.int64), [str(c) for c in classes]


# ------------------------------------------------------------------------------------- registry
@dataclass
class Table:
    """What a tabular, text or time-series loader returns: a frame and the column to predict.

    ``task`` is ``None`` to infer it: a float label with many distinct values is regression.
    ``options`` are defaults for that kind's splitter (e.g. ``lookback`` for a time series).
    """

    frame: pd.DataFrame
    label: str
    task: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[], Any]
_REGISTRY: dict[str, tuple[str, Loader]] = {}


def register_dataset(name: str, kind: str = "image") -> Callable[[Loader], Loader]:
    """Register a loader under ``name``: for ``kind='image'`` it returns raw
    ``(images (N, C, H, W), labels (N,))``; for the other kinds a :class:`Table`.

    >>> @register_dataset('tiny_noise')
    ... def _tiny():
    ...     return np.random.rand(20, 1, 4, 4) * 255, np.arange(20) % 2
    >>> load_dataset('tiny_noise').num_classes
    2
    """
    KINDS.check(kind)

    def wrap(loader: Loader) -> Loader:
        _REGISTRY[name] = (kind, loader)
        return loader

    return wrap


def available_datasets() -> list[str]:
    """Names accepted by ``data.dataset``."""
    return sorted(_REGISTRY)


def dataset_kind(name: str) -> str:
    """The kind of a registered dataset.

    >>> dataset_kind('sunspots')
    'timeseries'
    """
    return _REGISTRY[name][0]


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a user's CSV, Parquet or JSON-lines file; a missing file is an error naming it.

    >>> read_table('nowhere.csv')
    Traceback (most recent call last):
    ...
    FileNotFoundError: data.dataset: no such file: nowhere.csv
    """
    path = Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise ValueError(f"data.dataset: {path} is not a table file; allowed suffixes: {', '.join(FILE_SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"data.dataset: no such file: {path}")
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True)


def require_columns(frame: pd.DataFrame, columns: list[str], key: str = "data.label") -> None:
    """Raise a ``KeyError`` naming the missing column(s) and the columns found."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"{key}: column(s) {missing} not found; the columns are {list(frame.columns)}")


def _file_table(path: str, label: str | None, kind: str | None) -> tuple[str, Table]:
    if label is None:
        raise ValueError(f"data.label: a file dataset ({path}) needs the name of its label column")
    frame = read_table(path)
    require_columns(frame, [label])
    features = [c for c in frame.columns if c != label]
    looks_like_text = len(features) == 1 and pd.api.types.is_string_dtype(frame[features[0]])
    # The default for a file without data.kind (its kind class reads its columns from there).
    return kind or ("text" if looks_like_text else "tabular"), Table(frame, label)


def load_dataset(
    name: str,
    split: tuple[float, float, float] = (0.8, 0.1, 0.1),
    seed: int = 0,
    limit: int | None = None,
    *,
    label: str | None = None,
    kind: str | None = None,
    **options: Any,
) -> DatasetSplits:
    """Load a registered dataset, or a CSV/Parquet/JSONL file with a ``label`` column, and split it
    deterministically by ``seed``. ``options`` go to the kind's splitter (e.g. ``lookback=24`` for a
    time series, ``bins={...}`` for a table, ``tokenizer='wordpiece'`` for text).

    >>> splits = load_dataset('digits', seed=0)
    >>> len(splits.train), len(splits.val), len(splits.test), splits.input_shape
    (1438, 180, 179, (1, 8, 8))
    """
    kind, raw = raw_table(name, label=label, kind=kind)
    if isinstance(raw, Table):
        options = {**raw.options, **options}
    return get_kind(kind).split(name, raw, split, seed, limit, **options)


def raw_table(name: str, *, label: str | None = None, kind: str | None = None) -> tuple[str, Any]:
    """``(kind, what its loader returned)`` for a registered dataset or a file, before any splitting.

    >>> raw_table('rotten_tomatoes')[1].frame.columns.tolist()
    ['text', 'label']
    """
    if name in _REGISTRY:
        registered, loader = _REGISTRY[name]
        return registered, loader()
    if Path(name).suffix in FILE_SUFFIXES:
        return _file_table(name, label, kind)
    raise ValueError(
        f"data.dataset: unknown dataset {name!r}; registered datasets are "
        f"{', '.join(available_datasets())}; or a {'/'.join(FILE_SUFFIXES)} file with `label:`"
    )


def sample_rows(frame: pd.DataFrame, limit: int | None, seed: int) -> pd.DataFrame:
    """At most ``limit`` rows of ``frame``, drawn by ``seed`` (all of them when ``limit`` is None)."""
    return frame if limit is None else frame.sample(n=min(limit, len(frame)), random_state=seed + 1)


def kind_options(config: DataConfig) -> dict[str, Any]:
    """The keyword options of the dataset's kind from its ``data:`` section (``text``, ``window`` or
    ``tabular``); a section that does not fit a registered dataset's kind is an error naming it.

    >>> from deepseek_ray.config import DataConfig
    >>> kind_options(DataConfig(dataset='co2', window={'lookback': 12}))
    {'lookback': 12, 'horizon': 1}
    """
    kind = dataset_kind(config.dataset) if config.dataset in _REGISTRY else config.kind
    misfit = config.misfit(kind)  # the config checks data.kind itself; this checks a registered dataset's kind
    if misfit == "augment":
        hint = " (use data.text.augmentation)" if kind == "text" else ""
        raise ValueError(
            f"data.augment: {config.dataset} is a {kind} dataset; random_shift, mixup and cutmix are for images{hint}"
        )
    if misfit is not None:
        where = ", ".join(f"{section_kind} → data.{key}" for key, section_kind in OPTIONS_KIND.items())
        raise ValueError(
            f"data.{misfit}: {config.dataset} is a {kind} dataset; data.{misfit} is for "
            f"{OPTIONS_KIND[misfit]} datasets ({where})"
        )
    key = config.options_key
    return getattr(config, key).model_dump(exclude_none=True) if key else {}


def from_config(config: DataConfig, seed: int) -> DatasetSplits:
    """The dataset a ``data:`` section describes, split by ``seed``, with the options of its kind.

    >>> from deepseek_ray.config import DataConfig
    >>> from_config(DataConfig(dataset='digits', limit=100), seed=0).summary()['train']
    80
    """
    split = (config.split.train, config.split.val, config.split.test)
    # A file dataset with kind-specific options is of that kind (a CSV with `window:` is a time series).
    kind = config.kind or config.options_kind
    return load_dataset(
        config.dataset, split, seed, config.limit, label=config.label, kind=kind, **kind_options(config)
    )
