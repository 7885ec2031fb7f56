"""Images: arrays ``(N, C, H, W)`` of raw pixel values, normalised by the training split's mean and std.

>>> from deepseek_ray.data import load_dataset
>>> splits = load_dataset('digits', seed=0)
>>> splits.kind.name, splits.model_inputs(), splits.kind.baseline(splits).description
('image', {'in_channels': 1, 'num_classes': 10}, 'plain 2-conv CNN')
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..files import fingerprint
from .datasets import ArrayDataset, DatasetSplits, encode_labels, split_indices
from .kinds import Baseline, DataKind, register_kind, shape_text


@register_kind("image")
class ImageKind(DataKind):
    """Loaders return ``(images (N, C, H, W), labels (N,))``; requests send pixel values 0–255 in the
    model's input shape (e.g. 28×28), or flat."""

    def split(
        self,
        name: str,
        raw: Any,
        fractions: tuple[float, float, float],
        seed: int,
        limit: int | None = None,
        **options: Any,
    ) -> DatasetSplits:
        if options:
            raise ValueError(f"image datasets take no options, got {sorted(options)}")
        images, labels = raw
        return image_splits(name, images, labels, fractions, seed, limit)

    def baseline(self, data: DatasetSplits) -> Baseline:
        """A plain 2-conv CNN trained with the run's recipe."""
        spec = {
            "type": "plain_cnn",
            "in_channels": data.input_shape[0],
            "num_classes": data.num_classes,
            "image_size": data.input_shape[-1],
        }
        return Baseline("plain 2-conv CNN", model_spec=spec)

    def request_hint(self, meta: dict[str, Any]) -> str:
        shape = shape_text(meta)
        return f'{{"inputs": <{shape} pixel values>}}'


def image_splits(
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    fractions: tuple[float, float, float],
    seed: int,
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

    def normalise(idx: np.ndarray) -> np.ndarray:
        return (images[idx] - mean) / std

    y, classes = encode_labels(labels)
    return DatasetSplits(
        name=name,
        train=ArrayDataset(normalise(train_idx), y[train_idx], train_idx),
        val=ArrayDataset(normalise(val_idx), y[val_idx], val_idx),
        test=ArrayDataset(normalise(test_idx), y[test_idx], test_idx),
        labels=classes,
        input_shape=tuple(images.shape[1:]),
        preprocessing={"type": "normalize", "mean": mean, "std": std},
        fingerprint=fingerprint(images, y, train_idx, val_idx),
        kind=ImageKind(),
    )
