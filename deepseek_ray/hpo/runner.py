"""The Ray Tune runner that both NAS and HPO use.

"What to try" (an Optuna sampler behind Ray's ``OptunaSearch``) stays apart from "how long to run
it" (a Tune scheduler), so any strategy composes with any scheduler. Each trial is a function
trainable in one process, sized by ``cpus_per_trial``; actors are reused between trials, because
a new trial actor costs seconds here (../shared/ANCHORS.md).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ray import tune

from ..config import SearchConfig
from ..data import DatasetSplits
from ..runtime import is_verbose
from .space import SearchSpace

ProgressFn = Callable[[str], None]


@dataclass
class TrialSettings:
    """What every trial shares: the data's shape, the training recipe, the seed."""

    space: SearchSpace
    input_channels: int
    num_classes: int
    max_t: int
    batch_size: int
    weight_decay: float
    augment: list[dict[str, Any]]
    seed: int
    threads: int


def train_trial(params: dict[str, Any], *, data: DatasetSplits, settings: TrialSettings) -> None:
    """One trial: build the sampled architecture, train ``max_t`` epochs, report val metrics each epoch."""
    import torch

    from ..data import build_batch_transform
    from ..models import build_model
    from ..optim import MixedPrecisionTrainer

    torch.set_num_threads(settings.threads)
    torch.manual_seed(settings.seed)
    spec = {"type": "cellnet", "arch": settings.space.architecture(params), "in_channels": settings.input_channels,
            "num_classes": settings.num_classes, "dropout": params.get("dropout", 0.1)}
    trainer = MixedPrecisionTrainer(
        build_model(spec), "adamw", params["lr"], weight_decay=params.get("weight_decay", settings.weight_decay),
        scheduler="cosine", warmup_steps=int(params.get("warmup_steps", 0)), clip_grad_norm=1.0,
        per_device_train_batch_size=int(params.get("batch_size", settings.batch_size)),
        batch_transform=build_batch_transform(settings.augment, settings.num_classes), seed=settings.seed,
    )
    steps = math.ceil(len(data.train) / trainer.batch_size)
    trainer.total_steps = steps * settings.max_t
    for epoch in range(1, settings.max_t + 1):
        train_loss = trainer.train_epoch(data.train)
        val = trainer.evaluate(data.val)
        tune.report({"val_accuracy": val["accuracy"], "val_loss": val["loss"], "train_loss": train_loss, "epoch": epoch})


@dataclass
class SearchResult:
    """What a search found: the best configuration and the table of every trial."""

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

    def save(self, path: str | Path) -> Path:
        """Write as JSON (``best.json`` in the search folder); ``train`` reads it."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, default=str))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SearchResult":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no search result at {path}; run `deepseek-ray search` first")
        return cls(**json.loads(path.read_text()))


def make_sampler(strategy: str, seed: int, n_startup_trials: int):
    """The Optuna sampler behind each strategy name."""
    import optuna

    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "tpe":
        # group=True handles the conditional (per-cell) parameters; constant_liar spreads parallel trials.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True, constant_liar=True)
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials, warn_independent_sampling=False)
    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    raise ValueError(f"search.strategy.type: unknown {strategy!r}; allowed: random, tpe, gp, cmaes, nsga2")


def make_scheduler(search: SearchConfig):
    """The Tune scheduler named by ``search.scheduler.type`` (time unit: epochs)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler

    spec = search.scheduler
    if spec.type == "asha":
        return ASHAScheduler(time_attr="epoch", metric=search.metric, mode=search.mode, max_t=spec.max_t, grace_period=min(spec.grace_period, spec.max_t), reduction_factor=spec.reduction_factor)
    if spec.type == "hyperband":
        return HyperBandScheduler(time_attr="epoch", metric=search.metric, mode=search.mode, max_t=spec.max_t, reduction_factor=spec.reduction_factor)
    return FIFOScheduler()


class _EpochBudget(tune.Stopper):
    """A Tune stopper: stop everything once all trials together have trained ``budget`` epochs."""

    def __init__(self, budget: int | None):
        self.budget, self.used, self.hit = budget, 0, False

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        self.used += 1
        return False

    def stop_all(self) -> bool:
        self.hit = self.budget is not None and self.used >= self.budget
        return self.hit


