"""How a training run is spread: Ray Train's ``TorchTrainer`` over N workers, checkpoints, retries.

Every rank runs :func:`train_loop` with the same :class:`MixedPrecisionTrainer` a search trial uses.
Each epoch, every rank calls ``ray.train.report`` once (a barrier in Train V2); rank 0 attaches a
checkpoint holding the full trainer state plus the best weights so far, so a restarted worker
group resumes at the next epoch and early stopping survives the restart.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from ray.train import UserCallback

from ..data import DatasetSplits

ProgressFn = Callable[[str], None]
STATE_FILE = "trainer_state.pt"
# Ray Train settings we change (Ray Train copies these from the driver's environment to the controller
# and the workers). The controller polls workers every 2 s by default, which adds up to 2 s after each
# phase of a run. The preemption watcher (one more actor process per worker group, started just as the
# train function starts) only observes spot-instance node preemption; FailureConfig restarts a lost
# worker group without it, and on a small machine its process start competes with the first steps.
TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}


@dataclass
class TrainSettings:
    """Everything a worker needs besides the data (kept small: it travels to every rank)."""

    model_spec: dict[str, Any]
    epochs: int
    lr: float
    optimizer: str = "adamw"
    weight_decay: float = 0.01
    precision: str = "fp32"
    compile: bool | str = False  # True, or a torch.compile mode such as "reduce-overhead"
    batch_size: int = 64
    accumulation: int = 1
    clip_grad_norm: float | None = 1.0
    schedule: str = "cosine"
    warmup_steps: int = 0
    patience: int | None = 3
    augment: list[dict[str, Any]] = field(default_factory=list)
    seed: int = 0
    metric: str = "val_accuracy"
    mode: str = "max"
    task: str = "classification"  # or "regression" (MSE loss, val_mae)
    fail_at_epoch: int | None = None  # failure drill: the first attempt raises after this epoch
    inject_oom: dict[str, int] | None = None  # OOM drill: {"rank": r, "step": s} raises one OOM on rank r at step s


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; make CPU kernels deterministic."""
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_trainer(settings: TrainSettings, num_classes: int, distributed: bool):
    """The model and :class:`MixedPrecisionTrainer` for one rank, as the settings describe."""
    from ..data import build_batch_transform
    from ..models import build_model
    from ..optim import MixedPrecisionTrainer

    seed_everything(settings.seed)  # same initial weights on every rank
    model = build_model(settings.model_spec)
    device = None
    if distributed:
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
        device = ray.train.torch.get_device()
    return MixedPrecisionTrainer(
        model, settings.optimizer, settings.lr, weight_decay=settings.weight_decay,
        fp16=settings.precision == "fp16", bf16=settings.precision == "bf16", clip_grad_norm=settings.clip_grad_norm,
        warmup_steps=settings.warmup_steps, scheduler=settings.schedule, per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=settings.accumulation, compile=settings.compile, device=device,
        batch_transform=build_batch_transform(settings.augment, num_classes), seed=settings.seed, task=settings.task,
    )


def inject_oom(trainer: Any, step: int) -> None:
    """Make the network's own forward raise one out-of-memory error at optimizer step ``step``.

    It fires inside the wrapped module, after DDP's pre-forward collectives, where a real CUDA OOM
    strikes; the trainer must then back off on every rank.

    >>> from deepseek_ray.optim import MixedPrecisionTrainer
    >>> trainer = MixedPrecisionTrainer(torch.nn.Linear(2, 2))
    >>> inject_oom(trainer, step=0)
    >>> try:
    ...     trainer.model(torch.zeros(1, 2))
    ... except torch.OutOfMemoryError as err:
    ...     print(err)
    injected out of memory at step 0
    >>> trainer.model(torch.zeros(1, 2)).shape  # only once
    torch.Size([1, 2])
    """
    network = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
    fired: list[bool] = []

    def hook(module: torch.nn.Module, inputs: Any) -> None:
        if module.training and trainer.step == step and not fired:  # a training forward, not evaluation
            fired.append(True)
            raise torch.OutOfMemoryError(f"injected out of memory at step {step}")

    network.register_forward_pre_hook(hook)


