"""One search trial as a Ray Tune class ``Trainable``: one ``step()`` per epoch of an objective.

An objective is ``objective(params, seed)``, a generator of one metrics dict per epoch. To be paused
(HyperBand) or copied (PBT) it also takes ``checkpoint=`` (bytes it produced earlier, maybe another
trial's) and puts its state, as bytes, under the key ``'checkpoint'`` of each result; it then
continues from that state, its own epoch count included. Tune saves those bytes when it checkpoints
the trial and hands them back through ``load_checkpoint``.

This module is what a trial actor imports: it imports Ray Tune and nothing of torch or Optuna.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.tune.result import DONE, RESULT_DUPLICATE

CHECKPOINT_FILE = "trial_state.bin"
Objective = Callable[..., Iterator[dict[str, Any]]]


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of one search shares: the objective's metrics, the epochs of a trial, the seed."""

    metrics: tuple[str, ...]
    max_t: int
    seed: int = 0
    name: str = "search"


def trial_seed(base: int, params: dict[str, Any]) -> int:
    """A trial's seed: the search's seed and its configuration (Tune's trial ids are random, the order
    trials start in is not theirs to keep), so a rerun of the same configuration trains the same model.

    >>> trial_seed(0, {'x': 1}) == trial_seed(0, {'x': 1}) != trial_seed(1, {'x': 1})
    True
    """
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode()).digest()
    return (base + int.from_bytes(digest[:4], "little")) % 2**31


def unnest(config: dict[str, Any]) -> dict[str, Any]:
    """Flatten a searcher's (possibly nested) config into parameter names.

    >>> unnest({'lr': 0.1, 'structure': {'cells': 1, 'cell0_op0': 'zero'}, 'structure/nodes': 1})
    {'lr': 0.1, 'cells': 1, 'cell0_op0': 'zero', 'nodes': 1}
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(unnest(value))
        else:
            flat[key.rsplit("/", 1)[-1]] = value
    return flat


class SearchTrial(tune.Trainable):
    """Runs ``objective`` one epoch per ``step()``; Tune gives it ``objective``, ``plan`` and maybe a
    :class:`~.start_line.StartLine` through ``tune.with_parameters`` (once per actor: with ``reuse_actors`` a new trial
    only resets the config).

    >>> from ray import tune
    >>> def sphere(params, seed):
    ...     yield {'loss': (params['x'] - 0.3) ** 2}
    >>> trainable = tune.with_parameters(SearchTrial, objective=sphere, plan=TrialPlan(('loss',), max_t=1))
    >>> tune.Tuner(trainable, param_space={'x': 0.3}).fit()[0].metrics['loss']  # needs Ray  # doctest: +SKIP
    0.0
    """

    def setup(
        self,
        config: dict[str, Any],
        objective: Objective | None = None,
        plan: TrialPlan | None = None,
        start_line: Any = None,
    ) -> None:
        assert objective is not None and plan is not None, "give objective and plan through tune.with_parameters"
        self.objective, self.plan = objective, plan
        if start_line is not None:  # once per actor: a reused actor only resets its config
            ray.get(start_line.arrive.remote())
        self.start(config)

    def start(self, config: dict[str, Any]) -> None:
        self.params = unnest(config)
        self.seed = trial_seed(self.plan.seed, self.params)
        self.results: Iterator[dict[str, Any]] | None = None
        self.resume_from: bytes | None = None
        self.state: bytes | None = None  # the objective's latest checkpoint

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self.start(new_config)  # a load_checkpoint may follow (PBT's exploit, a paused trial resumed)
        return True

    def step(self) -> dict[str, Any]:
        if self.results is None:
            extra = {} if self.resume_from is None else {"checkpoint": self.resume_from}
            self.results = iter(self.objective(self.params, self.seed, **extra))
        try:
            result = dict(next(self.results))
        except StopIteration:  # the objective ran out of epochs before max_t: the last result stands
            return {DONE: True, RESULT_DUPLICATE: True}
        state = result.pop("checkpoint", None)
        if state is not None:
            self.state = state
        epoch = self.iteration + 1
        bad = [m for m in self.plan.metrics if not is_number(result.get(m))]
        if bad:
            raise ValueError(f"metric {bad[0]} is {result.get(bad[0])!r} at epoch {epoch}")
        result[DONE] = epoch >= self.plan.max_t
        return result

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        if self.state is None:
            raise RuntimeError(
                "this scheduler pauses or copies trials, so the objective must take checkpoint= and put its "
                "state (bytes) under 'checkpoint' in its results; or use scheduler fifo or asha"
            )
        Path(checkpoint_dir, CHECKPOINT_FILE).write_bytes(self.state)

    def load_checkpoint(self, checkpoint: Any) -> None:  # the folder save_checkpoint wrote into
        self.resume_from = self.state = Path(str(checkpoint), CHECKPOINT_FILE).read_bytes()
        self.results = None  # the objective restarts from it at the next step

    def __repr__(self) -> str:  # the actor's repr_name in `ray list actors --detail` and the dashboard
        # Ray takes it once, when the actor starts; with reuse_actors one actor runs many trials.
        return f"{self.plan.name} search trial" if hasattr(self, "plan") else super().__repr__()


def is_number(value: Any) -> bool:
    """A finite int or float (what a metric must be).

    >>> is_number(0.5), is_number(float('nan')), is_number(None)
    (True, False, False)
    """
    return isinstance(value, (int, float)) and math.isfinite(value)
