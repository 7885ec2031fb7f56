"""What the search benchmarks share: a quiet local Ray with 2 CPUs and a scratch folder for search state.

    >>> storage = quiet_search_session("bench-example-")   # doctest: +SKIP
"""

from __future__ import annotations

import tempfile

import optuna
import ray


def quiet_search_session(storage_prefix: str) -> str:
    """Start Ray (2 CPUs, no dashboard, no worker logs) with Optuna's logging quiet; return a fresh storage folder."""
    from deepseek_ray.runtime import quiet

    quiet(False)  # Tune's console status tables off, as the CLI has them without --verbose
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    return tempfile.mkdtemp(prefix=storage_prefix)
