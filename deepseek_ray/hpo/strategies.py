"""What to try next (a Ray Tune searcher) and when to stop a trial early (a pruner), by name.

Every strategy is one library sampler behind a Ray Tune ``Searcher``:

=============  ===========================================================
``random``     Optuna ``RandomSampler``
``grid``       Optuna ``GridSampler`` (every combination of finite domains)
``tpe``        Optuna ``TPESampler`` (multivariate, grouped for conditional NAS parameters)
``gp``         Optuna ``GPSampler``
``cmaes``      Optuna ``CmaEsSampler``
``nsga2``      Optuna ``NSGAIISampler`` (multi-objective)
``hyperopt``   HyperOpt's TPE through Ray's ``HyperOptSearch``
``evolution``  :class:`RegularizedEvolutionSampler`, an Optuna sampler (Real et al. 2019)
=============  ===========================================================

Schedulers (``fifo``, ``asha``, ``hyperband``) are Optuna pruners that see each trial's epoch results;
``pbt`` changes the trials themselves (weights copied, hyperparameters perturbed), so it is a runner
of its own (:mod:`.pbt`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import optuna

from ..config import STRATEGIES, SearchConfig
from .space import SearchSpace


def make_sampler(strategy: str, seed: int, n_startup_trials: int = 4, *, space: SearchSpace | None = None,
                 population: int = 10, tournament: int = 3):
    """The Optuna sampler behind a strategy name (all but ``hyperopt``).

    >>> type(make_sampler('gp', seed=0)).__name__
    'GPSampler'
    """
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "grid":
        if space is None:
            raise ValueError("grid search needs the search space to enumerate")
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if strategy == "tpe":
        # group=True handles the conditional (per-cell) parameters; constant_liar spreads parallel trials.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials, multivariate=True, group=True,
                                          constant_liar=True)
    if strategy == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=n_startup_trials)
    if strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=n_startup_trials, warn_independent_sampling=False)
    if strategy == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, population))
    if strategy == "evolution":
        return RegularizedEvolutionSampler(population=population, tournament=tournament, seed=seed)
    raise ValueError(f"search.strategy.type: unknown {strategy!r}; allowed: {', '.join(STRATEGIES)}")


def make_searcher(search: SearchConfig, space: SearchSpace, seed: int):
    """The Ray Tune searcher for ``search.strategy``: HyperOptSearch, or OptunaSearch over a sampler.

    >>> from deepseek_ray.config import SearchConfig
    >>> space = SearchSpace.from_mapping({'type': 'params', 'x': {'uniform': [0, 1]}})
    >>> type(make_searcher(SearchConfig(strategy={'type': 'hyperopt'}), space, seed=0)).__name__
    'HyperOptSearch'
    """
    metrics, modes = search.objectives()
    metric, mode = (metrics[0], modes[0]) if len(metrics) == 1 else (metrics, modes)
    strategy = search.strategy
    if strategy.type == "hyperopt":
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(space.to_hyperopt(), metric=metric, mode=mode, random_state_seed=seed,
                              n_initial_points=strategy.n_startup_trials)
    from ray.tune.search.optuna import OptunaSearch

    sampler = make_sampler(strategy.type, seed, strategy.n_startup_trials, space=space,
                           population=strategy.population, tournament=strategy.tournament)
    return OptunaSearch(space.define_by_run, metric=metric, mode=mode, sampler=sampler)


def sampler_of(searcher: Any) -> Any:
    """The library object that proposes configurations inside a Tune searcher (for tests and logs)."""
    return getattr(searcher, "_sampler", None) or getattr(searcher, "algo", None)


def make_pruner(search: SearchConfig):
    """The Optuna pruner playing ``search.scheduler`` (epochs are the resource).

    >>> from deepseek_ray.config import SearchConfig
    >>> type(make_pruner(SearchConfig(scheduler={'type': 'asha', 'max_t': 4}))).__name__
    'SuccessiveHalvingPruner'
    """
    spec = search.scheduler
    if spec.type == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min(spec.grace_period, spec.max_t),
                                                      reduction_factor=int(spec.reduction_factor))
    if spec.type == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=min(spec.grace_period, spec.max_t), max_resource=spec.max_t,
                                              reduction_factor=int(spec.reduction_factor))
    return optuna.pruners.NopPruner()


class RegularizedEvolutionSampler(optuna.samplers.BaseSampler):
    """Regularized (aging) evolution as an Optuna sampler (Real et al., AAAI 2019).

    The population is the ``population`` most recently finished trials (the oldest dies: the
    "regularization"); each child copies the best of ``tournament`` random members and resamples
    each parameter with probability 1/(number of parameters), at least one of them. Until the
    population is full, trials are random. Works with conditional (define-by-run) spaces: a
    parameter the parent lacks is drawn at random.

    >>> import optuna
    >>> study = optuna.create_study(sampler=RegularizedEvolutionSampler(population=4, seed=0))
    >>> study.optimize(lambda t: (t.suggest_float('x', -3, 3) - 1) ** 2, n_trials=40)
    >>> round(study.best_value, 2) < 0.1
    True
    """

    def __init__(self, population: int = 10, tournament: int = 3, seed: int | None = None):
        if tournament > population:
            raise ValueError(f"evolution: tournament ({tournament}) must not exceed population ({population})")
        self.population, self.tournament = population, tournament
        self._random = optuna.samplers.RandomSampler(seed=seed)
        self._rng = np.random.RandomState(seed)
        self._parents: dict[int, dict[str, Any]] = {}  # trial number -> (parent params, genes to mutate)

    def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
        return {}

    def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
        return {}

    def before_trial(self, study: Any, trial: Any) -> None:
        if study._is_multi_objective():
            raise ValueError("evolution optimises one metric; use nsga2 for several")
        finished = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(finished) < self.population:
            return
        alive = sorted(finished, key=lambda t: t.number)[-self.population:]
        drawn = [alive[i] for i in self._rng.choice(len(alive), self.tournament, replace=False)]
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        parent = pick(drawn, key=lambda t: t.value)
        names = list(parent.params)
        mutate = {name for name in names if self._rng.rand() < 1.0 / len(names)} or {names[self._rng.randint(len(names))]}
        self._parents[trial.number] = {"params": parent.params, "distributions": parent.distributions, "mutate": mutate}

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        parent = self._parents.get(trial.number)
        inherit = (parent is not None and param_name not in parent["mutate"] and param_name in parent["params"]
                   and parent["distributions"][param_name] == param_distribution)
        if inherit:
            return parent["params"][param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._parents.pop(trial.number, None)
