"""How a training run is spread: Ray Train's ``TorchTrainer`` over N workers, checkpoints, retries.

Every rank runs :func:`train_loop` with the same :class:`MixedPrecisionTrainer` a search trial uses.
Each epoch, every rank calls ``ray.train.report`` once (a barrier in Train V2); rank 0 attaches a
checkpoint holding the full trainer state plus the best weights so far, so a restarted worker
group resumes at the next epoch and early stopping survives the restart.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from ray.train import UserCallback

from ..data import DatasetSplits
from .launcher import TRAIN_ENV, ProgressRelay, ProgressTail, TorchBackendConfig, prestart_train_helpers, torch_trainer_class

ProgressFn = Callable[[str], None]
STATE_FILE = "trainer_state.pt"
MICRO_BATCH_FILE = "oom_micro_batch.json"  # in the run's folder: what a restart after an OOM starts from


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
    # OOM drill: {"rank": r, "step": s} raises one OOM in rank r's forward at step s; with "where": "backward",
    # at the end of its backward (DDP's all-reduces launched) whenever it runs at the first micro-batch size.
    inject_oom: dict[str, Any] | None = None


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


def inject_oom(trainer: Any, step: int, where: str = "forward") -> None:
    """Make the network raise an out-of-memory error at optimizer step ``step``, as a real CUDA OOM would.

    ``"forward"``: once, inside the wrapped module, after DDP's pre-forward collectives. ``"backward"``: at
    the end of the network's backward, every time it runs at the micro-batch size it started with — under
    DDP, in the syncing backward, with the all-reduces in flight: the one place the trainer cannot redo.

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
    first_micro_batch = trainer.batch_size

    def before_forward(module: torch.nn.Module, inputs: Any) -> None:
        if module.training and trainer.step == step and not fired:  # a training forward, not evaluation
            fired.append(True)
            raise torch.OutOfMemoryError(f"injected out of memory at step {step}")

    def after_backward(module: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
        if trainer.step == step and trainer.batch_size == first_micro_batch:
            raise torch.OutOfMemoryError(f"injected out of memory in the backward of step {step}")

    if where == "forward":
        network.register_forward_pre_hook(before_forward)
    else:
        network.register_full_backward_hook(after_backward)


def _use_recorded_micro_batch(trainer: Any, hint: Path | None) -> None:
    """Start from the micro-batch a previous attempt of this run had to back off to (see :func:`_record_micro_batch`)."""
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
    partial = hint.with_name(f"{hint.name}.{os.getpid()}")
    partial.write_text(json.dumps({"micro_batch": micro_batch}))
    os.replace(partial, hint)


def _better(value: float, best: float | None, mode: str) -> bool:
    return best is None or (value > best if mode == "max" else value < best)


def train_loop(loop_config: dict[str, Any]) -> None:
    """The per-worker function handed to ``TorchTrainer``.

    ``loop_config["settings"]`` holds :class:`TrainSettings`' fields as a plain dict: Ray Train's controller
    unpickles the loop config too, and a dict keeps torch (which this module imports) out of that process.
    """
    import ray
    import ray.train
    import torch.distributed as dist

    settings = TrainSettings(**loop_config["settings"])
    data: DatasetSplits = ray.get(loop_config["data"])
    context = ray.train.get_context()
    rank = context.get_world_rank()
    torch.set_num_threads(max(1, int(loop_config.get("threads", 1))))
    trainer = build_trainer(settings, data.num_classes, distributed=context.get_world_size() > 1)
    trainer.total_steps = settings.epochs * trainer.steps_per_epoch(data.train)
    if settings.inject_oom is not None and settings.inject_oom["rank"] == rank:
        inject_oom(trainer, settings.inject_oom["step"], settings.inject_oom.get("where", "forward"))
    hint = Path(loop_config["run_dir"]) / MICRO_BATCH_FILE if loop_config.get("run_dir") else None

    best, best_weights, stale = None, None, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restart, or a rerun with the same name and storage path
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
        trainer.load_state_dict(state["trainer"])
        best, best_weights, stale = state["best"], state["best_weights"], state["stale"]
    _use_recorded_micro_batch(trainer, hint)

    first_attempt = checkpoint is None
    submitted_at = loop_config.get("submitted_at")
    while trainer.epoch < settings.epochs and (settings.patience is None or stale < settings.patience):
        start = time.perf_counter()
        # Seconds from train() to this attempt's first step on the slowest rank (a restart's count includes
        # the attempts before it). Wall clock: the driver and the workers share it on one machine. Both
        # tensors live on the trainer's device: NCCL reduces only CUDA tensors.
        startup = torch.tensor([time.time() - submitted_at], dtype=torch.float64, device=trainer.device) if submitted_at else None
        try:
            train_loss = torch.tensor(trainer.train_epoch(data.train), device=trainer.device)
        except torch.OutOfMemoryError:  # the trainer redoes every OOM it can; this one ends the worker
            _record_micro_batch(hint, trainer.batch_size // 2)
            raise
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
    callbacks: Sequence[UserCallback] = (),
) -> TrainResult:
    """Train on ``workers`` Ray Train workers and return the best weights (no DDP prefix).

    Rerunning with the same ``name`` and ``storage_path`` resumes from the last checkpoint. ``callbacks``
    are more Ray Train ``UserCallback``s (they run in Train's controller process, next to the progress relay).

    >>> result = train(settings, splits, name='demo', storage_path='/tmp/runs')  # doctest: +SKIP
    """
    submitted_at = time.time()
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig

    os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "180")
    for key, value in TRAIN_ENV.items():
        os.environ.setdefault(key, value)
    prestart_train_helpers()
    handle, relay_path = tempfile.mkstemp(prefix="deepseek_ray_progress_", suffix=".jsonl")
    os.close(handle)
    tail = ProgressTail(relay_path)
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
        train_loop_config={"settings": asdict(settings), "data": ray.put(data), "threads": threads,
                           "submitted_at": submitted_at, "run_dir": str(Path(storage_path).resolve() / name)},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu, resources_per_worker={"CPU": 1}),
        torch_config=TorchBackendConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(
            name=name, storage_path=str(Path(storage_path).resolve()),
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
            callbacks=[ProgressRelay(relay_path), *callbacks],
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
