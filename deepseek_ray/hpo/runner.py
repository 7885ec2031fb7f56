"""The search runner that NAS and HPO share: Ray Tune searchers, Ray tasks, budgets, resume.

"What to try" is a Ray Tune ``Searcher`` (OptunaSearch or HyperOptSearch over a library sampler,
see :mod:`.strategies`); "how long to run it" is a pruner over each trial's epoch results. The
driver runs the loop itself: every configuration is one Ray task (a streaming generator that
yields one result per epoch), at most ``concurrency`` at a time, on Ray's pooled workers.

Why not ``Tuner.fit()``: measured here, a Tune run spends ≈4.5 s before its first trial starts
(new trial actors, placement groups), more than the whole overhead the search may add to 40
trials of 0.2 s (bench/bench_search_overhead.py). Pooled task workers start in milliseconds.

Every configuration stays a separately recorded trial: the driver writes the searcher, the pruner
and the trial table to ``<storage>/<name>/state.pkl`` (atomically) whenever a trial starts or ends,
so ``resume=True`` after a crash or SIGKILL continues with the searcher's own state, never reruns a
finished trial, and reruns the trials that were running.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..config import METRICS, Metric, SearchConfig
from ..files import write_atomically
from .space import SearchSpace
from .strategies import make_pruner, make_searcher
from .task import run_objective

ProgressFn = Callable[[str], None]
# An objective takes a configuration and a seed and yields one dict of metrics per epoch.
Objective = Callable[[dict[str, Any], int], Iterator[dict[str, Any]]]
STATE_FILE = "state.pkl"
# What a training trial reports besides the trainer's epoch metrics (search.metric's list, with the trainer's).
# latency_ms: a batch-1 CPU forward, measured when a search optimises it
METRICS.register("latency_ms")(Metric("min", by_training=False))
METRICS.register("params")(Metric("min", by_training=False))  # parameter count


# ------------------------------------------------------------------------------ the training trial
@dataclass
class TrialSettings:
    """What every training trial shares: the data's shape, the training recipe, the seed.

    >>> TrialSettings(model_inputs={'in_channels': 1, 'num_classes': 10}, max_t=2).task
    'classification'
    """

    model_inputs: dict[str, Any]
    max_t: int
    task: str = "classification"
    batch_size: int = 64
    weight_decay: float = 0.01
    augment: list[dict[str, Any]] = field(default_factory=list)
    threads: int = 1
    measure_latency: bool = False
    extra_splits: tuple[str, ...] = ()


@dataclass
class TrainingObjective:
    """One training trial: build the configuration's model, train ``max_t`` epochs, yield val metrics.

    Yields ``val_accuracy`` (classification) or ``val_mae`` (regression), ``val_loss``, ``train_loss``,
    ``epoch``, ``params`` (parameter count) and, when asked, ``latency_ms`` (batch-1 CPU forward).
    A NaN loss raises in the trainer, which records the trial as failed.
    """

    data: Any  # DatasetSplits
    space: SearchSpace
    settings: TrialSettings

    def __call__(
        self, params: dict[str, Any], seed: int, checkpoint: bytes | None = None, epochs: tuple[int, int] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Train epochs ``epochs[0] + 1 … epochs[1]`` (default: all ``max_t``), yielding each epoch's metrics.

        PBT runs a trial in segments: ``checkpoint`` (weights, optimizer state and counters, maybe
        another trial's) is where the segment starts; the segment's last result carries the new
        ``checkpoint``. The optimizer continues with *this* configuration's ``lr`` and ``weight_decay``.
        """
        import torch

        from ..data import build_batch_transform
        from ..models import build_model
        from ..optim import MixedPrecisionTrainer

        torch.set_num_threads(self.settings.threads)
        torch.manual_seed(seed)
        model = build_model(self.space.model_spec(params, self.settings.model_inputs))
        num_classes = self.settings.model_inputs.get("num_classes", 1)
        augment = build_batch_transform(self.settings.augment, num_classes) if self.settings.augment else None
        trainer = MixedPrecisionTrainer(
            model,
            "adamw",
            params["lr"],
            weight_decay=params.get("weight_decay", self.settings.weight_decay),
            scheduler="cosine",
            warmup_steps=int(params.get("warmup_steps", 0)),
            clip_grad_norm=1.0,
            per_device_train_batch_size=int(params.get("batch_size", self.settings.batch_size)),
            batch_transform=augment,
            seed=seed,
            task=self.settings.task,
        )
        trainer.total_steps = math.ceil(len(self.data.train) / trainer.batch_size) * self.settings.max_t
        if checkpoint is not None:
            _continue_from(trainer, checkpoint, params.get("weight_decay"))
        size = sum(p.numel() for p in model.parameters())
        first, last = epochs or (0, self.settings.max_t)
        for epoch in range(first + 1, last + 1):
            train_loss = trainer.train_epoch(self.data.train)
            metrics: dict[str, Any] = {f"val_{k}": v for k, v in trainer.evaluate(self.data.val).items()}
            for split in self.settings.extra_splits:
                metrics.update({f"{split}_{k}": v for k, v in trainer.evaluate(getattr(self.data, split)).items()})
            metrics.update(train_loss=train_loss, epoch=epoch, params=size)
            if self.settings.measure_latency:
                metrics["latency_ms"] = forward_latency_ms(model, self.data.val.x[:1])
            if epochs is not None and epoch == last:
                metrics["checkpoint"] = _to_bytes(trainer.state_dict())
            yield metrics


