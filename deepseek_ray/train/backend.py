"""The torch process group for a Ray Train run, set up without importing torch in Train's controller.

The controller is a new process per ``fit()``; it unpickles the run's backend config and callbacks before it
creates a single worker. Ray's ``TorchConfig`` lives in a module that imports torch at its top, so every
``fit()`` paid a torch import there (≈ 1–2 s on a 2-core CPU machine, 3–7 s with CUDA's libraries on a GPU
host) before the workers — which import torch again — were even started. :class:`TorchBackendConfig` sets
up the same process group, with every torch call made on the workers; this module imports only Ray. The Ray
functions it runs there are private, reached through :mod:`deepseek_ray.ray_compat`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray.train.backend import Backend, BackendConfig

from .. import ray_compat

logger = logging.getLogger(__name__)


@dataclass
class TorchBackendConfig(BackendConfig):
    """Ray Train's ``TorchConfig`` (env:// rendezvous), importing torch only on the workers.

    ``backend`` is ``"nccl"`` or ``"gloo"`` (no TPUs); None picks NCCL when the workers have GPUs. The
    workers run Ray's own process-group functions, so NCCL's error handling and the torch environment
    variables (``RANK``, ``LOCAL_RANK``, …) are exactly Ray's. Give it to the class
    :func:`~deepseek_ray.ray_compat.torch_trainer_class` returns, which swaps in Ray's ``TorchConfig`` where
    this Ray lacks those functions.

    >>> from deepseek_ray.ray_compat import torch_trainer_class
    >>> def loop(config): ...
    >>> trainer = torch_trainer_class()(loop, torch_config=TorchBackendConfig(backend="gloo"))
    >>> from ray.train.torch import TorchTrainer
    >>> isinstance(trainer, TorchTrainer)  # built without a running Ray; trainer.fit() starts the workers
    True
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
    def framework(self) -> Any:
        return ray_compat.torch_training_framework()

    def to_dict(self) -> dict[str, Any]:
        """The fields of Ray's ``TorchConfig`` (Train's run state shows them; the fallback is built from them)."""
        return {"backend": self.backend, "init_method": "env", "timeout_s": self.timeout_s}


class _TorchBackend(Backend):
    """Runs in the controller: finds the rendezvous address, then has every worker join the group."""

    share_cuda_visible_devices: bool = True  # as Ray's: each worker sees its node's training GPUs

    def on_start(self, worker_group: Any, backend_config: BackendConfig) -> None:
        assert isinstance(backend_config, TorchBackendConfig)  # Ray hands a backend the config that named it
        gpus = worker_group.get_resources_per_worker().get("GPU", 0)
        backend = backend_config.backend or ("nccl" if gpus > 0 else "gloo")
        address, port = worker_group.execute_single(0, ray_compat.address_and_port)
        worker_group.execute(_set_rendezvous, address=address, port=port)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    _join_process_group,
                    backend=backend,
                    world_rank=rank,
                    world_size=len(worker_group),
                    timeout_s=backend_config.timeout_s,
                )
                for rank in range(len(worker_group))
            ]
        )

    def on_shutdown(self, worker_group: Any, backend_config: BackendConfig) -> None:
        from ray.exceptions import GetTimeoutError

        timeout_s = _shutdown_timeout_s()
        try:  # as Ray's backend: a stuck teardown is reported, and does not hold the run's result
            ray.get(
                worker_group.execute_async(ray_compat.shutdown_torch, destroy_process_group=len(worker_group) > 1),
                timeout=timeout_s,
            )
        except GetTimeoutError:
            logger.warning(f"torch process group shutdown timed out after {timeout_s} s")


def _shutdown_timeout_s() -> int:
    """Ray's setting for how long a teardown may take, read as Ray's backend reads it (a bad value: the default).

    >>> _shutdown_timeout_s()
    30
    """
    from ray.train.constants import DEFAULT_TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S as DEFAULT
    from ray.train.constants import TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S as NAME

    value = os.environ.get(NAME)
    try:
        return DEFAULT if value is None else int(value)
    except ValueError:
        logger.warning(f"{NAME}={value!r} is not an integer; using {DEFAULT}")
        return DEFAULT


# The worker side: named functions, so Ray's task events show which step a worker is in.
def _set_rendezvous(address: str, port: int) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = address, str(port)
    ray_compat.set_torch_distributed_env_vars()


def _join_process_group(*, backend: str, world_rank: int, world_size: int, timeout_s: int) -> None:
    ray_compat.setup_torch_process_group(
        backend=backend, world_rank=world_rank, world_size=world_size, init_method="env://", timeout_s=timeout_s
    )


class _CudaDeviceContext:
    """Around the train function on each worker: make its GPU the current CUDA device (as Ray's does)."""

    def __enter__(self) -> None:
        ray_compat.cuda_device_context().__enter__()

    def __exit__(self, *exc: object) -> None:  # as Ray's: exceptions propagate
        return None
