"""Datasets, deterministic splits and training-batch augmentation.

>>> from deepseek_ray.data import load_dataset
>>> splits = load_dataset('digits', seed=0)
>>> splits.num_classes
10
"""

from .augment import build_batch_transform, cutmix, mixup, random_shift
from .datasets import (
    ArrayDataset,
    DatasetSplits,
    available_datasets,
    fingerprint,
    load_dataset,
    register_dataset,
    split_indices,
)

__all__ = [
    "ArrayDataset",
    "DatasetSplits",
    "available_datasets",
    "build_batch_transform",
    "cutmix",
    "fingerprint",
    "load_dataset",
    "mixup",
    "random_shift",
    "register_dataset",
    "split_indices",
]
