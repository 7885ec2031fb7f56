"""The search as the driver sees it: a Tune ``Callback`` that prints progress, keeps each trial's status,
holds the budgets (a Tune ``Stopper``) and carries the scheduler's state through Tune's experiment
checkpoint, so that ``Tuner.restore`` resumes every part of it.

Tune pickles its callbacks and stoppers with the run config and gives them back on restore; a console
printer cannot travel that way, so progress goes to a sink registered per experiment (:func:`listen`).
"""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cloudpickle
from ray.tune import Callback
from ray.tune.stopper import Stopper

from .storage import copy_gate
from .trainable import is_number

# Keys Tune adds to every result: not the objective's, so not in a trial's history.
_TUNE_KEYS = {
    "done",
    "timesteps_total",
    "episodes_total",
    "training_iteration",
    "trial_id",
    "date",
    "timestamp",
    "time_this_iter_s",
    "time_total_s",
    "pid",
    "hostname",
    "node_ip",
    "time_since_restore",
    "iterations_since_restore",
    "timesteps_since_restore",
    "checkpoint_dir_name",
    "should_checkpoint",
    "experiment_tag",
    "logdir",
}
ProgressFn = Callable[[str], None]
_SINKS: dict[str, ProgressFn] = {}
_LIVE: dict[str, SearchMonitor] = {}  # experiment -> the monitor Tune set up (after a restore: its unpickled one)


def listen(key: str, progress: ProgressFn | None) -> None:
    """Send the progress lines of experiment ``key`` to ``progress`` (None: nowhere)."""
    if progress is None:
        _SINKS.pop(key, None)
    else:
        _SINKS[key] = progress


def say(key: str, line: str) -> None:
    """One progress line of experiment ``key``, to its sink if it has one.

    >>> listen('demo', print); say('demo', 'trial 1/2 done'); listen('demo', None)
    trial 1/2 done
    """
    if key in _SINKS:
        _SINKS[key](line)


def live_monitor(key: str) -> SearchMonitor:
    """The :class:`SearchMonitor` of the last run of experiment ``key`` in this process."""
    return _LIVE[key]


@dataclass(frozen=True)
class Budget:
    """The search's limits: trials (Tune's ``num_samples``), wall time and total epochs, and a trial's epochs."""

    trials: int
    max_t: int
    time_s: float | None = None
    epochs: int | None = None
    grid_size: int | None = None

    def trial_limit_reason(self) -> str:
        if self.grid_size is not None and self.grid_size < self.trials:
            return f"grid exhausted ({self.grid_size} configurations)"
        return f"trial budget ({self.trials} trials) reached"


