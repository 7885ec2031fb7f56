"""How long a trial runs: Ray Tune's own schedulers, built from ``search.scheduler``.

=============  ===================================================================================
``fifo``       ``FIFOScheduler``: every trial runs ``max_t`` epochs
``asha``       ``ASHAScheduler``: asynchronous successive halving on epochs
``hyperband``  ``HyperBandScheduler``: brackets of successive halving; it pauses trials, so they checkpoint
``pbt``        ``PopulationBasedTraining`` (``synch=True``): the worst quantile copies a better trial's
               weights and optimizer state and continues with its hyperparameters, perturbed
``pb2``        ``PB2`` (``synch=True``): as ``pbt``, the new hyperparameters chosen by a Gaussian-process
               bandit within their domains' bounds
=============  ===================================================================================

Tune's experiment checkpoint keeps trials, searcher and callbacks, not the scheduler: the search's
callback (:class:`.monitor.SearchMonitor`) carries its state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    PopulationBasedTraining,
    TrialScheduler,
)

from ..config import (
    POPULATION_SCHEDULERS,
    AshaSchedulerConfig,
    ConfigError,
    HyperbandSchedulerConfig,
    Pb2SchedulerConfig,
    PbtSchedulerConfig,
    SearchConfig,
)
from .monitor import say
from .space import Domain, SearchSpace

TIME_ATTR = "training_iteration"  # one training iteration is one epoch


def make_scheduler(search: SearchConfig, space: SearchSpace, key: str = "search") -> TrialScheduler:
    """The Tune scheduler for ``search.scheduler`` (Tune gives it the metric and mode); PBT says each exploit on
    experiment ``key``'s progress lines.

    >>> from deepseek_ray.config import SearchConfig
    >>> space = SearchSpace.from_mapping({'type': 'params', 'x': {'uniform': [0, 1]}})
    >>> type(make_scheduler(SearchConfig(scheduler={'type': 'asha', 'max_t': 4}), space)).__name__
    'AsyncHyperBandScheduler'
    """
    spec = search.scheduler
    if isinstance(spec, AshaSchedulerConfig):
        return ASHAScheduler(
            time_attr=TIME_ATTR,
            max_t=spec.max_t,
            grace_period=spec.grace_period,
            reduction_factor=spec.reduction_factor,
        )
    if isinstance(spec, HyperbandSchedulerConfig):
        return HyperBandScheduler(time_attr=TIME_ATTR, max_t=spec.max_t, reduction_factor=spec.reduction_factor)
    if isinstance(spec, (PbtSchedulerConfig, Pb2SchedulerConfig)):
        check_pbt(space, search)
        mutable = space.perturbable(spec.hyperparameters)
        population: dict[str, Any] = {
            "time_attr": TIME_ATTR,
            "perturbation_interval": spec.perturbation_interval,
            "quantile_fraction": spec.quantile_fraction,
            "custom_explore_fn": InsideDomains(mutable),  # PB2: quniform's step, which the bandit does not know
            "synch": True,
            "key": key,
        }
        if isinstance(spec, PbtSchedulerConfig):
            return RecordedPBT(
                hyperparam_mutations={key: tune_domain(domain) for key, domain in mutable.items()},
                resample_probability=spec.resample_probability,
                perturbation_factors=tuple(spec.perturbation_factors),
                **population,
            )
        from .pb2 import RecordedPB2  # Tune's PB2 imports scikit-learn and pandas: only when asked for

        bounds = {key: [float(domain.args[0]), float(domain.args[1])] for key, domain in mutable.items()}
        return RecordedPB2(hyperparam_bounds=bounds, **population)
    return FIFOScheduler()


def tune_domain(domain: Domain) -> Any:
    """The same domain as a Ray Tune sampler (PBT's variant generator and its resampling draw from it).

    >>> tune_domain(Domain('randint', (1, 3))).upper  # Tune's upper bound is exclusive
    4
    """
    low, high = (domain.args + (None, None))[:2]
    return {
        "choice": lambda: tune.choice(list(domain.args)),
        "grid": lambda: tune.choice(list(domain.args)),
        "uniform": lambda: tune.uniform(low, high),
        "loguniform": lambda: tune.loguniform(low, high),
        "quniform": lambda: tune.quniform(low, high, domain.args[2] if len(domain.args) > 2 else 1),
        "randint": lambda: tune.randint(low, high + 1),
    }[domain.kind]()


def param_space(space: SearchSpace) -> dict[str, Any]:
    """The population's configurations as Tune's variant generator samples them (PBT takes no searcher):
    a fixed architecture's values as they are, every searched hyperparameter as a Tune domain."""
    fixed = {key: domain.finite_values()[0] for key, domain in space.structure.items()}
    if space.kind == "nas":
        fixed |= {f"cell{c}_op{n}": space.ops[0] for c in range(fixed["cells"]) for n in range(fixed["nodes"])}
    return fixed | {key: tune_domain(domain) for key, domain in space.hyperparameters.items()}


@dataclass(frozen=True)
class InsideDomains:
    """PBT's explore step, kept inside each domain: Tune multiplies a value by a perturbation factor
    and would leave ``dropout`` at 0.6 in ``[0, 0.5]``."""

    domains: dict[str, Domain]

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        return {
            key: self.domains[key].clip(value) if key in self.domains and self.domains[key].values() is None else value
            for key, value in config.items()
        }


class RecordsExploits:
    """Keeps each exploit of a population-based Tune scheduler (the trial table's ``lineage``) and says it on
    the progress line; everything else is the scheduler's."""

    name = "pbt"
    _hyperparam_mutations: dict[str, Any]

    def __init__(self, *args: Any, key: str = "search", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lineage: dict[str, list[dict[str, Any]]] = {}
        self.key = key

    def _log_config_on_step(self, trial_state: Any, new_state: Any, trial: Any, trial_to_clone: Any, new_config: dict):
        super()._log_config_on_step(trial_state, new_state, trial, trial_to_clone, new_config)  # type: ignore[misc]
        epoch = int(new_state.last_train_time)  # the donor's epoch at this step (its last_result lags behind)
        changed = {key: new_config[key] for key in self._hyperparam_mutations}
        self.lineage.setdefault(trial.trial_id, []).append(
            {
                "epoch": epoch,
                "from": trial_to_clone.trial_id,
                "donor_params": dict(trial_to_clone.config),
                "params": changed,
            }
        )
        shown = " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in changed.items())
        say(
            self.key,
            f"{self.name} epoch {epoch}: trial {trial.trial_id} takes trial {trial_to_clone.trial_id}'s weights, "
            f"{shown}",
        )


class RecordedPBT(RecordsExploits, PopulationBasedTraining):
    """Tune's ``PopulationBasedTraining``, its exploits recorded (:class:`RecordsExploits`)."""


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
                f"search.scheduler: {search.scheduler.type} copies weights between trials, so every trial needs one "
                "architecture; "
                f"{key} varies ({shown(key)}): fix it to one value, or use scheduler fifo, asha or hyperband"
                for key in varying
            ],
        )
    assert isinstance(search.scheduler, (PbtSchedulerConfig, Pb2SchedulerConfig))
    perturbed = space.perturbable(search.scheduler.hyperparameters)  # names any key that may not be perturbed
    ranges = ("uniform", "loguniform", "quniform")
    if search.scheduler.type == "pb2" and any(domain.kind not in ranges for domain in perturbed.values()):
        raise ConfigError(
            space.source,
            [
                f"search.scheduler.hyperparameters: pb2 chooses values within bounds; {key} is "
                f"{_domain_text(space, key)}: give it a range ({', '.join(ranges)}), leave it out, or use scheduler pbt"
                for key, domain in perturbed.items()
                if domain.kind not in ranges
            ],
        )


def _domain_text(space: SearchSpace, key: str) -> str:
    domain = {**space.structure, **space.hyperparameters}[key]
    return f"{domain.kind} {list(domain.args)}"


def checkpoints_needed(search: SearchConfig) -> bool:
    """Whether the scheduler pauses (HyperBand) or copies (PBT) trials, so that trials must checkpoint."""
    return search.scheduler.type in ("hyperband", *POPULATION_SCHEDULERS)
