"""The search NAS and HPO share, on Ray Tune's engine: ``Tuner.fit`` over a searcher and a scheduler.

"What to try" is a Tune searcher (OptunaSearch or HyperOptSearch over a library sampler, see
:mod:`.strategies`; Tune's own variant generator under PBT); "how long to run it" is a Tune scheduler
(:mod:`.schedulers`). Every configuration is a Tune trial, a class ``Trainable`` that runs one epoch per
step (:mod:`.trainable`). The experiment folder is Tune's: ``Tuner.restore`` and
``tune.ExperimentAnalysis`` open it, and ``resume=True`` is ``Tuner.restore`` after a crash or SIGKILL
(Tune writes the folder through :mod:`.storage`, so a kill never leaves half a state file). The
driver's :class:`.monitor.SearchMonitor` prints progress, holds the budgets and keeps the scheduler's
state in Tune's experiment checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..config import METRICS, POPULATION_SCHEDULERS, Metric, SearchConfig, TrainConfig
from ..runtime import is_verbose
from .monitor import error_line
from .schedulers import check_pbt, checkpoints_needed, make_scheduler, param_space
from .space import SearchSpace
from .start_line import StartLine
from .trainable import CHECKPOINT_FILE, SearchTrial, TrialPlan, is_number, unnest

ProgressFn = Callable[[str], None]
# An objective takes a configuration and a seed (and, to be paused or copied, checkpoint=) and yields
# one dict of metrics per epoch (see .trainable).
Objective = Callable[..., Iterator[dict[str, Any]]]
# What a training trial reports besides the trainer's epoch metrics (search.metric's list, with the trainer's).
# latency_ms: a batch-1 CPU forward, measured when a search optimises it
METRICS.register("latency_ms")(Metric("min", by_training=False))
METRICS.register("params")(Metric("min", by_training=False))  # parameter count


# ------------------------------------------------------------------------------ the training trial
@dataclass
class TrialSettings:
    """What every training trial shares: the data's shape, the training recipe, the seed.

    ``recipe`` is the experiment file's ``train`` section with the search's batch size per trial; each trial
    puts its searched hyperparameters in it (:meth:`TrainConfig.with_params`). Trials do not ``compile``:
    a trial's few epochs do not repay it.

    >>> TrialSettings(model_inputs={'in_channels': 1, 'num_classes': 10}, max_t=2).recipe.optimizer.type
    'adamw'
    """

    model_inputs: dict[str, Any]
    max_t: int
    task: str = "classification"
    recipe: TrainConfig = field(default_factory=TrainConfig)
    augment: list[dict[str, Any]] = field(default_factory=list)
    threads: int = 1
    measure_latency: bool = False
    extra_splits: tuple[str, ...] = ()
    checkpoints: bool = False  # put the trainer's state in every result (HyperBand pauses, PBT copies)


@dataclass
class TrainingObjective:
    """One training trial: build the configuration's model, train ``max_t`` epochs, yield val metrics.

    Yields ``val_accuracy`` (classification) or ``val_mae`` (regression), ``val_loss``, ``train_loss``,
    ``epoch``, ``params`` (parameter count) and, when asked, ``latency_ms`` (batch-1 CPU forward).
    A NaN loss raises in the trainer: Tune records the trial as failed (and retries it up to
    ``search.max_failures``).
    """

    data: Any  # DatasetSplits
    space: SearchSpace
    settings: TrialSettings

    def trainer(self, params: dict[str, Any], seed: int) -> Any:
        """The configuration's model and its trainer: the recipe with ``params`` in place, uncompiled."""
        import torch

        from ..data import build_batch_transform
        from ..models import build_model
        from ..optim import MixedPrecisionTrainer

        torch.manual_seed(seed)
        model = build_model(self.space.model_spec(params, self.settings.model_inputs))
        num_classes = self.settings.model_inputs.get("num_classes", 1)
        augment = build_batch_transform(self.settings.augment, num_classes) if self.settings.augment else None
        recipe = self.settings.recipe.with_params(params).model_copy(update={"compile": False})
        return MixedPrecisionTrainer.from_config(
            recipe, model, batch_transform=augment, seed=seed, task=self.settings.task
        )

    def __call__(self, params: dict[str, Any], seed: int, checkpoint: bytes | None = None) -> Iterator[dict[str, Any]]:
        """Train the remaining epochs up to ``max_t``, yielding each epoch's metrics.

        ``checkpoint`` (weights, optimizer state, counters and the epoch, maybe another trial's under
        PBT) is where training starts; with ``settings.checkpoints`` each result carries the new one
        under ``'checkpoint'``. The optimizer continues with *this* configuration's ``lr`` and
        ``weight_decay``.
        """
        import torch

        torch.set_num_threads(self.settings.threads)
        trainer = self.trainer(params, seed)
        trainer.total_steps = trainer.steps_per_epoch(self.data.train) * self.settings.max_t
        first = _continue_from(trainer, checkpoint, params.get("weight_decay")) if checkpoint is not None else 0
        model = trainer.model
        size = sum(p.numel() for p in model.parameters())
        for epoch in range(first + 1, self.settings.max_t + 1):
            train_loss = trainer.train_epoch(self.data.train)
            metrics: dict[str, Any] = {f"val_{k}": v for k, v in trainer.evaluate(self.data.val).items()}
            for split in self.settings.extra_splits:
                metrics.update({f"{split}_{k}": v for k, v in trainer.evaluate(getattr(self.data, split)).items()})
            metrics.update(train_loss=train_loss, epoch=epoch, params=size)
            if self.settings.measure_latency:
                metrics["latency_ms"] = forward_latency_ms(model, self.data.val.x[:1])
            if self.settings.checkpoints:
                metrics["checkpoint"] = _to_bytes(trainer.state_dict())  # its epoch count included
            yield metrics


