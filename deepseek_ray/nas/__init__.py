"""Neural architecture search over the op registry.

>>> from deepseek_ray.nas import NASConfig
>>> config = NASConfig(search_space=['conv3x3', 'conv5x5', 'identity'], budget=100, metric='accuracy')
>>> space, search = config.to_search()
>>> search.budget.trials, search.metric, space.ops
(100, 'val_accuracy', ['conv3x3', 'conv5x5', 'identity'])

Hand it to the runner to search: ``run_search(config, data)`` (``deepseek_ray.hpo``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import SearchConfig
from ..hpo.space import SearchSpace
from ..models import Architecture

__all__ = ["Architecture", "NASConfig"]


@dataclass
class NASConfig:
    """A NAS search in one call: which ops, how large a network, how many trials, which metric.

    ``metric='accuracy'`` means validation accuracy; ``budget`` is the number of trials.
    ``cells``, ``nodes`` and ``channels`` take a list (searched) or an int (fixed).
    """

    search_space: list[str]
    budget: int = 20
    metric: str = "accuracy"
    mode: str = "max"
    cells: list[int] | int = field(default_factory=lambda: [2, 3])
    nodes: list[int] | int = 1
    channels: list[int] | int = field(default_factory=lambda: [16, 32])
    lr: tuple[float, float] = (1e-3, 1e-2)
    strategy: str = "tpe"
    scheduler: dict[str, Any] = field(default_factory=lambda: {"type": "asha", "grace_period": 1, "max_t": 4})
    concurrency: int = 2
    time: float | str | None = None

    def to_search(self) -> tuple[SearchSpace, SearchConfig]:
        """The equivalent search space and ``search`` section."""
        as_domain = lambda v: {"choice": list(v)} if isinstance(v, (list, tuple)) else v  # noqa: E731
        space = SearchSpace.from_mapping(
            {
                "type": "nas",
                "ops": list(self.search_space),
                "cells": as_domain(self.cells),
                "nodes": as_domain(self.nodes),
                "channels": as_domain(self.channels),
                "lr": {"loguniform": list(self.lr)},
            },
            source="NASConfig",
        )
        metric = self.metric if self.metric.startswith(("val_", "train_")) else f"val_{self.metric}"
        search = SearchConfig(
            strategy={"type": self.strategy},
            scheduler=self.scheduler,
            metric=metric,
            mode=self.mode,
            budget={"trials": self.budget, "time": self.time},
            concurrency=self.concurrency,
        )
        return space, search
