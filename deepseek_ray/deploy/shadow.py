"""Shadow sessions, the cluster's side: start one, read how it stands, promote its candidate or roll back.

A session is the candidate's Serve app (``<name>-shadow``, no HTTP route: only the live replicas reach it),
whose replicas hold the session's settings, and one detached controller actor that reads the session's
prediction log every :data:`CONTROLLER_PERIOD_S`, exports the comparison on Ray's metrics endpoint and, with
``auto_promote``, promotes when the evidence says so. Promotion redeploys the live app with the candidate's
model (Serve starts the new replicas before it stops the old: ``max_surge_percent=100``, so no request is
dropped), then moves the MLflow alias ``champion`` to the candidate's version and ends the session. One
process writes the registry: the controller, or the CLI (``deepseek-ray promote``), never a replica.

On a cluster running Serve (hence skipped here):

>>> start_shadow('mnist', 'runs/mnist/export/model.onnx', fraction=0.1)  # Serve  # doctest: +SKIP
{'app': 'mnist-shadow', 'version': '2', 'log_dir': '/…/runs/mnist/shadow/20261201-170000-v2', ...}
>>> shadow_status('mnist')['decision']['verdict']  # Serve  # doctest: +SKIP
'need_more_data'
>>> promote('mnist')  # Serve  # doctest: +SKIP
{'app': 'mnist', 'version': '2', 'previous': '1'}
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime import hush
from ..tracking.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    delete_alias,
    is_registry_uri,
    register_model,
    set_alias,
    version_of,
)
from .mirror import shadow_app_name
from .prediction_log import read_log

#: how often the controller reads the log, updates the metrics and (auto_promote) decides
CONTROLLER_PERIOD_S = 5.0
#: seconds a redeploy may take before promotion gives up (the live app keeps its model)
DEPLOY_TIMEOUT_S = 300.0
#: seconds :func:`start_shadow` waits for every live replica to follow a new session
FOLLOW_TIMEOUT_S = 15.0
NAMESPACE = "deepseek_ray"  # the controllers' namespace, whichever namespace the caller's driver has


def controller_name(name: str) -> str:
    """The detached actor that watches ``name``'s shadow session (in :data:`NAMESPACE`).

    >>> controller_name('mnist')
    'mnist-shadow-controller'
    """
    return f"{name}-shadow-controller"


def is_live(name: str) -> bool:
    """Whether the Serve app ``name`` is running on this cluster.

    >>> is_live('mnist')  # needs Serve  # doctest: +SKIP
    True
    """
    from ray import serve

    try:
        return name in serve.status().applications
    except Exception:  # Serve not started
        return False


_HANDLES: dict[str, Any] = {}


def app_handle(app: str) -> Any:
    """A handle to the Serve app ``app``, one per process: each new handle is a router of its own that polls
    Serve's controller for as long as the process lives. A ``ValueError`` when the app is not running.

    >>> app_handle('mnist').deployed_with.remote().result()['route']  # needs Serve  # doctest: +SKIP
    '/mnist'
    """
    from ray import serve

    try:
        serve.status().applications[app]  # the app exists (a cached handle outlives a deleted app)
        if app not in _HANDLES:
            _HANDLES[app] = serve.get_app_handle(app)
            hush()  # Serve sets its loggers up again when a process first reaches it
    except Exception as err:
        raise ValueError(f"no Serve app {app!r} is running") from err
    return _HANDLES[app]


def live_args(name: str) -> dict[str, Any]:
    """The arguments the live app ``name`` was built with (its replicas keep them).

    >>> live_args('mnist')['model_path']  # needs Serve  # doctest: +SKIP
    'models:/mnist@champion'
    """
    try:
        handle = app_handle(name)
    except ValueError as err:
        raise ValueError(f"no Serve app {name!r} is running: deploy the live model first") from err
    return dict(handle.deployed_with.remote().result())


def session_settings(name: str) -> dict[str, Any]:
    """The running shadow session of ``name`` (its candidate app's settings).

    >>> session_settings('mnist')['fraction']  # needs Serve  # doctest: +SKIP
    0.1
    """
    try:
        handle = app_handle(shadow_app_name(name))
    except ValueError as err:
        raise ValueError(f"no shadow session is running for {name!r} (start one with start_shadow)") from err
    return dict(handle.shadow_settings.remote().result())


def candidate_model(candidate: str | Path) -> str:
    """An exported file, an export or run folder (its ``model.onnx``), or a ``models:/`` URI, as a model path.

    >>> candidate_model('models:/mnist/2')
    'models:/mnist/2'
    """
    if is_registry_uri(candidate) or "://" in str(candidate):
        return str(candidate)
    path = Path(candidate)
    for inside in (path, path / "model.onnx", path / "export" / "model.onnx"):
        if inside.is_file():
            return str(inside.resolve())
    raise FileNotFoundError(f"candidate {candidate}: no exported model there (a .onnx file, or a folder holding one)")


def start_shadow(
    name: str,
    candidate: str | Path,
    *,
    fraction: float = 0.1,
    max_in_flight: int = 64,
    timeout_s: float = 10.0,
    metric: str | None = None,
    threshold: float = 0.0,
    alpha: float = 0.05,
    auto_promote: bool = False,
    log_dir: str | Path | None = None,
    registered_model: str | None = None,
    tracking_uri: str | None = None,
) -> dict[str, Any]:
    """Serve ``candidate`` in the shadow of the live app ``name``; return the session's settings.

    A file is registered as a new version of ``registered_model`` (default: the app's name) with the alias
    ``challenger``; a ``models:/`` URI names its version. The session's prediction log goes to
    ``log_dir/<time>-v<version>`` (default ``runs/<name>/shadow``).
    """
    from ray import serve

    from .app import build_app, local_model_path, read_model_metadata, tracking_uri_of

    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"shadow.fraction: {fraction} is not in [0, 1]")
    args = live_args(name)
    store = tracking_uri_of(tracking_uri or args.get("tracking_uri"))
    registry_name = registered_model or args.get("registered_model") or name
    model = candidate_model(candidate)
    if is_registry_uri(model):
        version = version_of(model, store)
    else:
        version = register_model(model, registry_name, store, tags={"deepseek_ray.source": model})
        model = f"models:/{registry_name}/{version}"
    set_alias(registry_name, CHALLENGER, version, store)
    task = read_model_metadata(local_model_path(model, store))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path(log_dir or Path("runs") / name / "shadow").resolve() / f"{stamp}-v{version}"
    session = {
        "name": name,
        "model_path": model,
        "version": str(version),
        "registered_model": registry_name,
        "tracking_uri": store,
        "fraction": float(fraction),
        "max_in_flight": int(max_in_flight),
        "timeout_s": float(timeout_s),
        "metric": metric or ("rmse" if task.get("task") == "regression" else "accuracy"),
        "threshold": float(threshold),
        "alpha": float(alpha),
        "auto_promote": bool(auto_promote),
        "log_dir": str(folder),
        "started": time.time(),
    }
    candidate_args = {**args, "model_path": model, "tracking_uri": store, "shadow_session": session}
    serve.run(build_app(candidate_args), name=shadow_app_name(name), route_prefix=None, blocking=False)
    hush()
    following = await_followers(name, folder)
    _start_controller(name)
    return {"app": shadow_app_name(name), "following": following, **session}


def await_followers(name: str, folder: Path, timeout_s: float = FOLLOW_TIMEOUT_S) -> int:
    """Wait until every running replica of the live app ``name`` follows the session whose log is ``folder``
    (a replica opens its log file there when it reads the settings, each ``SETTINGS_REFRESH_S``), so that the
    session's first requests are mirrored too; return how many follow. After ``timeout_s``, a warning.

    >>> await_followers('mnist', Path('runs/mnist/shadow/20261201-170000-v2'))  # Serve  # doctest: +SKIP
    1
    """
    import logging

    from ray import serve
    from ray.serve._private.common import ReplicaState

    deadline = time.monotonic() + timeout_s
    while True:
        deployments = serve.status().applications[name].deployments.values()
        replicas = sum(d.replica_states.get(ReplicaState.RUNNING, 0) for d in deployments)
        following = len(list(folder.glob("*.arrow")))
        if following >= replicas:
            return following
        if time.monotonic() > deadline:
            logging.getLogger(__name__).warning(
                "%d of %d replicas of %s follow the shadow session after %g s: the others mirror nothing until "
                "they do (is %s on a disk every node shares?)",
                following,
                replicas,
                name,
                timeout_s,
                folder,
            )
            return following
        time.sleep(0.1)


def stop_shadow(name: str) -> None:
    """End ``name``'s shadow session: the candidate's app and the controller go; the live app is untouched.

    >>> stop_shadow('mnist')  # needs Serve  # doctest: +SKIP
    """
    from ray import serve

    _kill_controller(name)
    with contextlib.suppress(Exception):
        serve.delete(shadow_app_name(name))


# ------------------------------------------------------------------------------------------ status
def session_pairs(folder: str | Path) -> dict[str, Any]:
    """From a session's log: the counts, and the labelled pairs in the order their labels came
    (``live``, ``candidate``: output rows; ``labels``).

    >>> import tempfile
    >>> from deepseek_ray.deploy.prediction_log import PredictionLog
    >>> log = PredictionLog(folder := tempfile.mkdtemp(), 'r')
    >>> log.append('a', 'live', [0.9, 0.1]); log.append('a', 'candidate', [0.2, 0.8]); log.append('a', 'label', label=1)
    >>> log.append('b', 'dropped'); log.close()
    >>> pairs = session_pairs(folder)
    >>> pairs['mirrored'], pairs['dropped'], pairs['paired'], pairs['labels'].tolist()
    (1, 1, 1, [1.0])
    """
    table = read_log(folder).to_pydict()
    live: dict[str, Any] = {}
    answers: dict[str, Any] = {}
    labels: dict[str, tuple[float, float]] = {}
    counts = {"mirrored": 0, "answered": 0, "dropped": 0, "candidate_errors": 0, "labelled": 0}
    for request_id, kind, stamp, output, label in zip(
        table["request_id"], table["kind"], table["time"], table["output"], table["label"], strict=True
    ):
        if kind == "live":
            live[request_id] = output
            counts["mirrored"] += 1
        elif kind == "candidate":
            answers[request_id] = output
            counts["answered"] += 1
        elif kind == "dropped":
            counts["dropped"] += 1
        elif kind == "candidate_error":
            counts["candidate_errors"] += 1
        elif kind == "label" and (request_id not in labels or stamp < labels[request_id][0]):
            labels[request_id] = (stamp, label)  # the first label given for an id stands
    counts["labelled"] = len(labels)
    paired = sorted(
        (stamp, request_id, label) for request_id, (stamp, label) in labels.items() if request_id in answers
    )
    ids = [request_id for _, request_id, _ in paired]
    return {
        **counts,
        "paired": len(ids),
        "live": np.array([live[i] for i in ids], dtype=np.float32),
        "candidate": np.array([answers[i] for i in ids], dtype=np.float32),
        "labels": np.array([label for _, _, label in paired]),
    }


def compare(pairs: dict[str, Any], metric: str, threshold: float, alpha: float) -> dict[str, Any]:
    """The evaluator's decision over the labelled pairs (in label order: the online, anytime-valid test).

    >>> pairs = {'live': np.eye(2)[[0, 0]], 'candidate': np.eye(2)[[1, 0]], 'labels': np.array([1.0, 0.0])}
    >>> compare(pairs, 'accuracy', 0.0, 0.05)['verdict']
    'need_more_data'
    """
    from ..eval import ShadowModeEvaluator

    evaluator = ShadowModeEvaluator(metric=metric, threshold=threshold, alpha=alpha)
    live, candidate, labels = pairs["live"], pairs["candidate"], pairs["labels"]
    if len(labels):
        if metric in ("mae", "rmse"):
            live, candidate = live.reshape(len(live), -1)[:, 0], candidate.reshape(len(candidate), -1)[:, 0]
        else:
            labels = labels.astype(np.int64)
        evaluator.update(live, candidate, labels)
    return evaluator.decision().to_dict()


def shadow_status(name: str) -> dict[str, Any]:
    """How ``name``'s shadow session stands: the counts, agreement, both metrics, the interval and the decision.

    >>> shadow_status('mnist')['labelled']  # needs Serve  # doctest: +SKIP
    179
    """
    settings = session_settings(name)
    pairs = session_pairs(settings["log_dir"])
    decision = compare(pairs, settings["metric"], settings["threshold"], settings["alpha"])
    counts = {key: value for key, value in pairs.items() if isinstance(value, int)}
    return {
        "name": name,
        "candidate": settings["model_path"],
        "version": settings["version"],
        **counts,
        "decision": decision,
        "settings": settings,
    }


# --------------------------------------------------------------------------------------- promotion
def promote(name: str, to_version: str | None = None, tracking_uri: str | None = None) -> dict[str, Any]:
    """Make the shadow candidate live (``to_version``: that registered version instead, a rollback), without
    dropping a request; then move ``champion`` to it. Returns ``{app, version, previous}``.

    >>> promote('mnist', to_version='1')  # needs Serve  # doctest: +SKIP
    {'app': 'mnist', 'version': '1', 'previous': '2'}
    """
    args = live_args(name)
    store = _tracking_uri_of_live(args, tracking_uri)
    registry_name = args.get("registered_model") or name
    session = None
    if to_version is None:
        session = session_settings(name)
        model, version = session["model_path"], session["version"]
        registry_name = session["registered_model"]
    else:
        version = str(to_version)
        model = f"models:/{registry_name}/{version}"
        version_of(model, store)  # a clear error before anything moves, when no such version exists
    previous = alias_version(registry_name, CHAMPION, store)
    redeploy(name, {**args, "model_path": model, "tracking_uri": store})
    set_alias(registry_name, CHAMPION, version, store)
    if session is not None:
        delete_alias(registry_name, CHALLENGER, store)
        stop_shadow(name)
    return {"app": name, "version": version, "previous": previous}


def _tracking_uri_of_live(args: dict[str, Any], tracking_uri: str | None) -> str:
    from .app import tracking_uri_of

    return tracking_uri_of(tracking_uri or args.get("tracking_uri"))


def redeploy(name: str, args: dict[str, Any]) -> None:
    """Deploy ``name`` again with ``args`` and wait until its new replicas serve (the old ones serve meanwhile).

    >>> redeploy('mnist', {**live_args('mnist'), 'model_path': 'models:/mnist/2'})  # Serve  # doctest: +SKIP
    """
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    from .app import build_app

    serve.run(build_app(args), name=name, route_prefix=args.get("route"), blocking=False)
    hush()
    deadline = time.monotonic() + DEPLOY_TIMEOUT_S
    while time.monotonic() < deadline:
        status = serve.status().applications[name]
        if status.status == ApplicationStatus.RUNNING and all(
            d.status == "HEALTHY" for d in status.deployments.values()
        ):
            return
        if status.status == ApplicationStatus.DEPLOY_FAILED:
            raise RuntimeError(f"redeploying {name!r} failed: {status.message}")
        time.sleep(0.5)
    raise TimeoutError(f"redeploying {name!r} took over {DEPLOY_TIMEOUT_S:g} s")


# -------------------------------------------------------------------------------------- controller
def _kill_controller(name: str) -> None:
    import ray

    with contextlib.suppress(Exception):  # none is running
        ray.kill(ray.get_actor(controller_name(name), namespace=NAMESPACE))


def _start_controller(name: str) -> None:
    import ray

    _kill_controller(name)  # one per session: a new session gets a fresh controller
    controller = ray.remote(num_cpus=0)(ShadowController).options(
        name=controller_name(name), namespace=NAMESPACE, lifetime="detached", max_restarts=-1
    )
    controller.remote(name)


class ShadowController:
    """The one process that watches a session: Ray metrics from its log and, with ``auto_promote``, the
    promotion (the only writer of the registry besides the CLI). :func:`start_shadow` starts it.

    >>> ray.get_actor(controller_name('mnist'), namespace=NAMESPACE).status.remote()  # Ray  # doctest: +SKIP
    """

    def __init__(self, name: str, period_s: float = CONTROLLER_PERIOD_S):
        import threading

        from .metrics import ShadowMetrics

        self.name = name
        self.metrics = ShadowMetrics(name)
        self.last: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._watch, args=(period_s,), daemon=True)
        self._thread.start()

    def status(self) -> dict[str, Any]:
        return self.last

    def _watch(self, period_s: float) -> None:
        import logging

        while True:
            time.sleep(period_s)
            try:
                self.last = shadow_status(self.name)
            except ValueError:  # the session ended
                continue
            except Exception as err:  # a log being written, Serve busy: next period
                logging.getLogger(__name__).warning("shadow status of %s: %s", self.name, err)
                continue
            self.metrics.report(self.last)
            if self.last["settings"]["auto_promote"] and self.last["decision"]["verdict"] == "promote":
                promote(self.name)
                return
