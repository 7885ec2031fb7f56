"""Batch augmentations for images, applied to the training split only.

A transform takes ``(x, y, generator)`` and returns ``(x, y)``; ``y`` may become soft labels
(MixUp, CutMix), which ``torch.nn.functional.cross_entropy`` accepts as class probabilities.
Each transform draws from the generator it is handed, so a seed fixes every augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F

BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def random_shift(pixels: int = 2) -> BatchTransform:
    """Translate each image by up to ``pixels`` in x and y (zero padding after normalisation's zero).

    >>> x, y = random_shift(2)(torch.ones(3, 1, 8, 8), torch.arange(3), torch.Generator().manual_seed(0))
    >>> x.shape
    torch.Size([3, 1, 8, 8])
    """

    def apply(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        padded = F.pad(x, (pixels, pixels, pixels, pixels))
        dx = torch.randint(0, 2 * pixels + 1, (n,), generator=gen)
        dy = torch.randint(0, 2 * pixels + 1, (n,), generator=gen)
        rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * pixels)
        shifted = padded.gather(2, rows.to(x.device))
        cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
        return shifted.gather(3, cols.to(x.device)), y

    return apply


def _soft(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return y if y.is_floating_point() else F.one_hot(y, num_classes).float()


def mixup(alpha: float, num_classes: int) -> BatchTransform:
    """MixUp: ``λ·x_i + (1−λ)·x_j`` with ``λ ~ Beta(α, α)``, labels mixed alike.

    >>> x, y = mixup(0.2, 3)(torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 2, 0]), torch.Generator().manual_seed(0))
    >>> y.shape, bool(torch.allclose(y.sum(1), torch.ones(4)))
    (torch.Size([4, 3]), True)
    """

    def apply(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lam = _beta(alpha, gen)
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        soft = _soft(y, num_classes)
        return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]

    return apply


def _beta(alpha: float, gen: torch.Generator) -> float:
    """One Beta(α, α) draw from two Gamma draws made with ``gen`` (torch's Beta takes no generator)."""
    a = torch._standard_gamma(torch.full((2,), alpha), generator=gen)
    return float(a[0] / a.sum())


def cutmix(alpha: float, num_classes: int) -> BatchTransform:
    """CutMix: paste a random box from a shuffled batch; labels mixed by the pasted area."""

    def apply(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        lam = _beta(alpha, gen)
        h, w = x.shape[-2:]
        cut_h, cut_w = int(h * (1 - lam) ** 0.5), int(w * (1 - lam) ** 0.5)
        cy, cx = int(torch.randint(0, h, (1,), generator=gen)), int(torch.randint(0, w, (1,), generator=gen))
        top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
        left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
        perm = torch.randperm(len(x), generator=gen).to(x.device)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = x[perm][..., top:bottom, left:right]
        kept = 1 - (bottom - top) * (right - left) / (h * w)
        soft = _soft(y, num_classes)
        return mixed, kept * soft + (1 - kept) * soft[perm]

    return apply


def compose(transforms: Iterable[BatchTransform]) -> BatchTransform | None:
    """Chain transforms left to right; ``None`` when there are none."""
    chain = list(transforms)
    if not chain:
        return None

    def apply(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        for transform in chain:
            x, y = transform(x, y, gen)
        return x, y

    return apply


def build_batch_transform(specs: Iterable[Any], num_classes: int) -> BatchTransform | None:
    """Build the training-batch transform from ``data.augment`` entries (config objects or dicts).

    >>> build_batch_transform([{'type': 'random_shift', 'pixels': 2}, {'type': 'mixup', 'alpha': 0.2}], 10) is not None
    True
    """
    transforms = []
    for spec in specs:
        spec = spec if isinstance(spec, dict) else spec.model_dump()
        kind = spec["type"]
        if kind == "random_shift":
            transforms.append(random_shift(spec.get("pixels", 2)))
        elif kind == "mixup":
            transforms.append(mixup(spec.get("alpha", 0.2), num_classes))
        elif kind == "cutmix":
            transforms.append(cutmix(spec.get("alpha", 1.0), num_classes))
        else:
            raise ValueError(f"data.augment.type: unknown {kind!r}; allowed: random_shift, mixup, cutmix")
    return compose(transforms)