def _to_bytes(state: dict[str, Any]) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _continue_from(trainer: Any, checkpoint: bytes, weight_decay: float | None) -> int:
    """Load a trainer checkpoint, keeping this trial's hyperparameters; return the epochs it has trained.

    The learning rate needs nothing: the schedule sets it from the trainer's own ``base_lrs`` at
    every step. The weight decay would stay the checkpoint's, so it is set back.
    """
    import io

    import torch

    trainer.load_state_dict(torch.load(io.BytesIO(checkpoint), weights_only=True))
    if weight_decay is not None:
        for group in trainer.optimizer.param_groups:
            group["weight_decay"] = weight_decay
    return int(trainer.epoch)


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
    """What a search found: the best configuration, the table of every trial, the Pareto front.

    ``path`` is Tune's experiment folder: ``tune.Tuner.restore(path, trainable)`` and
    ``tune.ExperimentAnalysis(path)`` open it.
    """

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


def trial_rows(grid: Any, space: SearchSpace, monitor: Any, lineage: dict[str, list]) -> list[dict[str, Any]]:
    """One row per trial of a Tune ``ResultGrid``: configuration, value per objective, epochs, time, status,
    error, the per-epoch history (as the monitor saw it) and, under PBT, its checkpoint and lineage."""
    rows = []
    # A trial is known by its folder: under PBT an exploited trial's last result may still be its donor's,
    # trial id included (Tune restores it with the donor's checkpoint and metrics).
    by_folder = {record.get("folder"): trial_id for trial_id, record in monitor.trials.items()}
    for result in grid:
        trial_id = by_folder.get(Path(result.path).name) or result.metrics.get("trial_id") or Path(result.path).name
        record = monitor.trials.get(trial_id)
        if record is None and result.error is None:
            continue  # created by the searcher but never started: a budget ended the search first
        record = record or {"history": {}, "values": None, "attempts": 1}
        params = unnest(result.config or {})
        history = [row for _, row in sorted(record["history"].items())]
        status = "ERROR" if result.error is not None else record.get("status", "TERMINATED")
        if status == "RUNNING":  # stopped by a budget, between Tune's checks
            status = "STOPPED"
        checkpoint = Path(result.checkpoint.path) / CHECKPOINT_FILE if result.checkpoint else None
        rows.append(
            {
                "trial_id": trial_id,
                "architecture": space.architecture(params) if params and space.kind != "params" else "",
                "params": params,
                **dict(zip(monitor.metrics, record["values"] or [None] * len(monitor.metrics), strict=True)),
                # the last report's epoch (Tune's experiment state)
                "epochs": int(result.metrics.get("training_iteration", len(history))),
                "time_s": round(float(result.metrics.get("time_total_s", 0.0)), 3),
                "status": status,
                "attempts": record.get("attempts", 1),
                "error": error_line(str(result.error)) if result.error is not None else None,
                "history": history,
                **({"checkpoint": str(checkpoint), "lineage": lineage.get(trial_id, [])} if checkpoint else {}),
            }
        )
    return sorted(rows, key=lambda row: row["trial_id"])


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
        if all(is_number(r.get(m)) for m in metrics)
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
    done = [r for r in rows if is_number(r.get(x)) and is_number(r.get(y))]
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
    """Search ``space`` for the best ``objective`` with ``Tuner.fit()``; each configuration is a Tune trial.

    ``objective(params, seed)`` yields a dict of metrics per epoch (a plain function of params works
    with one ``yield``). Under ``hyperband`` and ``pbt`` it also takes ``checkpoint=`` and puts its state
    under ``'checkpoint'`` in its results (:mod:`.trainable`). ``resume=True`` with the same ``name`` and
    ``storage_path`` continues a search that was interrupted, even by SIGKILL (``Tuner.restore``).

    >>> def sphere(params, seed):
    ...     yield {'loss': (params['x'] - 0.3) ** 2}
    >>> space = SearchSpace.from_mapping({'type': 'params', 'x': {'uniform': [0, 1]}})
    >>> search = SearchConfig(strategy={'type': 'tpe'}, scheduler={'type': 'fifo'}, metric='loss', mode='min',
    ...                       budget={'trials': 10})
    >>> run_trials(sphere, space, search, storage_path='/tmp/ds').best_metric < 0.05  # needs Ray  # doctest: +SKIP
    True
    """
    import ray
    from ray import tune

    from .monitor import listen, live_monitor
    from .storage import atomic_local_filesystem

    if search.scheduler.type in POPULATION_SCHEDULERS:
        check_pbt(space, search)  # before Ray starts
    storage = Path(storage_path or Path.cwd() / "runs" / name / "search").resolve()
    folder = storage / name
    key = str(folder)
    filesystem = atomic_local_filesystem()  # a SIGKILL never leaves half a state file for the resume
    plan = TrialPlan(tuple(search.objectives()[0]), search.scheduler.max_t, seed, name)
    slots = _slots(search)
    start_line = StartLine.remote(slots) if slots > 1 else None  # type: ignore[attr-defined]
    trainable = tune.with_resources(
        tune.with_parameters(SearchTrial, objective=objective, plan=plan, start_line=start_line),
        {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
    )
    listen(key, progress)
    start = time.perf_counter()
    try:
        with _tune_settings(_live_trials(search)):
            if resume and tune.Tuner.can_restore(folder, storage_filesystem=filesystem):
                tuner = tune.Tuner.restore(str(folder), trainable, resume_errored=True, storage_filesystem=filesystem)
            else:
                tuner = _new_tuner(
                    trainable, space, search, name=name, storage=storage, filesystem=filesystem, key=key, seed=seed
                )
            grid = tuner.fit()
    finally:
        listen(key, None)
        if start_line is not None:
            ray.kill(start_line)
    wall = time.perf_counter() - start
    monitor = live_monitor(key)
    lineage = getattr(monitor.scheduler, "lineage", {})
    rows = trial_rows(grid, space, monitor, lineage)
    metrics, modes = monitor.metrics, monitor.modes
    finished = [r for r in rows if r["status"] != "ERROR" and r[metrics[0]] is not None]
    if not finished:
        if not any(r["status"] == "ERROR" for r in rows):  # nothing failed: nothing reported in time
            raise RuntimeError(f"{monitor.stop_reason or 'the search ended'} before any trial reported an epoch")
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
        stop_reason=monitor.stop_reason or monitor.budget.trial_limit_reason(),
        wall_s=wall,
        path=str(folder),
        model_spec=model_spec(best["params"]) if model_spec else {},
        objectives=metrics,
        modes=modes,
        pareto_front=front,
        pareto_plot=plot,
    )


