"""How a training run is spread: Ray Train's ``TorchTrainer`` over N workers, checkpoints, retries.

Every rank runs :func:`train_loop`: the :class:`~deepseek_ray.optim.MixedPrecisionTrainer` a search trial uses,
built from the experiment file's :class:`~deepseek_ray.config.TrainConfig`, with the run's callbacks around it
(timing, best weights, early stopping from ``optim``; :class:`Checkpointing` here). Each epoch, every rank calls
``ray.train.report`` once (a barrier in Train V2); rank 0 attaches a checkpoint holding the full trainer state,
callbacks' states included, so a restarted worker group resumes at the next epoch and early stopping survives
the restart.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from ray.train import UserCallback

from ..config import TrainConfig
from ..data import DatasetSplits
from ..files import write_atomically
from ..optim import BestWeights, Callback, EarlyStopping, MixedPrecisionTrainer, Timing
from ..optim.trainer import required_lr
from ..ray_compat import TRAIN_ENV, prestart_train_helpers, torch_trainer_class
from .backend import TorchBackendConfig
from .progress import ProgressRelay, ProgressTail

ProgressFn = Callable[[str], None]
STATE_FILE = "trainer_state.pt"
MICRO_BATCH_FILE = "oom_micro_batch.json"  # in the run's folder: what a restart after an OOM starts from


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch; make CPU kernels deterministic.

    >>> seed_everything(0); a = torch.rand(1); seed_everything(0); bool(torch.rand(1) == a)
    True
    """
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_trainer(
    config: TrainConfig,
    model_spec: dict[str, Any],
    data: DatasetSplits,
    *,
    seed: int = 0,
    augment: Sequence[dict[str, Any]] = (),
    distributed: bool = False,
    callbacks: Sequence[Callback] = (),
) -> MixedPrecisionTrainer:
    """The model ``model_spec`` describes and its :class:`MixedPrecisionTrainer`, from ``config``, for one rank.

    The seed is set first, so every rank starts from the same weights; the task and class count are ``data``'s.

    >>> from deepseek_ray.data import load_dataset
    >>> splits = load_dataset('digits', seed=0, limit=100)
    >>> spec = {'type': 'plain_cnn', 'in_channels': 1, 'num_classes': 10, 'image_size': 8}
    >>> build_trainer(TrainConfig(optimizer={'lr': 1e-3}), spec, splits).batch_size
    64
    """
    from ..data import build_batch_transform
    from ..models import build_model

    seed_everything(seed)
    model = build_model(model_spec)
    device = None
    if distributed:
        import ray.train.torch

        model = ray.train.torch.prepare_model(model)
        device = ray.train.torch.get_device()
    return MixedPrecisionTrainer.from_config(
        config,
        model,
        device=device,
        batch_transform=build_batch_transform(augment, data.num_classes),
        seed=seed,
        task=data.task,
        callbacks=callbacks,
    )


def _use_recorded_micro_batch(trainer: MixedPrecisionTrainer, hint: Path | None) -> None:
    """Start from the micro-batch an earlier attempt of this run had to back off to (:func:`_record_micro_batch`)."""
    if hint is None or not hint.exists():
        return
    smaller = json.loads(hint.read_text())["micro_batch"]
    while trainer.batch_size > smaller:
        trainer.back_off()


def _record_micro_batch(hint: Path | None, micro_batch: int) -> None:
    """Leave the micro-batch a restart should use, after an OOM the trainer could not redo in place.

    That one is an OOM inside DDP's syncing backward: the worker ends, and Ray Train restarts the group from the
    last checkpoint, which holds the micro-batch that ran out. The file sits in the run's folder on the storage
    path, which every node of a multi-node run shares; several ranks writing it keep the smallest value.
    """
    if hint is None or micro_batch < 1:  # a micro-batch of 1 ran out: the model does not fit, nothing to record
        return
    if hint.exists() and json.loads(hint.read_text())["micro_batch"] <= micro_batch:
        return
    hint.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(hint, json.dumps({"micro_batch": micro_batch}))


