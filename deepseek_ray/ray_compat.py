"""Every use of a private Ray name, each behind a check that this Ray still has it.

deepseek_ray leans on a few Ray internals to start Ray Train runs faster, and on one to re-read Ray's config.
Each is named here in full (``"module:attribute"``) and looked up when needed; where a Ray release moved one,
the caller gets plain public Ray instead:

* the lean Train path (:class:`~deepseek_ray.train.backend.TorchBackendConfig`, ``LeanTorchTrainer``) becomes
  Ray's own ``TorchTrainer`` with Ray's ``TorchConfig``, and one warning names what moved;
* an optimisation that is only an optimisation (prestarting Ray Data's autoscaling coordinator, the framework
  label in Train's run state) becomes a no-op.

Nothing but the standard library is imported at the top: Ray Train's controller imports this module (through
the backend config it unpickles) and must not import torch, and :mod:`deepseek_ray.runtime` may import it
before ``import ray``.

>>> missing(LEAN_TRAIN_INTERNALS)  # Ray 2.60 has them all
[]
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import Any

logger = logging.getLogger(__name__)

# The lean Train path. Controller side (no torch): the hook that lists a run's default callbacks, and the
# Ray Data shard manager it drops. Worker side, imported where they run (ray.train.torch.config imports
# torch): Ray's own process-group functions, so NCCL's error handling and RANK/LOCAL_RANK/… stay Ray's.
DEFAULT_CALLBACKS_HOOK = "ray.train.torch:TorchTrainer._create_default_callbacks"
DATASETS_CALLBACK = "ray.train.v2._internal.callbacks.datasets:DatasetsCallback"
ADDRESS_AND_PORT = "ray.train._internal.utils:get_address_and_port"
SET_TORCH_ENV_VARS = "ray.train.torch.config:_set_torch_distributed_env_vars"
SETUP_PROCESS_GROUP = "ray.train.torch.config:_setup_torch_process_group"
SHUTDOWN_TORCH = "ray.train.torch.config:_shutdown_torch"
CUDA_DEVICE_CONTEXT = "ray.train.torch.config:TorchConfigContextManager"
LEAN_TRAIN_INTERNALS = (
    DEFAULT_CALLBACKS_HOOK,
    DATASETS_CALLBACK,
    ADDRESS_AND_PORT,
    SET_TORCH_ENV_VARS,
    SETUP_PROCESS_GROUP,
    SHUTDOWN_TORCH,
    CUDA_DEVICE_CONTEXT,
)

# Optimisations and one config reload, each with its own fallback.
TRAINING_FRAMEWORK = "ray.train.v2._internal.util:TrainingFramework.TORCH"
AUTOSCALING_COORDINATOR = (
    "ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator:get_or_create_autoscaling_coordinator"
)
RAYLET_CONFIG = "ray._raylet:Config.initialize"
# Ray uploads a job's local py_modules itself, but refuses local paths in an actor's runtime_env (a Serve
# replica's): this is the upload ray.init does, giving URIs any node can fetch.
UPLOAD_PY_MODULES = "ray._private.runtime_env.py_modules:upload_py_modules_if_needed"
UPLOAD_WORKING_DIR = "ray._private.runtime_env.working_dir:upload_working_dir_if_needed"
# A handle's router runs in a thread of its own by default; a replica calling another app on every mirrored
# request then pays a thread hop and GIL ping-pong per call. This option keeps the router on the caller's loop.
HANDLE_ROUTER_OPTION = "_run_router_in_separate_loop"
# Ray reads RAY_ENABLE_AUTO_CONNECT into this module once, at import.
AUTO_INIT_HOOK = "ray._private.auto_init_hook:"

# Ray Train settings we change (Ray Train copies these from the driver's environment to the controller and
# the workers; a name a later Ray no longer reads is simply ignored). The controller polls workers every 2 s
# by default, which adds up to 2 s after each phase of a run. The preemption watcher (one more actor process
# per worker group, started just as the train function starts) only observes spot-instance node preemption;
# FailureConfig restarts a lost worker group without it, and on a small machine its process start competes
# with the first steps. Both are defined in ray.train.v2._internal.constants (tests check the names).
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}

_warned: set[str] = set()


def lookup(name: str) -> Any | None:
    """The Ray object called ``name`` (``"module:attribute.attribute"``), or None where this Ray has none.

    >>> lookup("ray.train.torch.config:_setup_torch_process_group").__name__
    '_setup_torch_process_group'
    >>> lookup("ray.train.torch.config:_moved_away"), lookup("ray.train.gone:anything")
    (None, None)
    """
    module, _, path = name.partition(":")
    try:
        found: Any = importlib.import_module(module)
    except ImportError:
        return None
    for attribute in filter(None, path.split(".")):
        found = getattr(found, attribute, None)
        if found is None:
            return None
    return found


def missing(names: Iterable[str]) -> list[str]:
    """Those of ``names`` this Ray does not have.

    >>> missing(["ray.train:RunConfig", "ray.train:NoSuchThing"])
    ['ray.train:NoSuchThing']
    """
    return [name for name in names if lookup(name) is None]


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _required(name: str) -> Any:
    """A lean-path internal on a worker; :func:`torch_trainer_class` chose that path only after finding it."""
    found = lookup(name)
    if found is None:
        raise RuntimeError(
            f"this Ray has no {name}: build the trainer with torch_trainer_class(), which then "
            "falls back to Ray's own TorchTrainer and TorchConfig"
        )
    return found


@functools.cache
def torch_trainer_class() -> type:
    """Ray Train's ``TorchTrainer`` for deepseek_ray's runs: the lean one when this Ray has what it needs.

    ``LeanTorchTrainer`` leaves out the Ray Data shard manager when a run is given no ``datasets``: Ray Train
    2.60 starts a ``DatasetManager`` actor for every worker group even without datasets, one more process
    importing Ray Data (about 2 CPU-seconds) on the critical path of start-up, while the workers import torch.
    It overrides a private hook, and :class:`~deepseek_ray.train.backend.TorchBackendConfig` calls Ray's
    private process-group functions; if any of :data:`LEAN_TRAIN_INTERNALS` moved, this warns once, naming
    them, and returns ``PlainTorchTrainer``: Ray's ``TorchTrainer`` unchanged, except that a
    ``TorchBackendConfig`` given as ``torch_config`` is replaced by Ray's ``TorchConfig`` with the same fields.

    >>> torch_trainer_class().__name__
    'LeanTorchTrainer'
    """
    from ray.train.torch import TorchTrainer

    gone = missing(LEAN_TRAIN_INTERNALS)
    if gone:
        _warn_once(
            f"this Ray has no {', '.join(gone)}: deepseek_ray trains with Ray's plain TorchTrainer and "
            "TorchConfig (slower start-up: the Train controller imports torch, and Ray Data's shard "
            "manager starts with every run)"
        )
        return _plain_torch_trainer(TorchTrainer)
    return _lean_torch_trainer(TorchTrainer, lookup(DATASETS_CALLBACK))


def _lean_torch_trainer(torch_trainer: type, datasets_callback: Any) -> type:
    class LeanTorchTrainer(torch_trainer):
        def _create_default_callbacks(self) -> list[Any]:
            callbacks = super()._create_default_callbacks()
            if getattr(self, "datasets", None):
                return callbacks
            return [callback for callback in callbacks if not isinstance(callback, datasets_callback)]

    return LeanTorchTrainer


def _plain_torch_trainer(torch_trainer: type) -> type:
    from ray.train.torch import TorchConfig

    class PlainTorchTrainer(torch_trainer):
        def __init__(self, *args: Any, torch_config: Any = None, **kwargs: Any) -> None:
            if torch_config is not None and not isinstance(torch_config, TorchConfig):
                # TorchBackendConfig.to_dict() gives exactly TorchConfig's fields
                torch_config = TorchConfig(**torch_config.to_dict())
            super().__init__(*args, torch_config=torch_config, **kwargs)

    return PlainTorchTrainer


def torch_training_framework() -> Any | None:
    """The label Ray Train's run state gives torch runs; None (no label, as any BackendConfig) where it moved.

    >>> torch_training_framework()
    <TrainingFramework.TORCH: 'torch'>
    """
    return lookup(TRAINING_FRAMEWORK)


def address_and_port() -> tuple[str, int]:
    """On a worker: its node's IP address and a free port there (Ray's rendezvous address for rank 0).

    >>> address, port = address_and_port()  # on a Ray Train worker  # doctest: +SKIP
    """
    return _required(ADDRESS_AND_PORT)()


def set_torch_distributed_env_vars() -> None:
    """On a worker: ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, … as Ray sets them (needs a Train context).

    >>> set_torch_distributed_env_vars()  # on a Ray Train worker  # doctest: +SKIP
    """
    _required(SET_TORCH_ENV_VARS)()


def setup_torch_process_group(
    *, backend: str, world_rank: int, world_size: int, init_method: str, timeout_s: int
) -> None:
    """On a worker: join the torch process group as Ray's ``TorchConfig`` does (NCCL error handling included).

    >>> setup_torch_process_group(backend="gloo", world_rank=0, world_size=2, init_method="env://",
    ...                           timeout_s=1800)  # on a Ray Train worker  # doctest: +SKIP
    """
    _required(SETUP_PROCESS_GROUP)(
        backend=backend, world_rank=world_rank, world_size=world_size, init_method=init_method, timeout_s=timeout_s
    )


def shutdown_torch(*, destroy_process_group: bool) -> None:
    """On a worker: leave the process group and free cached CUDA memory, as Ray's backend does.

    >>> shutdown_torch(destroy_process_group=False)  # on a Ray Train worker  # doctest: +SKIP
    """
    _required(SHUTDOWN_TORCH)(destroy_process_group=destroy_process_group)


def cuda_device_context() -> AbstractContextManager[Any]:
    """On a worker, around the train function: its GPU becomes the current CUDA device (nothing on CPU).

    >>> with cuda_device_context():  # on a Ray Train worker  # doctest: +SKIP
    ...     pass
    """
    return _required(CUDA_DEVICE_CONTEXT)()


def prestart_train_helpers() -> None:
    """Start the detached actor that Ray Train's controller asks for resources, ahead of the first ``fit()``.

    Every controller sends its resource request to Ray's ``AutoscalingCoordinator`` actor (one per cluster,
    detached) and waits up to 5 s for the answer. The first ``fit()`` of a Ray session creates that actor, a
    new process importing Ray Data, and on a busy 2-core machine the controller gave up waiting — twice,
    10 s of its start-up. Called as soon as a run that will train connects, the actor is up by then. Only an
    optimisation: where this Ray moved the function, nothing is done and Ray Train creates the actor as before.
    Needs a running Ray:

    >>> prestart_train_helpers()  # needs Ray  # doctest: +SKIP
    """
    get_or_create = lookup(AUTOSCALING_COORDINATOR)
    if get_or_create is None:
        logger.debug(f"this Ray has no {AUTOSCALING_COORDINATOR}: Ray Train starts its coordinator itself")
        return
    get_or_create()  # get_if_exists: a no-op once it runs


def reload_ray_config() -> bool:
    """Have an already imported Ray read its ``RAY_*`` variables again; False (with a warning) where it cannot.

    Ray reads them at import, so one set later (``RAY_AUTH_MODE``) is seen only after this. Call it before
    ``ray.init``:

    >>> lookup(RAYLET_CONFIG) is not None
    True
    >>> reload_ray_config()  # needs Ray not yet initialised: the suite's doctests share its session  # doctest: +SKIP
    True
    """
    initialize = lookup(RAYLET_CONFIG)
    if initialize is None:
        _warn_once(
            f"this Ray has no {RAYLET_CONFIG}: RAY_* variables set after `import ray` are not seen "
            "(set RAY_AUTH_MODE=token before starting Python to send the cluster's token)"
        )
        return False
    initialize("")
    return True


def uploaded_py_modules(paths: list[str]) -> list[str] | None:
    """Upload local packages or ``.py`` files to the cluster as ``ray.init`` does for a job's ``py_modules``;
    their URIs go into an actor's (a Serve replica's) ``runtime_env``. None, with a warning, where this Ray
    moved the upload: the modules must then be installed on the nodes. Needs a running Ray:

    >>> uploaded_py_modules(['tests/toy_kind.py'])  # needs Ray  # doctest: +SKIP
    ['gcs://_ray_pkg_….zip']
    """
    otherwise = f"{', '.join(paths)} must be installed on every node"
    return _uploaded(UPLOAD_PY_MODULES, "py_modules", list(paths), include_gitignore=True, otherwise=otherwise)


def uploaded_working_dir(path: str) -> str | None:
    """Upload a local folder to the cluster as ``ray.init`` does for a job's ``working_dir``; its URI goes into
    an actor's (a Serve replica's) ``runtime_env``, whose processes then start in a copy of it on any node.
    None, with a warning, where this Ray moved the upload. Needs a running Ray:

    >>> uploaded_working_dir('runs/mnist-quickstart/export')  # needs Ray  # doctest: +SKIP
    'gcs://_ray_pkg_….zip'
    """
    otherwise = f"{path} must be on every node's disk"
    return _uploaded(UPLOAD_WORKING_DIR, "working_dir", path, include_gitignore=False, otherwise=otherwise)


def _uploaded(internal: str, key: str, value: Any, *, include_gitignore: bool, otherwise: str) -> Any:
    """The ``runtime_env[key]`` URI(s) of Ray's upload at ``internal``; None, warning ``otherwise``, where it moved."""
    upload = lookup(internal)
    if upload is None:
        _warn_once(f"this Ray has no {internal}: {otherwise}")
        return None
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        return upload({key: value}, include_gitignore=include_gitignore, scratch_dir=scratch)[key]


def on_this_loop(handle: Any) -> Any:
    """``handle`` (a Serve ``DeploymentHandle`` not yet used) with its router on the running event loop, where
    this Ray takes the option (``_init(_run_router_in_separate_loop=False)``); as it is otherwise."""
    try:
        handle._init(**{HANDLE_ROUTER_OPTION: False})
    except (
        AttributeError,
        TypeError,
        RuntimeError,
    ) as err:  # the option moved: the handle keeps Ray's default router thread
        _warn_once(f"a Serve handle's router stays in its own thread ({err})")
    return handle


def stop_auto_connect() -> None:
    """Let no later Ray call start or join a cluster by itself (``RAY_ENABLE_AUTO_CONNECT=0``, which Ray reads
    only at import). The driver joins its cluster explicitly; at exit, after Ray's own shutdown, a Serve handle's
    router thread would otherwise call ``ray.init`` from outside the main thread and log about it."""
    hook = lookup(AUTO_INIT_HOOK)
    if hook is not None and hasattr(hook, "enable_auto_connect"):
        hook.enable_auto_connect = False
