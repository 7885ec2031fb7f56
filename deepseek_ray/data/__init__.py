"""Datasets, deterministic splits, preprocessing fitted on the training split, and augmentation.

>>> from deepseek_ray.data import load_dataset
>>> splits = load_dataset('digits', seed=0)
>>> splits.num_classes
10
"""

from . import sources  # noqa: F401  (registers the named datasets)
from .augment import build_batch_transform, cutmix, mixup, random_shift
from .datasets import (
    KINDS,
    ArrayDataset,
    DatasetSplits,
    Table,
    available_datasets,
    dataset_kind,
    fingerprint,
    load_dataset,
    read_table,
    register_dataset,
    split_indices,
)
from .tabular import TabularTransform, tabular_splits
from .text import AUGMENTATIONS, BackTranslation, TextPreprocessor, load_tokenizer, train_tokenizer, wordnet
from .timeseries import time_segments, timeseries_splits

__all__ = [
    "AUGMENTATIONS", "KINDS", "ArrayDataset", "BackTranslation", "DatasetSplits", "Table", "TabularTransform",
    "TextPreprocessor", "available_datasets", "build_batch_transform", "cutmix", "dataset_kind", "fingerprint",
    "load_dataset", "load_tokenizer", "mixup", "random_shift", "read_table", "register_dataset", "split_indices",
    "tabular_splits", "time_segments", "timeseries_splits", "train_tokenizer", "wordnet",
]
