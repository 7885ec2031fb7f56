"""What Ray Train's controller unpickles for a run, and how a run is launched — without importing torch.

The controller is a new process per ``fit()``; it unpickles the run's backend config and callbacks before it
creates a single worker. Ray's ``TorchConfig`` lives in a module that imports torch at its top, so every
``fit()`` paid a torch import there (≈ 1–2 s on a 2-core CPU machine, 3–7 s with CUDA's libraries on a GPU
host) before the workers — which import torch again — were even started. :class:`TorchBackendConfig` sets
up the same process group, with every torch call made on the workers; this module imports only Ray.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.train import UserCallback
from ray.train.backend import Backend, BackendConfig
from ray.train.v2._internal.util import TrainingFramework

logger = logging.getLogger(__name__)

# Ray Train settings we change (Ray Train copies these from the driver's environment to the controller
# and the workers). The controller polls workers every 2 s by default, which adds up to 2 s after each
# phase of a run. The preemption watcher (one more actor process per worker group, started just as the
# train function starts) only observes spot-instance node preemption; FailureConfig restarts a lost
# worker group without it, and on a small machine its process start competes with the first steps.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass
class TorchBackendConfig(BackendConfig):
    """Ray Train's ``TorchConfig`` (env:// rendezvous), importing torch only on the workers.

    ``backend`` is ``"nccl"`` or ``"gloo"`` (no TPUs); None picks NCCL when the workers have GPUs. The
    workers run Ray's own process-group functions, so NCCL's error handling and the torch environment
    variables (``RANK``, ``LOCAL_RANK``, …) are exactly Ray's.

    >>> from ray.train.torch import TorchTrainer  # doctest: +SKIP
    >>> TorchTrainer(loop, torch_config=TorchBackendConfig(backend="gloo"))  # doctest: +SKIP
    >>> TorchBackendConfig(backend="gloo").to_dict()
    {'backend': 'gloo', 'init_method': 'env', 'timeout_s': 1800}
    """

    backend: str | None = None
    timeout_s: int = 1800

    @property
    def backend_cls(self) -> type:
        return _TorchBackend

    @property
    def train_func_context(self) -> type:
        return _CudaDeviceContext

    @property
    def framework(self) -> TrainingFramework:
        return TrainingFramework.TORCH

    def to_dict(self) -> dict[str, Any]:
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


class _TorchBackend(Backend):
    """Runs in the controller: finds the rendezvous address, then has every worker join the group."""

    share_cuda_visible_devices: bool = True  # as Ray's: each worker sees its node's training GPUs

    def on_start(self, worker_group: Any, backend_config: TorchBackendConfig) -> None:
        from ray.train._internal.utils import get_address_and_port

        gpus = worker_group.get_resources_per_worker().get("GPU", 0)
        backend = backend_config.backend or ("nccl" if gpus > 0 else "gloo")
        address, port = worker_group.execute_single(0, get_address_and_port)
        worker_group.execute(_set_rendezvous, address=address, port=port)
        ray.get([
            worker_group.execute_single_async(rank, _join_process_group, backend=backend, world_rank=rank,
                                              world_size=len(worker_group), timeout_s=backend_config.timeout_s)
            for rank in range(len(worker_group))
        ])

    def on_shutdown(self, worker_group: Any, backend_config: TorchBackendConfig) -> None:
        from ray._private.ray_constants import env_integer
        from ray.exceptions import GetTimeoutError
        from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S

        timeout_s = env_integer(TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S, DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S)
        try:  # as Ray's backend: a stuck teardown is reported, and does not hold the run's result
            ray.get(worker_group.execute_async(_shut_down, destroy_process_group=len(worker_group) > 1), timeout=timeout_s)
        except GetTimeoutError:
            logger.warning(f"torch process group shutdown timed out after {timeout_s} s")


# The worker side: Ray's own functions, imported (with torch) where they run.
def _set_rendezvous(address: str, port: int) -> None:
    from ray.train.torch.config import _set_torch_distributed_env_vars

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    _set_torch_distributed_env_vars()


def _join_process_group(**kwargs: Any) -> None:
    from ray.train.torch.config import _setup_torch_process_group

    _setup_torch_process_group(init_method="env://", **kwargs)


def _shut_down(**kwargs: Any) -> None:
    from ray.train.torch.config import _shutdown_torch

    _shutdown_torch(**kwargs)


class _CudaDeviceContext:
    """Around the train function on each worker: make its GPU the current CUDA device (as Ray's does)."""

    def __enter__(self) -> None:
        from ray.train.torch.config import TorchConfigContextManager

        TorchConfigContextManager().__enter__()

    def __exit__(self, *exc: Any) -> bool:
        return False


@functools.cache
def torch_trainer_class() -> type:
    """Ray Train's ``TorchTrainer``, less the Ray Data shard manager when a run is given no ``datasets``.

    Ray Train 2.60 starts a ``DatasetManager`` actor for every worker group even without datasets: one
    more process importing Ray Data (about 2 CPU-seconds) while the workers import torch, on the
    critical path of start-up. Runs that pass ``datasets`` keep it. This overrides a private hook
    (``_create_default_callbacks``); if a Ray release moves it, the plain ``TorchTrainer`` is used.

    >>> torch_trainer_class().__name__
    'LeanTorchTrainer'
    """
    from ray.train.torch import TorchTrainer

    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback
    except ImportError:  # another Ray layout: keep its defaults
        return TorchTrainer
    if not hasattr(TorchTrainer, "_create_default_callbacks"):
        return TorchTrainer

    class LeanTorchTrainer(TorchTrainer):
        def _create_default_callbacks(self) -> list[Any]:
            callbacks = super()._create_default_callbacks()
            if getattr(self, "datasets", None):
                return callbacks
            return [callback for callback in callbacks if not isinstance(callback, DatasetsCallback)]

    return LeanTorchTrainer


def prestart_train_helpers() -> None:
    """Start the detached actor that Ray Train's controller asks for resources, ahead of the first ``fit()``.

    Every controller sends its resource request to Ray's ``AutoscalingCoordinator`` actor (one per cluster,
    detached) and waits up to 5 s for the answer. The first ``fit()`` of a Ray session creates that actor, a
    new process importing Ray Data, and on a busy 2-core machine the controller gave up waiting — twice,
    10 s of its start-up. Called as soon as a run that will train connects, the actor is up by then. It
    uses a private Ray Data function; if a Ray release moves it, Ray Train creates the actor as before.
    Needs a running Ray:

    >>> prestart_train_helpers()  # doctest: +SKIP
    """
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator,
        )
    except ImportError:
        return
    get_or_create_autoscaling_coordinator()  # get_if_exists: a no-op once it runs


class ProgressRelay(UserCallback):
    """A Ray Train callback that forwards each report to the driver through a local file.

    It runs in the Train controller, which Ray Train places on the driver's node, so a JSON-lines file
    there reaches the driver without one more actor process (a ``ray.util.queue.Queue`` costs a process
    start while the controller and the workers are starting).

    >>> import tempfile
    >>> path = tempfile.mktemp()
    >>> ProgressRelay(path).after_report(None, [{"epoch": 1, "val_accuracy": 0.5}], None)
    >>> tail = ProgressTail(path)
    >>> tail.read()
    [{'epoch': 1, 'val_accuracy': 0.5}]
    >>> tail.read(), os.remove(path)
    ([], None)
    """

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        with open(self.path, "a") as handle:  # one short append per epoch; the driver reads whole lines
            handle.write(json.dumps(dict(metrics[0]), default=float) + "\n")


class ProgressTail:
    """The driver's side of :class:`ProgressRelay`: the reports appended since the last read."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        """Reports written completely since the previous call, oldest first."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits for the next read
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line]