class Checkpointing(Callback):
    """Ray Train's side of a rank's loop: one ``ray.train.report`` per epoch on every rank (a barrier in Train V2),
    rank 0 attaching the trainer's full state (callbacks' states included) as the checkpoint.

    :meth:`restore`, before ``fit``, continues from Ray Train's latest checkpoint — at the next epoch, with the
    best weights and the early-stopping count — and from the micro-batch an earlier attempt's OOM left in
    ``run_dir``. An OOM that ends the worker records that micro-batch for the restart.

    >>> Checkpointing(run_dir=None).hint is None
    True
    """

    def __init__(self, run_dir: str | Path | None):
        self.hint = Path(run_dir) / MICRO_BATCH_FILE if run_dir else None

    def restore(self, trainer: MixedPrecisionTrainer) -> None:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:  # a restart, or a rerun with the same name and storage path
            with checkpoint.as_directory() as folder:
                state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
            trainer.load_state_dict(state["trainer"])
        _use_recorded_micro_batch(trainer, self.hint)

    def on_epoch_end(self, trainer: MixedPrecisionTrainer, epoch: int, metrics: dict[str, Any]) -> None:
        import ray.train

        if ray.train.get_context().get_world_rank() != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save({"trainer": trainer.state_dict()}, Path(folder) / STATE_FILE)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))

    def on_exception(self, trainer: MixedPrecisionTrainer, error: BaseException) -> None:
        if isinstance(error, torch.OutOfMemoryError):  # the trainer redoes every OOM it can; this one ends the worker
            _record_micro_batch(self.hint, trainer.batch_size // 2)


def train_loop(loop_config: dict[str, Any]) -> None:
    """The per-worker function handed to ``TorchTrainer``: the trainer from the config, the run's callbacks, fit.

    ``loop_config`` holds the :class:`~deepseek_ray.config.TrainConfig` (pydantic: no torch), the rest of the
    recipe as plain values, and the caller's callbacks pickled to bytes: Ray Train's controller unpickles the loop
    config too, and must not import torch (which the callbacks' classes do).
    """
    import ray
    import ray.train

    config: TrainConfig = loop_config["config"]
    recipe: dict[str, Any] = loop_config["recipe"]
    data: DatasetSplits = ray.get(loop_config["data"])
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    metric, mode, patience = recipe["metric"], recipe["mode"], config.early_stopping_patience
    checkpointing = Checkpointing(loop_config.get("run_dir"))
    # In this order: timing and the best/stop decisions are in the metrics and the state before the report,
    # and the caller's callbacks (drills) run after the epoch's checkpoint exists.
    callbacks = [
        Timing(loop_config.get("submitted_at")),
        BestWeights(metric, mode),
        *([EarlyStopping(metric, mode, patience)] if patience is not None else []),
        checkpointing,
        *pickle.loads(loop_config["callbacks"]),
    ]
    trainer = build_trainer(
        config,
        recipe["model_spec"],
        data,
        seed=recipe["seed"],
        augment=recipe["augment"],
        distributed=ray.train.get_context().get_world_size() > 1,
        callbacks=callbacks,
    )
    checkpointing.restore(trainer)
    trainer.fit(data.train, data.val, epochs=config.epochs)


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


def train(
    config: TrainConfig,
    data: DatasetSplits,
    *,
    model_spec: dict[str, Any],
    name: str,
    storage_path: str | Path,
    metric: str = "val_accuracy",
    mode: str = "max",
    seed: int = 0,
    augment: Sequence[dict[str, Any]] = (),
    progress: ProgressFn | None = None,
    callbacks: Sequence[Callback] = (),
    ray_callbacks: Sequence[UserCallback] = (),
) -> TrainResult:
    """Train ``model_spec`` as ``config`` says, on ``config.workers`` Ray Train workers; return the best weights
    by ``metric`` (``mode`` max or min; no DDP prefix).

    ``config.optimizer.lr`` must be set (merge a searched one in: ``config.model_copy(update=...)``). Rerunning
    with the same ``name`` and ``storage_path`` resumes from the last checkpoint. ``callbacks``
    (:class:`~deepseek_ray.optim.Callback`) join every rank's loop after the run's own; tests pass the drills of
    :mod:`deepseek_ray.optim.drills` here. ``ray_callbacks`` (Ray Train ``UserCallback``) run in Train's
    controller process, next to the progress relay.

    >>> config = TrainConfig(epochs=2, optimizer={'lr': 5e-3})
    >>> result = train(config, splits, model_spec=spec, name='demo',
    ...                storage_path='/tmp/runs')  # Ray Train  # doctest: +SKIP
    """
    submitted_at = time.time()
    _check_arguments(config, callbacks)
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    for key, value in TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    prestart_train_helpers()
    handle, relay_path = tempfile.mkstemp(prefix="deepseek_ray_progress_", suffix=".jsonl")
    os.close(handle)
    tail = ProgressTail(relay_path)
    workers = config.workers
    # Threads per worker from the cluster's CPUs, not from what is free this instant: the previous run's
    # placement group may still be returning its CPUs, and a thread count that depends on that timing
    # changes the float reductions, so two runs with the same seed would differ.
    # (Capped by the largest node, which a worker cannot outgrow.)
    cpus = ray.cluster_resources().get("CPU", workers) if not config.use_gpu else 1
    node_cpus = max((node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]), default=cpus)
    threads = max(1, int(min(cpus // workers, node_cpus)))
    recipe = {"model_spec": model_spec, "metric": metric, "mode": mode, "seed": seed, "augment": list(augment)}
    trainer = torch_trainer_class()(
        train_loop,
        # The data travels once through the object store; the config itself stays a few hundred bytes.
        train_loop_config={
            "config": config,
            "recipe": recipe,
            "callbacks": ray.cloudpickle.dumps(list(callbacks)),
            "data": ray.put(data),
            "threads": threads,
            "submitted_at": submitted_at,
            "run_dir": str(Path(storage_path).resolve() / name),
        },
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=config.use_gpu, resources_per_worker={"CPU": 1}),
        torch_config=TorchBackendConfig(
            backend="nccl" if config.use_gpu else "gloo", timeout_s=config.collective_timeout_s
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=config.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[ProgressRelay(relay_path), *ray_callbacks],  # type: ignore[list-item]
        ),
    )
    start = time.perf_counter()
    try:
        result, history = _fit_while_relaying(trainer, tail, _progress_line(config.epochs, metric, progress))
    finally:
        os.remove(relay_path)
    if result.checkpoint is None:
        raise RuntimeError(f"training reported no checkpoint: {result.error}")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)["trainer"]
    best = state["callbacks"][BestWeights.state_key]
    return TrainResult(
        best_weights=best["weights"],
        best_metric=best["best"],
        history=history,
        epochs_run=state["epoch"],
        checkpoint_path=result.checkpoint.path,
        wall_s=time.perf_counter() - start,
        startup_s=history[0].get("startup_s") if history else None,
    )


def _check_arguments(config: TrainConfig, callbacks: Sequence[Callback]) -> None:
    """Refuse at the driver what would otherwise fail on every worker after start-up."""
    required_lr(config)
    strangers = [type(c).__name__ for c in callbacks if not isinstance(c, Callback)]
    if strangers:
        raise TypeError(
            f"callbacks must be deepseek_ray.optim.Callback objects, got {', '.join(strangers)} "
            "(Ray Train's UserCallbacks go in ray_callbacks)"
        )


def _progress_line(epochs: int, metric: str, progress: ProgressFn | None) -> Callable[[dict[str, Any]], None]:
    def line(report: dict[str, Any]) -> None:
        if progress:
            progress(
                f"epoch {report['epoch']:>2}/{epochs} train_loss={report['train_loss']:.4f} "
                f"val_loss={report['val_loss']:.4f} {metric}={report[metric]:.4f} "
                f"({report['epoch_time_s']:.1f}s)"
                + ("  early stop" if report.get("stopping") else "")
                + (f"  [started in {report['startup_s']:.1f}s]" if "startup_s" in report else "")
            )

    return line


def _fit_while_relaying(
    trainer: Any, tail: ProgressTail, on_report: Callable[[dict[str, Any]], None]
) -> tuple[Any, list[dict[str, Any]]]:
    """Run ``trainer.fit()`` in a thread, passing each epoch's report on as it arrives; return (result, reports)."""
    history: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=lambda: outcome.update(result=_fit(trainer)), daemon=True)
    runner.start()
    while True:
        alive = runner.is_alive()  # read before the file, so the last reports are not missed
        for report in tail.read():
            history.append(report)
            on_report(report)
        if not alive:
            break
        runner.join(timeout=0.5)
    result = outcome["result"]
    if isinstance(result, BaseException):
        raise result
    return result, history


def _fit(trainer: Any) -> Any:
    try:
        return trainer.fit()
    except BaseException as err:  # surfaced in the caller's thread
        return err
