"""Datasets, deterministic splits, preprocessing fitted on the training split, and augmentation.

>>> from deepseek_ray.data import load_dataset
>>> splits = load_dataset('digits', seed=0)
>>> splits.num_classes
10
"""

from ..config.registries import KINDS
from ..files import fingerprint
from . import sources  # noqa: F401  (registers the named datasets)
from .augment import build_batch_transform, cutmix, mixup, random_shift
from .datasets import (
    ArrayDataset,
    DatasetSplits,
    Table,
    available_datasets,
    dataset_kind,
    from_config,
    kind_options,
    load_dataset,
    raw_table,
    read_table,
    register_dataset,
    sample_rows,
    split_indices,
)
from .image import ImageKind, image_splits
from .kinds import (
    BadRequest,
    Baseline,
    DataKind,
    RequestParser,
    get_kind,
    kind_metadata,
    kind_of,
    one_or_many,
    register_kind,
)
from .tabular import TabularKind, TabularTransform, tabular_splits
from .text import AUGMENTATIONS, BackTranslation, TextKind, TextPreprocessor, load_tokenizer, train_tokenizer, wordnet
from .timeseries import TimeSeriesKind, time_segments, timeseries_splits

__all__ = [
    "AUGMENTATIONS",
    "KINDS",
    "ArrayDataset",
    "BackTranslation",
    "BadRequest",
    "Baseline",
    "DataKind",
    "DatasetSplits",
    "ImageKind",
    "RequestParser",
    "Table",
    "TabularKind",
    "TabularTransform",
    "TextKind",
    "TextPreprocessor",
    "TimeSeriesKind",
    "available_datasets",
    "build_batch_transform",
    "cutmix",
    "dataset_kind",
    "from_config",
    "kind_options",
    "fingerprint",
    "get_kind",
    "image_splits",
    "kind_metadata",
    "kind_of",
    "load_dataset",
    "raw_table",
    "sample_rows",
    "load_tokenizer",
    "one_or_many",
    "mixup",
    "random_shift",
    "read_table",
    "register_dataset",
    "register_kind",
    "split_indices",
    "tabular_splits",
    "time_segments",
    "timeseries_splits",
    "train_tokenizer",
    "wordnet",
]