def _new_tuner(
    trainable: Any,
    space: SearchSpace,
    search: SearchConfig,
    *,
    name: str,
    storage: Path,
    filesystem: Any,
    key: str,
    seed: int,
) -> Any:
    """A ``Tuner`` for a new search: searcher, scheduler, budgets, failures, logging."""
    from ray import tune
    from ray.tune.logger import JsonLoggerCallback

    from .monitor import Budget, SearchMonitor
    from .strategies import make_searcher

    metrics, modes = search.objectives()
    pbt = search.scheduler.type in POPULATION_SCHEDULERS
    grid_size = math.prod(len(v) for v in space.grid().values()) if search.strategy.type == "grid" else None
    trials = min(search.budget.trials, grid_size or search.budget.trials)
    scheduler = make_scheduler(search, space, key=key)
    monitor = SearchMonitor(
        key,
        metrics,
        modes,
        Budget(search.budget.trials, search.scheduler.max_t, search.budget.time, search.budget.epochs, grid_size),
        describe=lambda config: describe(space, unnest(config)),
        scheduler=scheduler,
        prunes=search.scheduler.type in ("asha", "hyperband"),
        last_epoch=pbt,
    )
    one_metric = len(metrics) == 1
    if pbt:
        import random

        random.seed(seed)  # PBT explores with the random module
    return tune.Tuner(
        trainable,
        param_space=param_space(space) if pbt else None,
        tune_config=tune.TuneConfig(
            metric=metrics[0] if one_metric else None,
            mode=modes[0] if one_metric else None,
            search_alg=None if pbt else make_searcher(search, space, seed),  # PBT: Tune's variant generator
            scheduler=scheduler,
            num_samples=trials,
            max_concurrent_trials=_live_trials(search),
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            storage_filesystem=filesystem,
            stop=monitor,
            callbacks=[monitor, JsonLoggerCallback()],
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=checkpoints_needed(search)),
            verbose=1 if is_verbose() else 0,
        ),
    )


