"""What to try next: a Ray Tune searcher, by name.

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

How long each trial runs is Tune's scheduler's business (:mod:`.schedulers`); under ``pbt`` Tune's own
variant generator draws the population and no strategy applies.

Each strategy is registered here, in :data:`deepseek_ray.config.STRATEGIES`, the one list that
``search.strategy.type`` (its check, its JSON Schema enum, its error message) reads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna

from ..config import STRATEGIES, SearchConfig
from .space import SearchSpace


@dataclass(frozen=True)
class SamplerOptions:
    """What a strategy's sampler may use: the seed, ``search.strategy``'s options and the space."""

    seed: int
    n_startup_trials: int = 4
    population: int = 10
    tournament: int = 3
    space: SearchSpace | None = None


@dataclass(frozen=True)
class Strategy:
    """One registered searcher. ``sampler`` builds its Optuna sampler; ``None`` for a searcher that is not
    Optuna's (``hyperopt``, built by :func:`make_searcher`). ``multi_objective``: it takes several metrics."""

    sampler: Callable[[SamplerOptions], optuna.samplers.BaseSampler] | None
    multi_objective: bool


def _strategy(
    name: str, *, multi_objective: bool
) -> Callable[[Callable[[SamplerOptions], Any]], Callable[[SamplerOptions], Any]]:
    """Register the decorated sampler factory as strategy ``name``."""

    def wrap(make: Callable[[SamplerOptions], Any]) -> Callable[[SamplerOptions], Any]:
        STRATEGIES.register(name)(Strategy(make, multi_objective))
        return make

    return wrap


@_strategy("random", multi_objective=True)
def _random(o: SamplerOptions) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=o.seed)


@_strategy("grid", multi_objective=False)
def _grid(o: SamplerOptions) -> optuna.samplers.BaseSampler:
    if o.space is None:
        raise ValueError("grid search needs the search space to enumerate")
    return optuna.samplers.GridSampler(o.space.grid(), seed=o.seed)


@_strategy("tpe", multi_objective=True)
def _tpe(o: SamplerOptions) -> optuna.samplers.BaseSampler:
    # group=True handles the conditional (per-cell) parameters; constant_liar spreads parallel trials.
    return optuna.samplers.TPESampler(
        seed=o.seed, n_startup_trials=o.n_startup_trials, multivariate=True, group=True, constant_liar=True
    )


@_strategy("gp", multi_objective=True)
def _gp(o: SamplerOptions) -> optuna.samplers.BaseSampler:
    return optuna.samplers.GPSampler(seed=o.seed, n_startup_trials=o.n_startup_trials)


@_strategy("cmaes", multi_objective=False)
def _cmaes(o: SamplerOptions) -> optuna.samplers.BaseSampler:
    return optuna.samplers.CmaEsSampler(
        seed=o.seed, n_startup_trials=o.n_startup_trials, warn_independent_sampling=False
    )


STRATEGIES.register("hyperopt")(Strategy(None, multi_objective=False))  # HyperOpt's TPE: see make_searcher


@_strategy("evolution", multi_objective=False)
def _evolution(o: SamplerOptions) -> optuna.samplers.BaseSampler:
    return RegularizedEvolutionSampler(population=o.population, tournament=o.tournament, seed=o.seed)


class PicklableNSGAIISampler(optuna.samplers.NSGAIISampler):
    """Optuna's NSGA-II sampler, picklable: Tune pickles the searcher with the experiment's state, and Optuna 5.1's
    sampler holds a ``threading.Lock``, which is left out of the pickle and made anew on load.

    >>> import pickle
    >>> sampler = pickle.loads(pickle.dumps(PicklableNSGAIISampler(seed=0, population_size=4)))
    >>> type(sampler).__name__
    'PicklableNSGAIISampler'
    """

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.pop("_thread_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._thread_lock = threading.Lock()


@_strategy("nsga2", multi_objective=True)
def _nsga2(o: SamplerOptions) -> optuna.samplers.BaseSampler:
    return PicklableNSGAIISampler(seed=o.seed, population_size=max(4, o.population))


def make_sampler(
    strategy: str,
    seed: int,
    n_startup_trials: int = 4,
    *,
    space: SearchSpace | None = None,
    population: int = 10,
    tournament: int = 3,
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler behind a strategy name (all but ``hyperopt``).

    >>> type(make_sampler('gp', seed=0)).__name__
    'GPSampler'
    >>> make_sampler('bayes', seed=0)
    Traceback (most recent call last):
    ...
    ValueError: search.strategy.type: unknown 'bayes'; allowed: random, grid, tpe, gp, cmaes, hyperopt, evolution, nsga2
    """
    make = STRATEGIES[STRATEGIES.check(strategy)].sampler
    if make is None:
        raise ValueError(f"search.strategy.type: {strategy!r} is not an Optuna sampler; make_searcher builds it")
    return make(SamplerOptions(seed, n_startup_trials, population, tournament, space))


def make_searcher(search: SearchConfig, space: SearchSpace, seed: int) -> Any:
    """The Ray Tune searcher for ``search.strategy``: HyperOptSearch, or OptunaSearch over a sampler.

    >>> from deepseek_ray.config import SearchConfig
    >>> space = SearchSpace.from_mapping({'type': 'params', 'x': {'uniform': [0, 1]}})
    >>> type(make_searcher(SearchConfig(strategy={'type': 'hyperopt'}), space, seed=0)).__name__
    'HyperOptSearch'
    """
    metrics, modes = search.objectives()
    metric, mode = (metrics[0], modes[0]) if len(metrics) == 1 else (metrics, modes)
    strategy = search.strategy
    if STRATEGIES[strategy.type].sampler is None:  # hyperopt, the one searcher that is not an Optuna sampler
        from ray.tune.search.hyperopt import HyperOptSearch

        return HyperOptSearch(  # one metric: SearchConfig refuses hyperopt for several
            space.to_hyperopt(),
            metric=metrics[0],
            mode=modes[0],
            random_state_seed=seed,
            n_initial_points=strategy.n_startup_trials,
        )
    from ray.tune.search.optuna import OptunaSearch

    sampler = make_sampler(
        strategy.type,
        seed,
        strategy.n_startup_trials,
        space=space,
        population=strategy.population,
        tournament=strategy.tournament,
    )
    return OptunaSearch(space.define_by_run, metric=metric, mode=mode, sampler=sampler)


def sampler_of(searcher: Any) -> Any:
    """The library object that proposes configurations inside a Tune searcher (for tests and logs)."""
    return getattr(searcher, "_sampler", None) or getattr(searcher, "algo", None)


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
        alive = sorted(finished, key=lambda t: t.number)[-self.population :]
        drawn = [alive[i] for i in self._rng.choice(len(alive), self.tournament, replace=False)]
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        parent = pick(drawn, key=lambda t: t.value)
        names = list(parent.params)
        mutate = {name for name in names if self._rng.rand() < 1.0 / len(names)} or {
            names[self._rng.randint(len(names))]
        }
        self._parents[trial.number] = {"params": parent.params, "distributions": parent.distributions, "mutate": mutate}

    def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
        parent = self._parents.get(trial.number)
        inherit = (
            parent is not None
            and param_name not in parent["mutate"]
            and param_name in parent["params"]
            and parent["distributions"][param_name] == param_distribution
        )
        if inherit and parent is not None:
            return parent["params"][param_name]
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        self._parents.pop(trial.number, None)
