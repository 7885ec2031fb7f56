"""The Ray Tune runner that NAS and HPO share: search spaces, samplers, schedulers, budgets.

``HPOConfig`` is the experiment file's ``search`` section, usable on its own:

>>> from deepseek_ray.hpo import HPOConfig
>>> HPOConfig(strategy={'type': 'gp'}, budget={'trials': 8}).strategy.type
'gp'
"""

from ..config import SearchConfig as HPOConfig
from .runner import SearchResult, TrialSettings, make_sampler, make_scheduler, run_search, train_trial
from .space import DOMAINS, Domain, SearchSpace, parse_domain

__all__ = [
    "DOMAINS", "Domain", "HPOConfig", "SearchResult", "SearchSpace", "TrialSettings", "make_sampler",
    "make_scheduler", "parse_domain", "run_search", "train_trial",
]