def _to_bytes(state: dict[str, Any]) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _continue_from(trainer: Any, checkpoint: bytes, weight_decay: float | None) -> None:
    """Load a trainer checkpoint, keeping this trial's hyperparameters.

    The learning rate needs nothing: the schedule sets it from the trainer's own ``base_lrs`` at
    every step. The weight decay would stay the checkpoint's, so it is set back.
    """
    import io

    import torch

    trainer.load_state_dict(torch.load(io.BytesIO(checkpoint), weights_only=True))
    if weight_decay is not None:
        for group in trainer.optimizer.param_groups:
            group["weight_decay"] = weight_decay


def forward_latency_ms(model: Any, example: Any, repeats: int = 20) -> float:
    """Median batch-1 forward time of ``model`` in milliseconds (eval mode, no grad).

    >>> import torch
    >>> forward_latency_ms(torch.nn.Linear(4, 2), torch.zeros(1, 4)) > 0
    True
    """
    import torch

    model.eval()
    times = []
    with torch.no_grad():
        model(example)  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(example)
            times.append(time.perf_counter() - start)
    model.train()
    return 1000 * sorted(times)[len(times) // 2]


# ---------------------------------------------------------------------------------- the result
@dataclass
class SearchResult:
    """What a search found: the best configuration, the table of every trial, the Pareto front."""

    best_params: dict[str, Any]
    best_architecture: str
    best_metric: float
    metric: str
    mode: str
    trials: list[dict[str, Any]]
    stop_reason: str
    wall_s: float
    path: str = ""
    model_spec: dict[str, Any] = field(default_factory=dict)
    objectives: list[str] = field(default_factory=list)
    modes: list[str] = field(default_factory=list)
    pareto_front: list[dict[str, Any]] = field(default_factory=list)
    pareto_plot: str = ""

    def save(self, path: str | Path) -> Path:
        """Write as JSON (``best.json`` in the search folder); ``train`` reads it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> SearchResult:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no search result at {path}; run `deepseek-ray search` first")
        return cls(**json.loads(path.read_text()))


# ------------------------------------------------------------------------------------ the state
@dataclass
class TrialRecord:
    """One configuration: its parameters, every epoch's result, its status and errors."""

    trial_id: str
    params: dict[str, Any]
    seed: int
    status: str = "PENDING"  # RUNNING, TERMINATED, PRUNED, STOPPED, ERROR
    history: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    attempts: int = 0
    time_s: float = 0.0  # over every attempt and segment
    checkpoint: str = ""  # PBT: the file the next segment starts from (maybe another trial's)
    checkpoint_epoch: int = 0  # PBT: epochs trained into that checkpoint
    lineage: list[dict[str, Any]] = field(default_factory=list)  # PBT: one entry per exploit

    @property
    def finished(self) -> bool:
        return self.status in ("TERMINATED", "PRUNED", "STOPPED", "ERROR")


@dataclass
class SearchState:
    """Everything a resumed search needs; pickled after every trial start and end."""

    searcher: Any
    pruning: Any  # an Optuna study whose pruner plays the scheduler
    trials: dict[str, TrialRecord] = field(default_factory=dict)
    pruning_trials: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0  # search time spent before this run (for the time budget)
    stop_reason: str = ""
    generation: int = 0  # PBT: exploit/explore steps taken
    rng: Any = None  # PBT: random.Random behind exploit/explore, restored on resume

    def save(self, path: Path) -> None:
        import cloudpickle

        write_atomically(path, cloudpickle.dumps(self))

    @staticmethod
    def load(path: Path) -> SearchState:
        import cloudpickle

        return cloudpickle.loads(path.read_bytes())


# ---------------------------------------------------------------------------------- the runner
class _Runner:
    """The driver's loop: ask the searcher, launch tasks, read epoch results, prune, record, persist."""

    def __init__(
        self,
        objective: Objective,
        space: SearchSpace,
        search: SearchConfig,
        *,
        name: str,
        folder: Path,
        seed: int,
        resume: bool,
        progress: ProgressFn | None,
    ):
        import ray

        self.space, self.search, self.name, self.seed, self.progress = space, search, name, seed, progress
        self.metrics, self.modes = search.objectives()
        self.state_path = folder / STATE_FILE
        folder.mkdir(parents=True, exist_ok=True)
        if resume and self.state_path.is_file():
            self.state = SearchState.load(self.state_path)
            self.state.stop_reason = ""
            for record in self.state.trials.values():
                if not record.finished:  # running at the kill: run again from its last checkpoint (or scratch)
                    record.status, record.history = "PENDING", record.history[: record.checkpoint_epoch]
        else:
            import optuna

            direction: Literal["maximize", "minimize"] = "maximize" if self.modes[0] == "max" else "minimize"
            pruning = optuna.create_study(direction=direction, pruner=make_pruner(search))
            self.state = SearchState(make_searcher(search, space, seed), pruning)
        self.objective_ref = ray.put(objective)
        self.task = ray.remote(run_objective)
        self.task_options = dict(
            num_returns="streaming", max_retries=0, num_cpus=search.cpus_per_trial, num_gpus=search.gpus_per_trial
        )
        self.running: dict[Any, str] = {}  # generator -> trial id
        self.started = time.perf_counter()
        self.trial_started: dict[str, float] = {}
        self.grid_size = math.prod(len(v) for v in space.grid().values()) if search.strategy.type == "grid" else None

    # ------------------------------------------------------------------ budgets
    def elapsed(self) -> float:
        return self.state.elapsed_s + time.perf_counter() - self.started

    def epochs_used(self) -> int:
        return sum(len(r.history) for r in self.state.trials.values())

    def budget_hit(self) -> str:
        """Why no more epochs may run ('' while the budget lasts)."""
        budget = self.search.budget
        if budget.time is not None and self.elapsed() >= budget.time:
            return f"time budget ({budget.time:g} s) reached"
        if budget.epochs is not None and self.epochs_used() >= budget.epochs:
            return f"epoch budget ({budget.epochs} epochs) reached"
        return ""

    def next_trial(self) -> TrialRecord | None:
        """A trial to run: a pending one (a retry or a rerun after resume), else a new suggestion."""
        if self.state.stop_reason or self.budget_hit():
            return None
        return self.pending_trial() or self.new_trial()

    def pending_trial(self) -> TrialRecord | None:
        running = set(self.running.values())
        return next(
            (r for r in self.state.trials.values() if r.status == "PENDING" and r.trial_id not in running), None
        )

    def new_trial(self) -> TrialRecord | None:
        issued = len(self.state.trials)
        limit = min(self.search.budget.trials, self.grid_size or self.search.budget.trials)
        if issued >= limit:
            return None
        trial_id = f"{issued:05d}"
        config = self.state.searcher.suggest(trial_id)
        if config is None:  # the searcher has nothing left to propose
            return None
        record = TrialRecord(trial_id, SearchSpace.unnest(config), seed=self.seed + issued)
        self.state.trials[trial_id] = record
        return record

    # ------------------------------------------------------------------- the loop
    def run(self) -> None:
        import ray

        while True:
            while len(self.running) < self.search.concurrency and (record := self.next_trial()) is not None:
                self.launch(record)
            if not self.running:
                break
            ready, _ = ray.wait(list(self.running), num_returns=1)
            for generator in ready:
                self.on_ready(generator)
        self.wrap_up()
        self.state.elapsed_s = self.elapsed()
        self.state.stop_reason = self.budget_hit() or self.trial_limit_reason()
        self.state.save(self.state_path)

    def wrap_up(self) -> None:
        """Settle trials left between segments when the loop ends (PBT)."""

    def trial_limit_reason(self) -> str:
        if self.grid_size is not None and self.grid_size <= len(self.state.trials) < self.search.budget.trials:
            return f"grid exhausted ({self.grid_size} configurations)"
        return f"trial budget ({self.search.budget.trials} trials) reached"

    def launch(self, record: TrialRecord) -> None:
        record.status, record.history, record.attempts = (
            "RUNNING",
            record.history[: record.checkpoint_epoch],
            record.attempts + 1,
        )
        self.open_pruning(record)
        self.state.save(self.state_path)
        generator = self.task.options(**self.task_options, name=f"{self.name}/trial-{record.trial_id}").remote(
            self.objective_ref, record.params, record.seed, **self.segment(record)
        )
        self.running[generator] = record.trial_id
        self.trial_started[record.trial_id] = time.perf_counter()

    def open_pruning(self, record: TrialRecord) -> None:
        self.state.pruning_trials[record.trial_id] = self.state.pruning.ask()

    def segment(self, record: TrialRecord) -> dict[str, Any]:
        """Extra arguments of the objective (PBT: where to start and stop)."""
        return {}

    def stop_clock(self, record: TrialRecord) -> None:
        record.time_s = round(record.time_s + time.perf_counter() - self.trial_started.pop(record.trial_id), 3)

    def on_ready(self, generator: Any) -> None:
        import ray

        record = self.state.trials[self.running[generator]]
        try:
            result = ray.get(next(generator))
        except StopIteration:
            return self.segment_done(generator, record)
        except Exception as err:  # the objective raised, or its worker died
            return self.fail(generator, record, _error_line(err))
        bad = [k for k in self.metrics if not _is_number(result.get(k))]
        if bad:
            return self.fail(
                generator, record, f"metric {bad[0]} is {result.get(bad[0])!r} at epoch {len(record.history) + 1}"
            )
        checkpoint = result.pop("checkpoint", None)
        result = {**result, "at_s": round(self.elapsed(), 3)}
        record.history.append(result)
        if checkpoint is not None:
            self.keep_checkpoint(record, checkpoint)
        if self.should_prune(record, result):
            return self.finish(generator, record, "PRUNED")
        if self.budget_hit():
            return self.finish(generator, record, "STOPPED")

    def should_prune(self, record: TrialRecord, result: dict[str, Any]) -> bool:
        if len(self.metrics) > 1 or len(record.history) >= self.search.scheduler.max_t:
            return False  # a trial that ran all its epochs is complete, whatever the last rung says
        trial = self.state.pruning_trials[record.trial_id]
        trial.report(float(result[self.metrics[0]]), step=len(record.history))
        return trial.should_prune()

    def segment_done(self, generator: Any, record: TrialRecord) -> None:
        """The objective's generator ended: the trial is complete (PBT: its segment is)."""
        self.finish(generator, record, "TERMINATED")

    def keep_checkpoint(self, record: TrialRecord, checkpoint: bytes) -> None:
        """Only PBT continues trials from checkpoints; other schedulers drop them."""

    def finish(self, generator: Any, record: TrialRecord, status: str) -> None:
        import ray

        if status != "TERMINATED":
            ray.cancel(generator)
        del self.running[generator]
        self.stop_clock(record)
        self.complete(record, status)

    def complete(self, record: TrialRecord, status: str) -> None:
        """Record the trial's end and tell the pruning study and the searcher."""
        import optuna

        record.status = status
        values = self.final_values(record)
        state = optuna.trial.TrialState.PRUNED if status == "PRUNED" else optuna.trial.TrialState.COMPLETE
        pruning_trial = self.state.pruning_trials.pop(record.trial_id)
        if values is None:
            self.state.pruning.tell(pruning_trial, state=optuna.trial.TrialState.FAIL)
            self.state.searcher.on_trial_complete(record.trial_id, error=True)
        else:
            self.state.pruning.tell(pruning_trial, None if status == "PRUNED" else values[0], state=state)
            self.state.searcher.on_trial_complete(record.trial_id, result=dict(zip(self.metrics, values, strict=True)))
        self.state.save(self.state_path)
        self.report(record)

    def fail(self, generator: Any, record: TrialRecord, error: str) -> None:
        import optuna
        import ray

        ray.cancel(generator)
        del self.running[generator]
        record.errors.append(error)
        self.state.pruning.tell(self.state.pruning_trials.pop(record.trial_id), state=optuna.trial.TrialState.FAIL)
        self.stop_clock(record)
        if record.attempts <= self.search.max_failures:
            record.status = "PENDING"  # retried with the same configuration
            self.state.save(self.state_path)
            return
        record.status = "ERROR"
        self.state.searcher.on_trial_complete(record.trial_id, error=True)
        self.state.save(self.state_path)
        self.report(record)

    def final_values(self, record: TrialRecord) -> list[float] | None:
        """The trial's value per objective: the best epoch (one metric) or the last epoch (several)."""
        if not record.history:
            return None
        if len(self.metrics) > 1:
            return [float(record.history[-1][m]) for m in self.metrics]
        pick = max if self.modes[0] == "max" else min
        return [float(pick(r[self.metrics[0]] for r in record.history))]

    def report(self, record: TrialRecord) -> None:
        if self.progress is None:
            return
        done = sum(r.finished for r in self.state.trials.values())
        values = self.final_values(record)
        shown = (
            " ".join(f"{m}={v:.4g}" for m, v in zip(self.metrics, values, strict=True))
            if values
            else record.errors[-1][:80]
        )
        best = self.best_value()
        self.progress(
            f"trial {done:>2}/{self.search.budget.trials} {record.status.lower():<10} {self.describe(record):<34} "
            f"{shown} after {len(record.history)} epoch(s) | best {best}"
        )

    def describe(self, record: TrialRecord) -> str:
        text = self.space.architecture(record.params) if self.space.kind != "params" else ""
        lr = record.params.get("lr")
        return (
            f"{text} lr={lr:.1e}".strip()
            if isinstance(lr, float)
            else text or json.dumps(record.params, default=str)[:34]
        )

    def best_value(self) -> str:
        """The best so far over every trial with a result (running ones too): the first objective's best
        value, or the size of the Pareto front. One pass over the trials' values, not the whole :meth:`table`."""
        values = [v for v in map(self.final_values, self.state.trials.values()) if v is not None]
        if len(self.metrics) > 1:
            rows = [dict(zip(self.metrics, v, strict=True)) for v in values]
            return f"{len(pareto_front(rows, self.metrics, self.modes))} on the Pareto front"
        return f"{(max if self.modes[0] == 'max' else min)(v[0] for v in values):.4f}" if values else "-"

    def table(self) -> list[dict[str, Any]]:
        """One row per trial: configuration, value per objective, epochs, time, status, error."""
        rows = []
        for record in sorted(self.state.trials.values(), key=lambda r: r.trial_id):
            values: Sequence[float | None] = self.final_values(record) or [None] * len(self.metrics)
            rows.append(
                {
                    "trial_id": record.trial_id,
                    "architecture": self.space.architecture(record.params)
                    if record.params and self.space.kind != "params"
                    else "",
                    "params": record.params,
                    **dict(zip(self.metrics, values, strict=True)),
                    "epochs": len(record.history),
                    "time_s": record.time_s,
                    "status": record.status,
                    "attempts": record.attempts,
                    "error": record.errors[-1] if record.errors else None,
                    "history": record.history,
                    **({"checkpoint": record.checkpoint, "lineage": record.lineage} if record.checkpoint else {}),
                }
            )
        return rows


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _error_line(err: BaseException) -> str:
    """``Type: first line of the message`` of a (Ray-wrapped) exception."""
    cause = getattr(err, "cause", None) or err
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"[:300]


def pareto_front(rows: list[dict[str, Any]], metrics: list[str], modes: list[str]) -> list[dict[str, Any]]:
    """The rows no other row beats in every objective (and strictly in one).

    Rows are visited best first (lexicographically, every objective as "higher is better"): a row's
    dominators sort before it, and a row dominated by anything is dominated by one already on the front,
    so each row is compared with the front so far, not with every row (O(n log n + n · front size)).

    >>> rows = [{'a': 1, 'b': 5}, {'a': 2, 'b': 4}, {'a': 0, 'b': 1}]
    >>> [r['a'] for r in pareto_front(rows, ['a', 'b'], ['max', 'min'])]
    [2, 0]
    """
    sign = [1 if m == "max" else -1 for m in modes]
    scored = [
        (i, [s * r[m] for s, m in zip(sign, metrics, strict=False)])
        for i, r in enumerate(rows)
        if all(_is_number(r.get(m)) for m in metrics)
    ]

    def dominates(a: list[float], b: list[float]) -> bool:
        pairs = list(zip(a, b, strict=True))
        return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)

    front: list[list[float]] = []
    kept: set[int] = set()
    for i, score in sorted(scored, key=lambda item: item[1], reverse=True):
        if not any(dominates(other, score) for other in front):
            front.append(score)
            kept.add(i)
    return [r for i, r in enumerate(rows) if i in kept]  # in the rows' order


