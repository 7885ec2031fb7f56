"""The search NAS and HPO share, on Ray Tune: ``Tuner.fit`` with Tune's searchers and schedulers, budgets,
``Tuner.restore``.

``HPOConfig`` is the experiment file's ``search`` section, usable on its own:

>>> from deepseek_ray.hpo import HPOConfig
>>> HPOConfig(strategy={'type': 'gp'}, budget={'trials': 8}).strategy.type
'gp'

``run_search(config, data)`` trains models over a nas/hpo space; ``run_trials(objective, space,
config)`` searches any objective that yields metrics. Names load on first use, so that a trial actor
(``deepseek_ray.hpo.trainable``) does not import torch or Optuna until its objective does.
"""

from importlib import import_module
from typing import Any

_HOME = {
    "HPOConfig": "..config",
    "SearchResult": ".runner",
    "TrainingObjective": ".runner",
    "TrialSettings": ".runner",
    "forward_latency_ms": ".runner",
    "pareto_front": ".runner",
    "run_search": ".runner",
    "run_trials": ".runner",
    "DOMAINS": ".space",
    "KINDS": ".space",
    "Domain": ".space",
    "SearchSpace": ".space",
    "parse_domain": ".space",
    "RegularizedEvolutionSampler": ".strategies",
    "make_sampler": ".strategies",
    "make_searcher": ".strategies",
    "sampler_of": ".strategies",
    "SearchTrial": ".trainable",
    "check_pbt": ".schedulers",
    "make_scheduler": ".schedulers",
}
__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = import_module(_HOME[name], __name__)
    return getattr(module, "SearchConfig" if name == "HPOConfig" else name)
