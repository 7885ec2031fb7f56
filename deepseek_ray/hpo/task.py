"""The body of one trial's Ray task, in a module that imports nothing heavy.

Pooled Ray workers import the module of the function they run; keeping this one bare (and
``deepseek_ray.hpo`` lazy) lets a first trial start without importing torch, Optuna or Ray Tune.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def run_objective(
    objective: Callable[..., Iterator[dict[str, Any]]], params: dict[str, Any], seed: int, **segment: Any
) -> Iterator[dict[str, Any]]:
    """Stream the objective's per-epoch results back to the driver (``segment``: PBT's checkpoint and epochs).

    >>> list(run_objective(lambda p, s: iter([{'loss': p['x'] + s}]), {'x': 1.0}, 2))
    [{'loss': 3.0}]
    """
    yield from objective(params, seed, **segment)