def plot_pareto(rows: list[dict[str, Any]], front: list[dict[str, Any]], metrics: list[str], path: Path) -> Path:
    """A PNG of every finished trial in the first two objectives, the Pareto front highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = metrics[:2]
    done = [r for r in rows if _is_number(r.get(x)) and _is_number(r.get(y))]
    figure, axes = plt.subplots(figsize=(5, 4), dpi=100)
    axes.scatter([r[x] for r in done], [r[y] for r in done], c="lightgray", label="trials")
    ordered = sorted(front, key=lambda r: r[x])
    axes.plot([r[x] for r in ordered], [r[y] for r in ordered], "o-", c="tab:red", label="Pareto front")
    axes.set_xlabel(x), axes.set_ylabel(y), axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def run_trials(
    objective: Objective,
    space: SearchSpace,
    search: SearchConfig,
    *,
    name: str = "search",
    storage_path: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    progress: ProgressFn | None = None,
    model_spec: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> SearchResult:
    """Search ``space`` for the best ``objective``; each configuration runs as its own Ray task.

    ``objective(params, seed)`` yields a dict of metrics per epoch (a plain function of params works
    with one ``yield``). ``resume=True`` with the same ``name`` and ``storage_path`` continues a
    search that was interrupted, even by SIGKILL.

    Under ``scheduler: {type: pbt}`` (:mod:`.pbt`) the objective runs in segments:
    ``objective(params, seed, checkpoint=bytes | None, epochs=(first, last))`` trains epochs
    ``first + 1 … last`` from ``checkpoint`` and puts the new one under the key ``'checkpoint'`` of
    its last result.

    >>> def sphere(params, seed):
    ...     yield {'loss': (params['x'] - 0.3) ** 2}
    >>> space = SearchSpace.from_mapping({'type': 'params', 'x': {'uniform': [0, 1]}})
    >>> search = SearchConfig(strategy={'type': 'tpe'}, scheduler={'type': 'fifo'}, metric='loss', mode='min',
    ...                       budget={'trials': 10})
    >>> run_trials(sphere, space, search, storage_path='/tmp/ds').best_metric < 0.05  # needs Ray  # doctest: +SKIP
    True
    """
    folder = Path(storage_path or Path.cwd() / "runs" / name / "search").resolve() / name
    runner_class = _Runner
    if search.scheduler.type == "pbt":
        from .pbt import PBTRunner as runner_class
    runner = runner_class(
        objective, space, search, name=name, folder=folder, seed=seed, resume=resume, progress=progress
    )
    start = time.perf_counter()
    runner.run()
    wall = time.perf_counter() - start
    rows = runner.table()
    metrics, modes = runner.metrics, runner.modes
    finished = [r for r in rows if r["status"] != "ERROR" and r[metrics[0]] is not None]
    if not finished:
        errors = "; ".join(str(r.get("error")) for r in rows[:3])
        raise RuntimeError(f"every trial failed ({len(rows)}): {errors}")
    front = pareto_front(finished, metrics, modes) if len(metrics) > 1 else []
    best = (max if modes[0] == "max" else min)(front or finished, key=lambda r: r[metrics[0]])
    plot = str(plot_pareto(rows, front, metrics, folder / "pareto.png")) if front else ""
    (folder / "trials.json").write_text(json.dumps(rows, indent=1, default=str))
    return SearchResult(
        best_params=best["params"],
        best_architecture=best["architecture"],
        best_metric=best[metrics[0]],
        metric=metrics[0],
        mode=modes[0],
        trials=rows,
        stop_reason=runner.state.stop_reason,
        wall_s=wall,
        path=str(folder),
        model_spec=model_spec(best["params"]) if model_spec else {},
        objectives=metrics,
        modes=modes,
        pareto_front=front,
        pareto_plot=plot,
    )


def run_search(
    search: SearchConfig,
    data: Any,
    *,
    name: str = "search",
    storage_path: str | Path | None = None,
    seed: int = 0,
    augment: list[dict[str, Any]] | None = None,
    weight_decay: float = 0.01,
    progress: ProgressFn | None = None,
    resume: bool = False,
    extra_splits: tuple[str, ...] = (),
) -> SearchResult:
    """Run a NAS/HPO search over ``data`` (a ``DatasetSplits``) and return the best configuration.

    ``search`` is the experiment file's ``search`` section (``HPOConfig`` is the same class), or a
    :class:`deepseek_ray.nas.NASConfig`, which converts itself. Each trial trains the space's model
    for up to ``search.scheduler.max_t`` epochs. ``resume=True`` continues the search stored under
    the same ``name`` and ``storage_path``.

    >>> from deepseek_ray.hpo import HPOConfig, run_search
    >>> from deepseek_ray.data import load_dataset
    >>> digits = load_dataset('digits')
    >>> run_search(HPOConfig(budget={'trials': 4}), digits).best_architecture  # needs Ray  # doctest: +SKIP
    'c32|conv3x3|conv5x5'
    """
    if hasattr(search, "to_search"):  # NASConfig
        space, search = search.to_search()
    else:
        space = SearchSpace.load(search.space)
    if space.kind == "params":
        raise ValueError(
            f"search.space: {space.source} is a 'params' space; run_search trains models, so use nas or hpo"
        )
    inputs = (
        data.model_inputs()
        if hasattr(data, "model_inputs")
        else {"in_channels": data.input_shape[0], "num_classes": data.num_classes}
    )
    metrics, _ = search.objectives()
    settings = TrialSettings(
        model_inputs=inputs,
        max_t=search.scheduler.max_t,
        task=getattr(data, "task", "classification"),
        batch_size=search.batch_size,
        weight_decay=weight_decay,
        augment=[a if isinstance(a, dict) else a.model_dump() for a in (augment or [])],
        threads=max(1, int(search.cpus_per_trial)),
        measure_latency="latency_ms" in metrics,
        extra_splits=extra_splits,
    )
    return run_trials(
        TrainingObjective(data, space, settings),
        space,
        search,
        name=name,
        storage_path=storage_path,
        seed=seed,
        resume=resume,
        progress=progress,
        model_spec=lambda params: space.model_spec(params, inputs),
    )