def _slots(search: SearchConfig) -> int:
    """How many trials can start at once: ``concurrency``, the trial budget and the CPUs and GPUs free now (a
    start line waiting for a slot the cluster cannot give would hold the first trials for its whole timeout)."""
    import ray

    cluster = ray.available_resources()
    fits = [search.concurrency, search.budget.trials]
    for need, have in ((search.cpus_per_trial, cluster.get("CPU", 0)), (search.gpus_per_trial, cluster.get("GPU", 0))):
        if need > 0:
            fits.append(int(have // need))
    return max(1, min(fits))


def _live_trials(search: SearchConfig) -> int:
    """Tune's ``max_concurrent_trials``. It counts paused trials too, and the synchronous schedulers pause
    trials until their peers catch up: PBT the whole population at each exploit step, HyperBand a bracket at
    each rung. Under them it is at least the population or the largest bracket; the cluster's resources
    then bound how many run at once."""
    spec = search.scheduler
    if spec.type in POPULATION_SCHEDULERS:
        return max(search.concurrency, search.budget.trials)
    if spec.type != "hyperband":
        return search.concurrency
    eta = spec.reduction_factor
    brackets = round(math.log(spec.max_t) / math.log(eta)) + 1  # as Tune's HyperBandScheduler counts them
    return max(search.concurrency, max(math.ceil(brackets / (s + 1) * eta**s) for s in range(brackets)))


@contextlib.contextmanager
def _tune_settings(concurrency: int) -> Iterator[None]:
    """Tune's settings for many short trials, read from the environment when the run starts: the experiment
    state saved at every step (a SIGKILL then loses no finished trial; ``storage.CopyGate`` keeps each save
    apart from the copy of the last one), placement groups asked for only as many trials as run at once,
    the old console output (``verbose`` rules it), and only
    the JSON result logger (added by the Tuner), which ``ExperimentAnalysis`` and the trial table read."""
    settings = {
        "TUNE_GLOBAL_CHECKPOINT_S": "0",
        "TUNE_MAX_PENDING_TRIALS_PG": str(concurrency),
        "RAY_AIR_NEW_OUTPUT": "0",
        "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    }
    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update({k: os.environ.get(k, v) for k, v in settings.items()})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def describe(space: SearchSpace, params: dict[str, Any]) -> str:
    """A configuration in a few words for the progress line: its architecture and learning rate.

    >>> describe(SearchSpace.from_mapping({'type': 'params', 'x': {'uniform': [0, 1]}}), {'x': 0.5})
    '{"x": 0.5}'
    """
    text = space.architecture(params) if space.kind != "params" else ""
    lr = params.get("lr")
    return f"{text} lr={lr:.1e}".strip() if isinstance(lr, float) else text or json.dumps(params, default=str)[:34]


def run_search(
    search: SearchConfig,
    data: Any,
    *,
    name: str = "search",
    storage_path: str | Path | None = None,
    seed: int = 0,
    augment: list[dict[str, Any]] | None = None,
    recipe: TrainConfig | None = None,
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
        recipe=(recipe or TrainConfig()).model_copy(update={"per_device_train_batch_size": search.batch_size}),
        augment=[a if isinstance(a, dict) else a.model_dump() for a in (augment or [])],
        threads=max(1, int(search.cpus_per_trial)),
        measure_latency="latency_ms" in metrics,
        extra_splits=extra_splits,
        checkpoints=checkpoints_needed(search),
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
