"""Population-based training (Jaderberg et al. 2017) in the runner's execution model.

Ray Tune's ``PopulationBasedTraining`` needs Tune's trial controller, which this runner does not use
(see :mod:`.runner`), so the same rules are applied here, synchronously (Ray Tune's ``synch=True``):

* every configuration the searcher proposes is one member of the population (``budget.trials``);
* members train in segments of ``perturbation_interval`` epochs, each segment one Ray task that
  starts from the member's checkpoint and yields a new one at its end (the driver writes it to
  ``<search folder>/checkpoints/``, so a resumed search continues from it);
* once every member has finished a segment, the worst ``quantile_fraction`` (by the last epoch's
  metric) take a checkpoint of a random member of the best fraction — weights, optimizer state,
  step counters — and that member's configuration, perturbed by :meth:`.Domain.perturb` (explore).

Copying weights needs one architecture for all, and ranking needs one metric: both are checked
before anything runs.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

from ..config import ConfigError, PbtSchedulerConfig, SearchConfig
from ..files import write_atomically
from .runner import TrialRecord, _Runner
from .space import SearchSpace

CHECKPOINTS = "checkpoints"


def check_pbt(space: SearchSpace, search: SearchConfig) -> None:
    """Refuse PBT where copying weights between trials cannot work, naming the keys that vary.

    >>> space = SearchSpace.from_mapping(
    ...     {'type': 'nas', 'ops': ['conv3x3'], 'cells': 2, 'channels': {'choice': [8, 16]}})
    >>> check_pbt(space, SearchConfig(scheduler={'type': 'pbt', 'max_t': 4}))
    Traceback (most recent call last):
    ...
    deepseek_ray.config.ConfigError: <space>: 1 error(s)
      - search.scheduler: pbt copies weights between trials, so every trial needs one architecture; channels varies (choice [8, 16]): fix it to one value, or use scheduler fifo, asha or hyperband
    """  # noqa: E501  (the doctest's expected message is one line)
    varying = space.varying_architecture()
    if varying:
        shown = lambda key: f"{len(space.ops)} ops" if key == "ops" else _domain_text(space, key)  # noqa: E731
        raise ConfigError(
            space.source,
            [
                f"search.scheduler: pbt copies weights between trials, so every trial needs one architecture; "
                f"{key} varies ({shown(key)}): fix it to one value, or use scheduler fifo, asha or hyperband"
                for key in varying
            ],
        )
    space.perturbable(_pbt_settings(search).hyperparameters)  # names any key that may not be perturbed


def _pbt_settings(search: SearchConfig) -> PbtSchedulerConfig:
    if not isinstance(search.scheduler, PbtSchedulerConfig):
        raise ValueError(f"PBT needs search.scheduler type pbt, got {search.scheduler.type!r}")
    return search.scheduler


def _domain_text(space: SearchSpace, key: str) -> str:
    domain = {**space.structure, **space.hyperparameters}[key]
    return f"{domain.kind} {list(domain.args)}"


class PBTRunner(_Runner):
    """The runner's loop with PBT's segments, generation barrier and exploit/explore step."""

    def __init__(self, objective: Any, space: SearchSpace, search: SearchConfig, **kwargs: Any):
        check_pbt(space, search)  # before Ray starts
        super().__init__(objective, space, search, **kwargs)
        self.pbt = _pbt_settings(search)
        self.mutable = space.perturbable(self.pbt.hyperparameters)
        self.checkpoints = self.state_path.parent / CHECKPOINTS
        self.checkpoints.mkdir(exist_ok=True)
        if self.state.rng is None:
            self.state.rng = random.Random(self.seed)

    # ------------------------------------------------------------- segments
    def generation_end(self) -> int:
        """The epoch every member trains to before the next exploit/explore step."""
        return min((self.state.generation + 1) * self.pbt.perturbation_interval, self.pbt.max_t)

    def pending_trial(self) -> TrialRecord | None:
        running = set(self.running.values())
        return next(
            (
                r
                for r in self.state.trials.values()
                if r.status == "PENDING" and r.trial_id not in running and r.checkpoint_epoch < self.generation_end()
            ),
            None,
        )

    def next_trial(self) -> TrialRecord | None:
        record = super().next_trial()
        if (
            record is None
            and not self.running
            and not (self.state.stop_reason or self.budget_hit())
            and self.exploit_and_explore()
        ):
            record = super().next_trial()
        return record

    def open_pruning(self, record: TrialRecord) -> None:
        if record.trial_id not in self.state.pruning_trials:  # one per trial, not per segment
            super().open_pruning(record)

    def segment(self, record: TrialRecord) -> dict[str, Any]:
        checkpoint = Path(record.checkpoint).read_bytes() if record.checkpoint else None
        return {"checkpoint": checkpoint, "epochs": (record.checkpoint_epoch, self.generation_end())}

    def keep_checkpoint(self, record: TrialRecord, checkpoint: bytes) -> None:
        path = self.checkpoints / f"{record.trial_id}-e{len(record.history)}.pt"
        write_atomically(path, checkpoint)
        record.checkpoint, record.checkpoint_epoch = str(path), len(record.history)

    def segment_done(self, generator: Any, record: TrialRecord) -> None:
        if record.checkpoint_epoch != len(record.history):
            return self.fail(
                generator,
                record,
                f"the objective's result at epoch {len(record.history)} has no "
                "'checkpoint', which pbt needs to continue the trial",
            )
        if len(record.history) >= self.pbt.max_t:
            return self.finish(generator, record, "TERMINATED")
        del self.running[generator]
        self.stop_clock(record)
        record.status = "PENDING"  # until every member reaches the generation's end
        self.state.save(self.state_path)

    def should_prune(self, record: TrialRecord, result: dict[str, Any]) -> bool:
        return False

    def final_values(self, record: TrialRecord) -> list[float] | None:
        """The last epoch's value: under PBT, earlier epochs may belong to weights the trial replaced."""
        return [float(record.history[-1][self.metrics[0]])] if record.history else None

    def wrap_up(self) -> None:
        for record in self.state.trials.values():
            if record.status == "PENDING" and record.history:  # stopped by a budget between segments
                self.complete(record, "STOPPED")

    # ------------------------------------------------------- exploit/explore
    def exploit_and_explore(self) -> bool:
        """At the generation barrier: the bottom quantile clones the top one, perturbed. False if no one waits."""
        waiting = [r for r in self.state.trials.values() if r.status == "PENDING" and r.history]
        if not waiting:
            return False
        metric = self.metrics[0]
        ranked = sorted(waiting, key=lambda r: r.history[-1][metric], reverse=self.modes[0] == "max")
        size = math.ceil(len(ranked) * self.pbt.quantile_fraction)
        size = min(size, len(ranked) // 2)  # the top and bottom never overlap
        top, bottom = ranked[:size], ranked[len(ranked) - size :] if size else []
        epoch = self.generation_end()
        for record in bottom:
            donor = self.state.rng.choice(top)
            record.params = self.explore(donor.params)
            record.checkpoint = donor.checkpoint
            changed = {k: record.params[k] for k in self.mutable if k in record.params}
            record.lineage.append(
                {"epoch": epoch, "from": donor.trial_id, "donor_params": dict(donor.params), "params": changed}
            )
            self.say(
                f"pbt epoch {epoch}: trial {record.trial_id} takes trial {donor.trial_id}'s weights, "
                + " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed.items())
            )
        self.state.generation += 1
        self.state.save(self.state_path)
        self.drop_unused_checkpoints()
        return True

    def explore(self, params: dict[str, Any]) -> dict[str, Any]:
        """The donor's configuration with each mutable hyperparameter perturbed."""
        factors, resample = self.pbt.perturbation_factors, self.pbt.resample_probability
        return {
            key: self.mutable[key].perturb(value, self.state.rng, factors, resample) if key in self.mutable else value
            for key, value in params.items()
        }

    def drop_unused_checkpoints(self) -> None:
        used = {r.checkpoint for r in self.state.trials.values()}
        for path in self.checkpoints.glob("*.pt"):
            if str(path) not in used:
                path.unlink(missing_ok=True)

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)