class SearchMonitor(Callback, Stopper):
    """Progress lines, each trial's status, the time and epoch budgets, the scheduler's state.

    ``describe(params)`` names a configuration on its progress line; ``scheduler`` is the run's Tune
    scheduler, whose state this callback saves with Tune's experiment state; ``prunes``: it stops trials
    early (asha, hyperband); ``last_epoch``: a trial's value is its last epoch's (PBT: earlier epochs may
    belong to weights the trial has since replaced), not its best.

    >>> monitor = SearchMonitor('demo', ['loss'], ['min'], Budget(trials=2, max_t=1, epochs=5))
    >>> monitor.epochs = 5
    >>> monitor.stop_all(), monitor.stop_reason
    (True, 'epoch budget (5 epochs) reached')
    """

    def __init__(
        self,
        key: str,
        metrics: list[str],
        modes: list[str],
        budget: Budget,
        *,
        describe: Callable[[dict[str, Any]], str] = lambda params: "",
        scheduler: Any = None,
        prunes: bool = False,
        last_epoch: bool = False,
    ):
        self.key, self.metrics, self.modes, self.budget = key, metrics, modes, budget
        self.describe, self.scheduler, self.prunes, self.last_epoch = describe, scheduler, prunes, last_epoch
        self.epochs = 0
        self.elapsed_before = 0.0
        self.stop_reason = ""
        self.trials: dict[str, dict[str, Any]] = {}  # id -> status, attempts, values, epochs, history
        self.started = time.perf_counter()
        self._scheduler_blob: bytes | None = None

    # ----------------------------------------------------------------- the budgets (Stopper)
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False  # a trial's own length is max_t (the trainable) or the scheduler's

    def stop_all(self) -> bool:
        if not self.stop_reason:
            if self.budget.time_s is not None and self.elapsed() >= self.budget.time_s:
                self.stop_reason = f"time budget ({self.budget.time_s:g} s) reached"
            elif self.budget.epochs is not None and self.epochs >= self.budget.epochs:
                self.stop_reason = f"epoch budget ({self.budget.epochs} epochs) reached"
        return bool(self.stop_reason)

    # ------------------------------------------------------------------ the trials (Callback)
    def setup(
        self, stop: Any = None, num_samples: int | None = None, total_num_samples: int | None = None, **info: Any
    ):
        self.started = time.perf_counter()
        _LIVE[self.key] = self

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        copy_gate(self.key).wait()  # this step saves the state: the copy of the last save must be done
        if self._scheduler_blob is not None and self.scheduler is not None and trials:
            restore_scheduler(self.scheduler, self._scheduler_blob, trials)
            self._scheduler_blob = None

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        copy_gate(self.key).wait()  # the final save's copy, put in place

    def record(self, trial: Any) -> dict[str, Any]:
        if trial.trial_id not in self.trials:  # the folder names the trial in the results (``trial_rows``)
            folder = Path(trial.path).name if getattr(trial, "path", None) else None
            self.trials[trial.trial_id] = {
                "status": "RUNNING",
                "attempts": 1,
                "values": None,
                "epochs": 0,
                "history": {},
                "folder": folder,
            }
        return self.trials[trial.trial_id]

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info) -> None:
        record = self.record(trial)
        self.epochs += 1
        epoch = int(result.get("training_iteration", record["epochs"] + 1))
        # Every epoch's report, as it came: a trial's result.json may lose rows (Tune copies it back from the
        # storage path when a paused trial restarts, and a SIGKILL cuts its tail). An epoch reported twice (a
        # retry, or weights taken from another trial under PBT) keeps its last report.
        record["history"][epoch] = history_row(result, epoch)
        record["epochs"] = epoch
        record["values"] = self.values(record)

    def values(self, record: dict[str, Any]) -> list[float] | None:
        """A trial's value per objective: its best epoch (one metric), else its last (several, or PBT)."""
        history = [h for _, h in sorted(record["history"].items()) if all(is_number(h.get(m)) for m in self.metrics)]
        if not history:
            return None
        if len(self.metrics) > 1 or self.last_epoch:
            return [float(history[-1][m]) for m in self.metrics]
        pick = max if self.modes[0] == "max" else min
        return [float(pick(h[self.metrics[0]] for h in history))]

    def on_trial_recover(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.record(trial)["attempts"] += 1

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        record = self.record(trial)
        if record["epochs"] >= self.budget.max_t:
            record["status"] = "TERMINATED"
        elif self.stop_reason:
            record["status"] = "STOPPED"
        else:
            record["status"] = "PRUNED" if self.prunes else "TERMINATED"  # else its objective ran out of epochs
        self.report(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.record(trial)["status"] = "ERROR"
        self.report(trial)

    def report(self, trial: Any) -> None:
        record = self.trials[trial.trial_id]
        done = sum(r["status"] not in ("RUNNING",) for r in self.trials.values())
        shown = (
            " ".join(f"{m}={v:.4g}" for m, v in zip(self.metrics, record["values"], strict=True))
            if record["values"]
            else error_line(getattr(trial, "error_message", None) or "error")[:80]
        )
        say(
            self.key,
            f"trial {done:>2}/{self.budget.trials} {record['status'].lower():<10} "
            f"{self.describe(trial.config):<34} {shown} after {record['epochs']} epoch(s) | best {self.best()}",
        )

    def best(self) -> str:
        values = [r["values"] for r in self.trials.values() if r["values"] is not None]
        if not values:
            return "-"
        if len(self.metrics) > 1:
            from .runner import pareto_front

            rows = [dict(zip(self.metrics, v, strict=True)) for v in values]
            return f"{len(pareto_front(rows, self.metrics, self.modes))} on the Pareto front"
        return f"{(max if self.modes[0] == 'max' else min)(v[0] for v in values):.4f}"

    # --------------------------------------------------- Tune's experiment checkpoint
    def get_state(self) -> dict[str, Any]:
        copy_gate(self.key).saved()  # Tune asks in each save of its experiment state, then copies the save
        return {
            "epochs": self.epochs,
            "elapsed_s": self.elapsed(),
            "stop_reason": self.stop_reason,
            "trials": self.trials,
            "scheduler": scheduler_state(self.scheduler) if self.scheduler is not None else None,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        self.epochs, self.elapsed_before, self.trials = state["epochs"], state["elapsed_s"], state["trials"]
        self.stop_reason = ""  # a resumed search may go on where a budget had stopped it only if raised
        self._scheduler_blob = state["scheduler"]  # bound to the restored trials at the first step
        for record in self.trials.values():
            if record["status"] == "RUNNING":  # running at the kill: Tune runs it again
                record["attempts"] += 1


def history_row(result: dict[str, Any], epoch: int) -> dict[str, Any]:
    """One epoch of a trial's history: the objective's metrics (not Tune's keys), its epoch, Tune's clock.

    >>> history_row({'loss': 0.5, 'training_iteration': 2, 'time_total_s': 1.23456, 'pid': 7}, 2)
    {'loss': 0.5, 'epoch': 2, 'at_s': 1.235}
    """
    kept = {k: v for k, v in result.items() if k not in _TUNE_KEYS and k != "config"}
    return {**kept, "epoch": kept.get("epoch", epoch), "at_s": round(float(result.get("time_total_s", 0.0)), 3)}


def error_line(text: str) -> str:
    """``Type: first line`` of an error Tune recorded (its traceback's last line names the exception).

    >>> error_line('Traceback (most recent call last):\\n  File "x"\\nValueError: metric loss is nan at epoch 2')
    'ValueError: metric loss is nan at epoch 2'
    """
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    errors = [line for line in lines if ":" in line and line.split(":")[0].replace(".", "").isidentifier()]
    return (errors[-1] if errors else lines[-1] if lines else "")[:300]


# --------------------------------------------------------------------------- the scheduler's state
class _TrialsById(cloudpickle.Pickler):  # cloudpickle: HyperBand keeps lambdas
    """Pickles a scheduler with every Tune ``Trial`` replaced by its id (restored trials are new objects)
    and every in-flight save (a future of the killed session) by nothing."""

    def persistent_id(self, obj: Any) -> Any:
        from ray.tune.execution.tune_controller import _FutureTrainingResult
        from ray.tune.experiment import Trial

        if isinstance(obj, Trial):
            return ("trial", obj.trial_id)
        if isinstance(obj, _FutureTrainingResult):
            return ("pending save", None)
        return None


class _TrialsFromIds(pickle.Unpickler):
    def __init__(self, blob: bytes, trials: dict[str, Any]):
        super().__init__(io.BytesIO(blob))
        self.trials = trials

    def persistent_load(self, pid: Any) -> Any:
        kind, trial_id = pid
        return self.trials.get(trial_id) if kind == "trial" else None


def scheduler_state(scheduler: Any) -> bytes:
    """The scheduler's attributes, pickled with trials by id.

    >>> from ray.tune.schedulers import ASHAScheduler
    >>> len(scheduler_state(ASHAScheduler(max_t=4))) > 0
    True
    """
    buffer = io.BytesIO()
    _TrialsById(buffer).dump(dict(vars(scheduler)))
    return buffer.getvalue()


def restore_scheduler(scheduler: Any, blob: bytes, trials: list[Any]) -> None:
    """Put back what :func:`scheduler_state` saved, binding trial ids to the restored ``trials``."""
    state = _TrialsFromIds(blob, {t.trial_id: t for t in trials}).load()
    for mapping in state.values():  # a trial the run no longer has drops out of the scheduler's tables
        if isinstance(mapping, dict):
            mapping.pop(None, None)
    vars(scheduler).update(state)