def run_search(
    search: SearchConfig,
    data: DatasetSplits,
    *,
    name: str = "search",
    storage_path: str | Path | None = None,
    seed: int = 0,
    augment: list[dict[str, Any]] | None = None,
    weight_decay: float = 0.01,
    progress: ProgressFn | None = None,
) -> SearchResult:
    """Run a NAS/HPO search on Ray Tune and return the best configuration.

    ``search`` is the experiment file's ``search`` section (``HPOConfig`` is the same class), or a
    :class:`deepseek_ray.nas.NASConfig`, which converts itself.

    >>> from deepseek_ray.hpo import HPOConfig, run_search       # doctest: +SKIP
    >>> from deepseek_ray.data import load_dataset                # doctest: +SKIP
    >>> run_search(HPOConfig(budget={'trials': 4}), load_dataset('digits')).best_architecture  # doctest: +SKIP
    'c32|conv3x3|conv5x5'
    """
    if hasattr(search, "to_search"):  # NASConfig
        space, search = search.to_search()
    else:
        space = SearchSpace.load(search.space)
    from ray.tune.search.optuna import OptunaSearch

    settings = TrialSettings(
        space=space, input_channels=data.input_shape[0], num_classes=data.num_classes,
        max_t=search.scheduler.max_t, batch_size=search.batch_size, weight_decay=weight_decay,
        augment=[a if isinstance(a, dict) else a.model_dump() for a in (augment or [])],
        seed=seed, threads=max(1, int(search.cpus_per_trial)),
    )
    searcher = OptunaSearch(
        space.define_by_run, metric=search.metric, mode=search.mode,
        sampler=make_sampler(search.strategy.type, seed, search.strategy.n_startup_trials),
    )
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, data=data, settings=settings),
        {"cpu": search.cpus_per_trial, "gpu": search.gpus_per_trial},
    )
    budget = _EpochBudget(search.budget.epochs)
    tracker = SearchProgress(search, progress, space)
    storage = str(Path(storage_path or Path.cwd() / "runs" / name / "search").resolve())
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=make_scheduler(search), num_samples=search.budget.trials,
            max_concurrent_trials=search.concurrency, time_budget_s=search.budget.time, reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, stop=budget, verbose=1 if is_verbose() else 0, callbacks=[tracker],
            failure_config=tune.FailureConfig(max_failures=search.max_failures),
        ),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - start
    trials = _trial_table(grid, tracker.history, space, search.metric, search.mode)
    finished = [t for t in trials if t["status"] != "ERROR" and t[search.metric] is not None]
    if not finished:
        errors = "; ".join(str(t.get("error")) for t in trials[:3])
        raise RuntimeError(f"every trial failed ({len(trials)}): {errors}")
    best = (max if search.mode == "max" else min)(finished, key=lambda t: t[search.metric])
    if budget.hit:
        reason = f"epoch budget ({search.budget.epochs} epochs) reached"
    elif search.budget.time is not None and len(trials) < search.budget.trials:
        reason = f"time budget ({search.budget.time:g} s) reached"
    else:
        reason = f"trial budget ({search.budget.trials} trials) reached"
    spec = {"type": "cellnet", "arch": best["architecture"], "in_channels": settings.input_channels,
            "num_classes": settings.num_classes, "dropout": best["params"].get("dropout", 0.1)}
    return SearchResult(
        best_params=best["params"], best_architecture=best["architecture"], best_metric=best[search.metric],
        metric=search.metric, mode=search.mode, trials=trials, stop_reason=reason, wall_s=wall,
        path=str(Path(storage) / name), model_spec=spec,
    )


def _trial_table(grid: Any, history: dict[str, list[dict]], space: SearchSpace, metric: str, mode: str) -> list[dict[str, Any]]:
    """One row per trial: its configuration, best metric over its epochs, epochs run, time, status."""
    pick = max if mode == "max" else min
    rows = []
    for result in grid:
        params = dict(result.config or {})
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name.split("_")[2]
        reports = history.get(trial_id, [])
        values = [r[metric] for r in reports if r.get(metric) is not None]
        rows.append({
            "trial_id": trial_id,
            "architecture": space.architecture(params) if params else None,
            "params": params,
            metric: float(pick(values)) if values else None,
            "epochs": len(reports),
            "time_s": round(float(reports[-1].get("time_total_s", 0.0)), 2) if reports else 0.0,
            "status": "ERROR" if result.error else "TERMINATED",
            "error": str(result.error).strip().splitlines()[-1][:300] if result.error else None,
        })
    return sorted(rows, key=lambda r: r["trial_id"])


class SearchProgress(tune.Callback):
    """Prints one line per finished trial with the best so far, on the driver."""

    def __init__(self, search: SearchConfig, progress: ProgressFn | None, space: SearchSpace):
        self.search, self.progress, self.space = search, progress, space
        self.done, self.best = 0, None
        self.history: dict[str, list[dict[str, Any]]] = {}

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        keep = (self.search.metric, "val_loss", "train_loss", "epoch", "time_total_s")
        self.history.setdefault(trial.trial_id, []).append({k: result.get(k) for k in keep})
        value = result.get(self.search.metric)
        if value is not None and (self.best is None or (value > self.best if self.search.mode == "max" else value < self.best)):
            self.best = value

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "done")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trial, "FAILED")

    def _line(self, trial: Any, status: str) -> None:
        self.done += 1
        if self.progress is None:
            return
        last = trial.last_result or {}
        value = last.get(self.search.metric)
        shown = f"{self.search.metric}={value:.4f}" if isinstance(value, float) else status
        arch = self.space.architecture(trial.config) if trial.config else "?"
        lr = trial.config.get("lr")
        best = f"{self.best:.4f}" if self.best is not None else "-"
        self.progress(
            f"trial {self.done:>2}/{self.search.budget.trials} {status:<6} {arch:<34} lr={lr:.1e} "
            f"{shown} after {len(self.history.get(trial.trial_id, []))} epoch(s) | best {best}"
        )