def _better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train_loop(loop_config: dict[str, Any]) -> None:
    """The per-worker function handed to ``TorchTrainer``."""
    import ray
    import ray.train
    import torch.distributed as dist

    settings: TrainSettings = loop_config["settings"]
    data: DatasetSplits = ray.get(loop_config["data"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    trainer = build_trainer(settings, data.num_classes, distributed=context.get_world_size() > 1)
    trainer.total_steps = settings.epochs * trainer.steps_per_epoch(data.train)
    if settings.inject_oom is not None and settings.inject_oom["rank"] == rank:
        inject_oom(trainer, settings.inject_oom["step"])

    best, best_weights, stale = None, None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart, or a rerun with the same name and storage path
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        trainer.load_state_dict(state["trainer"])
        best, best_weights, stale = state["best"], state["best_weights"], state["stale"]

    first_attempt = checkpoint is None
    submitted_at = loop_config.get("submitted_at")
    while trainer.epoch < settings.epochs and (settings.patience is None or stale < settings.patience):
        start = time.perf_counter()
        # Seconds from train() to this attempt's first step on the slowest rank (a restart's count includes
        # the attempts before it). Wall clock: the driver and the workers share it on one machine. Both
        # tensors live on the trainer's device: NCCL reduces only CUDA tensors.
        startup = torch.tensor([time.time() - submitted_at], dtype=torch.float64, device=trainer.device) if submitted_at else None
        train_loss = torch.tensor(trainer.train_epoch(data.train), device=trainer.device)
        if dist.is_initialized():
            dist.all_reduce(train_loss)
            train_loss /= dist.get_world_size()
            if startup is not None:  # every rank takes this branch equally often: no collective waits alone
                dist.all_reduce(startup, op=dist.ReduceOp.MAX)
        val = trainer.evaluate(data.val)  # identical on every rank (all-reduced)
        metrics = {"epoch": trainer.epoch, "train_loss": float(train_loss), **{f"val_{k}": v for k, v in val.items()},
                   "epoch_time_s": time.perf_counter() - start}
        if startup is not None:
            metrics["startup_s"] = float(startup)
            submitted_at = None  # only the first epoch of an attempt measures start-up
        if _better(metrics[settings.metric], best, settings.mode):
            best, stale = metrics[settings.metric], 0
            best_weights = {k: v.detach().clone() for k, v in trainer.state_dict()["model"].items()}
        else:
            stale += 1
        metrics.update(best=best, stopping=settings.patience is not None and stale >= settings.patience)
        if rank == 0:
            with tempfile.TemporaryDirectory() as folder:
                torch.save({"trainer": trainer.state_dict(), "best": best, "best_weights": best_weights, "stale": stale},
                           Path(folder) / STATE_FILE)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        else:
            ray.train.report(metrics)
        if first_attempt and settings.fail_at_epoch == trainer.epoch:
            raise RuntimeError(f"failure drill: worker {rank} stops after epoch {trainer.epoch}")


@dataclass
class TrainResult:
    """The outcome of :func:`train`: best weights, history and where the checkpoints live."""

    best_weights: dict[str, torch.Tensor]
    best_metric: float
    history: list[dict[str, Any]]
    epochs_run: int
    checkpoint_path: str
    wall_s: float
    attempts: int = 1
    startup_s: float | None = None  # train() → first step on every worker (first attempt)


@functools.cache
def torch_trainer_class() -> type:
    """Ray Train's ``TorchTrainer``, less the Ray Data shard manager when a run is given no ``datasets``.

    Ray Train 2.60 starts a ``DatasetManager`` actor for every worker group even without datasets: one
    more process importing Ray Data (about 2 CPU-seconds) while the workers import torch, on the
    critical path of start-up. Runs that pass ``datasets`` keep it. This overrides a private hook
    (``_create_default_callbacks``); if a Ray release moves it, the plain ``TorchTrainer`` is used.
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


class _ProgressRelay(UserCallback):
    """A Ray Train callback that forwards each report to the driver through a local file.

    It runs in the Train controller, which Ray Train places on the driver's node, so a JSON-lines file
    there reaches the driver without one more actor process (a ``ray.util.queue.Queue`` costs a process
    start while the controller and the workers are starting).

    >>> import os, tempfile
    >>> path = tempfile.mktemp()
    >>> _ProgressRelay(path).after_report(None, [{"epoch": 1, "val_accuracy": 0.5}], None)
    >>> tail = _ProgressTail(path)
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


class _ProgressTail:
    """The driver's side of :class:`_ProgressRelay`: the reports appended since the last read."""

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


def train(
    settings: TrainSettings,
    data: DatasetSplits,
    *,
    name: str,
    storage_path: str | Path,
    workers: int = 2,
    use_gpu: bool = False,
    max_failures: int = 2,
    progress: ProgressFn | None = None,
) -> TrainResult:
    """Train on ``workers`` Ray Train workers and return the best weights (no DDP prefix).

    Rerunning with the same ``name`` and ``storage_path`` resumes from the last checkpoint.

    >>> result = train(settings, splits, name='demo', storage_path='/tmp/runs')  # doctest: +SKIP
    """
    submitted_at = time.time()
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    for key, value in TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    prestart_train_helpers()
    handle, relay_path = tempfile.mkstemp(prefix="deepseek_ray_progress_", suffix=".jsonl")
    os.close(handle)
    tail = _ProgressTail(relay_path)
    # Threads per worker from the cluster's CPUs, not from what is free this instant: the previous run's
    # placement group may still be returning its CPUs, and a thread count that depends on that timing
    # changes the float reductions, so two runs with the same seed would differ.
    # (Capped by the largest node, which a worker cannot outgrow.)
    cpus = ray.cluster_resources().get("CPU", workers) if not use_gpu else 1
    node_cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=cpus)
    threads = max(1, int(min(cpus // workers, node_cpus)))
    trainer = torch_trainer_class()(
        train_loop,
        # The data travels once through the object store; the config itself stays a few hundred bytes.
        train_loop_config={"settings": settings, "data": ray.put(data), "threads": threads,
                           "submitted_at": submitted_at},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[_ProgressRelay(relay_path)],
        ),
    )
    history: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=_fit(trainer)), daemon=True)
    start = time.perf_counter()
    runner.start()
    try:
        while True:
            alive = runner.is_alive()  # read before the file, so the last reports are not missed
            for report in tail.read():
                history.append(report)
                if progress:
                    progress(
                        f"epoch {report['epoch']:>2}/{settings.epochs} train_loss={report['train_loss']:.4f} "
                        f"val_loss={report['val_loss']:.4f} {settings.metric}={report[settings.metric]:.4f} "
                        f"({report['epoch_time_s']:.1f}s)" + ("  early stop" if report.get("stopping") else "")
                        + (f"  [started in {report['startup_s']:.1f}s]" if "startup_s" in report else "")
                    )
            if not alive:
                break
            runner.join(timeout=0.5)
    finally:
        os.remove(relay_path)
    result = outcome["result"]
    if isinstance(result, BaseException):
        raise result
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
    return TrainResult(
        best_weights=state["best_weights"], best_metric=state["best"], history=history,
        epochs_run=state["trainer"]["epoch"], checkpoint_path=result.checkpoint.path,
        wall_s=time.perf_counter() - start, startup_s=history[0].get("startup_s") if history else None,
    )


def _fit(trainer: Any) -> Any:
    try:
        return trainer.fit()
    except BaseException as err:  # surfaced in the caller's thread
        return err
