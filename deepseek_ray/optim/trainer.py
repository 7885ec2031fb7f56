"""What one worker does per step: mixed precision, gradient accumulation, clipping, warmup and schedules.

The same :class:`MixedPrecisionTrainer` runs a search trial (one process), and each rank of a
Ray Train run (the model then arrives wrapped in DistributedDataParallel). It imports nothing from
Ray or MLflow, so it runs anywhere torch does. What a run does around the step (best weights, early
stopping, timing, checkpoints, failure drills) comes in as callbacks
(:class:`~deepseek_ray.optim.callbacks.Callback`).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Sequence, Sized
from typing import TYPE_CHECKING, Any, cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import BatchSampler, DataLoader, Dataset, DistributedSampler, SequentialSampler
from torch.utils.data.dataloader import default_collate

from ..config.registries import COMPILE_MODES as _COMPILE_MODES
from ..config.registries import LR_SCHEDULES, METRICS, OPTIMIZERS, Metric
from .callbacks import Callback, EpochFunction

if TYPE_CHECKING:
    from ..config import TrainConfig

EpochCallback = Callable[[int, dict[str, float]], bool | None]
BatchTransform = Callable[[torch.Tensor, torch.Tensor, torch.Generator], tuple[torch.Tensor, torch.Tensor]]

_OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
SCHEDULES = ("cosine", "linear", "constant")
TASKS = ("classification", "regression")
# The experiment file's lists (train.optimizer.type, train.scheduler.type) are these, registered here.
for _name, _optimizer in _OPTIMIZERS.items():
    OPTIMIZERS.register(_name)(_optimizer)
for _name in SCHEDULES:
    LR_SCHEDULES.register(_name)(_name)
# What fit() and every search trial report per epoch (evaluate()'s keys with "val_"), and which way is better:
# the list search.metric is checked against.
METRICS.register("val_loss")(Metric("min"))
METRICS.register("val_accuracy")(Metric("max", ("classification",)))
METRICS.register("val_mae")(Metric("min", ("regression",)))
METRICS.register("train_loss")(Metric("min"))


def lr_factor(step: int, warmup_steps: int, total_steps: int, schedule: str) -> float:
    """The learning-rate multiplier at ``step``: linear warmup, then cosine/linear decay or constant.

    The trainer's ``torch.optim.lr_scheduler.LambdaLR`` applies it (the way transformers' schedules do).

    >>> [round(lr_factor(s, 2, 10, 'linear'), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class MixedPrecisionTrainer:
    """Train a classifier with AMP (fp16 + GradScaler, or bf16), accumulation, clipping and warmup.

    >>> from deepseek_ray.data import ArrayDataset
    >>> data = ArrayDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    >>> trainer = MixedPrecisionTrainer(model=nn.Linear(4, 2), optimizer='adamw', lr=5e-2,
    ...                                 per_device_train_batch_size=16, warmup_steps=2)
    >>> trainer.set_gradient_accumulation(steps=2)
    >>> history = trainer.fit(data, data, epochs=2)
    >>> sorted(history[-1])
    ['epoch', 'lr', 'train_loss', 'val_accuracy', 'val_loss']

    ``fp16=True`` on a CPU falls back to fp32 with one warning (CPU autocast has no fast fp16).
    ``compile=True`` runs the forward through ``torch.compile``; a string picks its mode
    (``'max-autotune-no-cudagraphs'``, ``'max-autotune'``, ``'reduce-overhead'``).
    On out-of-memory it halves the micro-batch and doubles the accumulation (same effective batch, same
    step), nothing exchanged between ranks per step; ``oom_recovery=False`` lets the error propagate.
    ``callbacks`` (:class:`~deepseek_ray.optim.callbacks.Callback`) run in list order at each hook;
    :meth:`from_config` builds the trainer from the experiment file's ``train`` section.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: str | torch.optim.Optimizer = "adamw",
        lr: float = 1e-3,
        *,
        weight_decay: float = 0.01,
        fp16: bool = False,
        bf16: bool = False,
        clip_grad_norm: float | None = None,
        warmup_steps: int = 0,
        scheduler: str = "constant",
        per_device_train_batch_size: int = 64,
        gradient_accumulation_steps: int = 1,
        compile: bool | str = False,
        device: str | torch.device | None = None,
        batch_transform: BatchTransform | None = None,
        seed: int = 0,
        task: str = "classification",
        oom_recovery: bool = True,
        callbacks: Sequence[Callback] = (),
    ):
        if fp16 and bf16:
            raise ValueError("choose one of fp16 and bf16")
        if task not in TASKS:
            raise ValueError(f"task: unknown {task!r}; allowed: {', '.join(TASKS)}")
        if scheduler not in SCHEDULES:
            raise ValueError(f"scheduler: unknown {scheduler!r}; allowed: {', '.join(SCHEDULES)}")
        self.device = torch.device(device) if device else _default_device(model)
        self.model = model.to(self.device)
        self.amp_dtype = self._pick_amp_dtype(fp16, bf16)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)
        self.optimizer = self._make_optimizer(optimizer, lr, weight_decay)
        self.clip_grad_norm = clip_grad_norm
        self.warmup_steps = warmup_steps
        self.schedule = scheduler
        self.total_steps = 0  # what the schedule decays over: set by fit(), or by a caller of train_epoch()
        # Stepped once per optimizer step; its state is part of state_dict().
        self.lr_scheduler = LambdaLR(self.optimizer, self._lr_factor)
        self.last_lr = self.optimizer.param_groups[0]["lr"]  # what the latest optimizer step used
        self.per_device_train_batch_size = per_device_train_batch_size  # as configured; batch_size may back off
        self.batch_size = per_device_train_batch_size
        self.accumulation = 1
        self.set_gradient_accumulation(gradient_accumulation_steps)
        self.forward = _compiled(self.model, compile)
        self.batch_transform = batch_transform
        self.seed = seed
        self.task = task
        self.step = 0  # optimizer steps taken
        self.epoch = 0  # epochs completed
        self.last_grad_norm: torch.Tensor | None = None
        self.oom_recovery = oom_recovery
        self.oom_events = 0
        self.callbacks = list(callbacks)
        self.should_stop = False  # a callback sets it to end fit() after the current epoch

    @classmethod
    def from_config(
        cls,
        config: TrainConfig,
        model: nn.Module,
        *,
        device: str | torch.device | None = None,
        batch_transform: BatchTransform | None = None,
        seed: int = 0,
        task: str = "classification",
        callbacks: Sequence[Callback] = (),
    ) -> MixedPrecisionTrainer:
        """The trainer the experiment file's ``train`` section describes (its ``optimizer.lr`` must be set:
        merge the searched one in with ``config.model_copy(update=...)``).

        Early stopping, workers and retries are the run's business, not the step's: see ``deepseek_ray.train``.

        >>> from deepseek_ray.config import TrainConfig
        >>> config = TrainConfig(optimizer={'lr': 3e-4}, scheduler={'type': 'linear', 'warmup_steps': 10})
        >>> trainer = MixedPrecisionTrainer.from_config(config, nn.Linear(2, 2))
        >>> trainer.schedule, trainer.warmup_steps, trainer.batch_size
        ('linear', 10, 64)
        """
        return cls(
            model,
            config.optimizer.type,
            required_lr(config),
            weight_decay=config.optimizer.weight_decay,
            fp16=config.precision == "fp16",
            bf16=config.precision == "bf16",
            clip_grad_norm=config.clip_grad_norm,
            warmup_steps=config.scheduler.warmup_steps,
            scheduler=config.scheduler.type,
            per_device_train_batch_size=config.per_device_train_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation,
            compile=config.compile,
            device=device,
            batch_transform=batch_transform,
            seed=seed,
            task=task,
            callbacks=callbacks,
        )

    # ------------------------------------------------------------------------------ set-up
    def _pick_amp_dtype(self, fp16: bool, bf16: bool) -> torch.dtype | None:
        if self.device.type == "cpu" and fp16:
            warnings.warn("fp16 requested on a CPU: training in fp32 instead (use bf16 for CPU autocast)", stacklevel=3)
            return None
        return torch.float16 if fp16 else torch.bfloat16 if bf16 else None

    def _make_optimizer(
        self, optimizer: str | torch.optim.Optimizer, lr: float, weight_decay: float
    ) -> torch.optim.Optimizer:
        if isinstance(optimizer, torch.optim.Optimizer):
            return optimizer
        if optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer: unknown {optimizer!r}; allowed: {', '.join(_OPTIMIZERS)}")
        kwargs: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}
        if optimizer == "sgd":
            kwargs["momentum"] = 0.9
        elif self.device.type == "cuda":
            kwargs["fused"] = True  # one kernel for the whole Adam update instead of one per tensor
        return _OPTIMIZERS[optimizer](self.model.parameters(), **kwargs)

    def set_gradient_accumulation(self, steps: int) -> None:
        """Accumulate gradients over ``steps`` micro-batches per optimizer step."""
        if steps < 1:
            raise ValueError(f"gradient accumulation steps must be ≥ 1, got {steps}")
        self.accumulation = steps

    # ------------------------------------------------------------------------------- data
    def eval_loader(self, data: Dataset | DataLoader) -> DataLoader:
        """Batches of this rank's evaluation shard (training order lives in :meth:`_epoch_order`)."""
        if isinstance(data, DataLoader):
            return data
        rank, world = _world()
        batches = BatchSampler(_Shard(_length(data), rank, world), self.batch_size, drop_last=False)
        collate = (lambda batch: batch) if hasattr(data, "__getitems__") else None
        return DataLoader(data, batch_sampler=batches, collate_fn=collate)

    def steps_per_epoch(self, data: Dataset | DataLoader) -> int:
        """Optimizer steps in one epoch on this rank (what the LR schedule counts)."""
        if isinstance(data, DataLoader):
            return math.ceil(len(data) / self.accumulation)
        world = _world()[1]
        shard = _length(data) // world if world > 1 else _length(data)
        return math.ceil(shard / (self.batch_size * self.accumulation))

    # ----------------------------------------------------------------------------- training
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _lr_factor(self, step: int) -> float:
        # Reads total_steps when called: fit() sets it after construction.
        return lr_factor(step, self.warmup_steps, self.total_steps, self.schedule)

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        if self.clip_grad_norm is not None:
            # Kept as a tensor: reading it would stall the GPU once per step.
            self.last_grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.last_lr = self.optimizer.param_groups[0]["lr"]
        self.lr_scheduler.step()
        self.step += 1

    def _epoch_order(self, data: Dataset) -> list[int]:
        """This rank's example order for the current epoch: a function of (seed, epoch, rank) only."""
        rank, world = _world()
        if world > 1:
            sampler: DistributedSampler[int] = DistributedSampler(
                data, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=True
            )
            sampler.set_epoch(self.epoch)
            return list(sampler)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(_length(data), generator=generator).tolist()

    def train_epoch(self, data: Dataset | DataLoader) -> float:
        """One pass over ``data``; returns the mean training loss (this rank's).

        Each optimizer step consumes a window of ``per_device_train_batch_size × accumulation`` examples.
        On CUDA out-of-memory the window is redone with half the micro-batch and twice the accumulation,
        so the effective batch and the step count stay the same. Under DDP the rank that ran out backs off
        at once on its own; at the end of the epoch every rank adopts the smallest micro-batch (an
        all-reduced minimum), so all ranks — and the checkpoint — hold the same decision.
        """
        if isinstance(data, DataLoader):
            return self._train_epoch_from_loader(data)
        self.model.train()
        rank, _ = _world()
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch * 131 + rank)
        order = self._epoch_order(data)
        loss_sum, count, start = torch.zeros((), device=self.device), 0, 0
        while start < len(order):
            window = order[start : start + self.batch_size * self.accumulation]
            state = generator.get_state()
            done = self._train_window(data, window, generator)
            if done is None:  # out of memory somewhere: redo the same examples in smaller micro-batches
                generator.set_state(state)
                self.back_off()
                continue
            loss_sum += done
            count += len(window)
            start += len(window)
        self._agree_on_micro_batch()
        self.epoch += 1
        mean = float(loss_sum) / max(count, 1)  # one device→host sync per epoch
        if not math.isfinite(mean):
            raise FloatingPointError(f"loss became {mean} in epoch {self.epoch}, step {self.step}")
        return mean

    def _train_window(self, data: Dataset, window: list[int], generator: torch.Generator) -> torch.Tensor | None:
        """Forward/backward over one accumulation window, then one optimizer step.

        Returns the window's summed loss, or None when this rank ran out of memory: its gradients are
        dropped and the caller redoes the window in smaller micro-batches. The other ranks need not know
        (nothing is exchanged per step): under DDP only the window's last backward communicates, this rank
        launches it exactly once — after the redo — and the others wait for it there, so the gradients and
        the collectives come out as without the error. An OOM inside that last backward, its all-reduces in
        flight, cannot be redone: it propagates (``deepseek_ray.train`` then ends the worker and has Ray Train
        restart the group from the last checkpoint at half the micro-batch).
        """
        distributed = _world()[1] > 1
        slices = [window[i : i + self.batch_size] for i in range(0, len(window), self.batch_size)]
        total = torch.zeros((), device=self.device)
        for index, chunk in enumerate(slices):
            last = index == len(slices) - 1
            weight = len(chunk) / len(window)  # exact mean over the window, even for uneven micro-batches
            communicates = last and distributed  # DDP's all-reduces: once launched, they cannot be taken back
            try:
                loss = self._micro_loss(data, chunk, index, generator, sync=last)
                if not communicates:
                    self._backward(loss, weight, sync=last)
            except torch.OutOfMemoryError:
                if not self.oom_recovery:
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                self._skip_buffer_broadcast()
                return None
            if communicates:
                self._backward(loss, weight, sync=True)
            total += loss.detach().float() * len(chunk)
        self._optimizer_step()
        return total

    def _micro_loss(
        self, data: Dataset, chunk: list[int], index: int, generator: torch.Generator, sync: bool
    ) -> torch.Tensor:
        for callback in self.callbacks:
            callback.on_micro_batch_start(self, self.step, index)
        x, y = _fetch(data, chunk)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        if self.batch_transform is not None:
            x, y = self.batch_transform(x, y, generator)
        with self._no_sync(not sync), self._autocast():
            return self.loss(self.forward(x), y)

    def _backward(self, loss: torch.Tensor, weight: float, sync: bool) -> None:
        with self._no_sync(not sync):
            self.scaler.scale(loss * weight).backward()

    def _skip_buffer_broadcast(self) -> None:
        """Before redoing a window after an out-of-memory error under DDP: its first forward must not broadcast.

        DDP broadcasts module buffers (BatchNorm statistics) from rank 0 at the start of a window's first
        forward, before the module runs, and re-arms that only when a syncing forward completes. This window
        has broadcast already (or was not due to), so a second broadcast would meet the other ranks' gradient
        all-reduce instead.
        """
        if hasattr(self.model, "require_forward_param_sync"):
            setattr(self.model, "require_forward_param_sync", False)  # noqa: B010 (a DDP attribute torch types as Tensor)

    def _free_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _agree_on_micro_batch(self) -> None:
        """Under DDP: every rank takes the smallest micro-batch any rank backed off to (once per epoch)."""
        if _world()[1] == 1 or not self.oom_recovery:
            return
        smallest = torch.tensor([self.batch_size], device=self.device)  # NCCL reduces CUDA tensors only
        dist.all_reduce(smallest, op=dist.ReduceOp.MIN)
        while self.batch_size > int(smallest):  # every rank started from the same size and only ever halved
            self._halve_micro_batch()

    def back_off(self) -> None:
        """Halve the micro-batch and double the accumulation: the effective batch stays the same.

        >>> trainer = MixedPrecisionTrainer(nn.Linear(2, 2), per_device_train_batch_size=16)
        >>> trainer.back_off()
        >>> trainer.batch_size, trainer.accumulation
        (8, 2)
        """
        if self.batch_size == 1:
            raise torch.OutOfMemoryError("out of memory with a micro-batch of 1: the model does not fit")
        self._free_cache()
        self._halve_micro_batch()
        self.oom_events += 1
        warnings.warn(
            f"out of memory: micro-batch now {self.batch_size}, accumulation {self.accumulation} "
            f"(effective batch unchanged)",
            stacklevel=3,
        )

    def _halve_micro_batch(self) -> None:
        self.batch_size //= 2
        self.accumulation *= 2

    def _train_epoch_from_loader(self, loader: DataLoader) -> float:
        """A user's DataLoader: its batches are the micro-batches (no OOM re-splitting possible)."""
        self.model.train()
        generator = torch.Generator().manual_seed(self.seed * 7919 + self.epoch * 131 + _world()[0])
        total, count = torch.zeros((), device=self.device), 0
        for index, (x, y) in enumerate(loader):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.batch_transform is not None:
                x, y = self.batch_transform(x, y, generator)
            boundary = (index + 1) % self.accumulation == 0 or index + 1 == len(loader)
            with self._no_sync(not boundary), self._autocast():
                loss = self.loss(self.forward(x), y)
            with self._no_sync(not boundary):
                self.scaler.scale(loss / self.accumulation).backward()
            if boundary:
                self._optimizer_step()
            total, count = total + loss.detach().float() * len(x), count + len(x)
        self.epoch += 1
        return float(total) / max(count, 1)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy (hard or soft labels) for classification, mean squared error for regression."""
        if self.task == "regression":
            return F.mse_loss(output.float(), target.float().view_as(output))
        return F.cross_entropy(output, target)

    def _no_sync(self, skip_sync: bool) -> contextlib.AbstractContextManager:
        # Under DDP, all-reduce only on the micro-batch that ends an accumulation window.
        if skip_sync and hasattr(self.model, "no_sync"):
            return cast(Any, self.model).no_sync()
        return contextlib.nullcontext()

    @torch.no_grad()
    def evaluate(self, data: Dataset | DataLoader) -> dict[str, float]:
        """Loss plus accuracy (classification) or MAE (regression), summed across ranks when distributed."""
        self.model.eval()
        # loss sum, correct count or absolute-error sum: summed on the device (no host sync per batch)
        sums, count = torch.zeros(2, dtype=torch.float64, device=self.device), 0
        for x, y in self.eval_loader(data):
            x, y = x.to(self.device), y.to(self.device)
            with self._autocast():
                output = self.forward(x).float()
            if self.task == "regression":
                target = y.float().view_as(output)
                quality = (output - target).abs().sum() / output[0].numel()
                loss = F.mse_loss(output, target, reduction="sum") / output[0].numel()
            else:
                quality = (output.argmax(1) == y).sum()
                loss = F.cross_entropy(output, y, reduction="sum")
            sums += torch.stack([loss.double(), quality.double()])
            count += len(y)
        totals = torch.cat([sums, sums.new_tensor([count])])  # on the trainer's device: NCCL reduces CUDA tensors
        if _world()[1] > 1:
            dist.all_reduce(totals)
        loss_sum, quality_sum, count = totals.tolist()
        count = max(count, 1)
        return {"loss": loss_sum / count, "mae" if self.task == "regression" else "accuracy": quality_sum / count}

    def fit(
        self,
        train_data: Dataset | DataLoader,
        val_data: Dataset | DataLoader | None = None,
        epochs: int = 1,
        on_epoch_end: EpochCallback | None = None,
    ) -> list[dict[str, Any]]:
        """Train until epoch ``epochs`` (continuing from :attr:`epoch`) or until a callback sets :attr:`should_stop`.

        Each epoch's metrics: ``epoch``, ``train_loss`` (the mean over ranks), ``val_*`` (with ``val_data``),
        ``lr`` (of the epoch's last step), plus what the callbacks add. ``on_epoch_end(epoch, metrics)``
        returning True stops early: a shorthand for an :class:`~deepseek_ray.optim.callbacks.EpochFunction`.
        """
        callbacks = [*self.callbacks, *([EpochFunction(on_epoch_end)] if on_epoch_end is not None else [])]
        self.total_steps = self.steps_per_epoch(train_data) * epochs
        self._align_schedule()
        self.should_stop = False
        history: list[dict[str, Any]] = []
        try:
            for callback in callbacks:
                callback.on_fit_start(self)
            while self.epoch < epochs and not self.should_stop:
                history.append(self._fit_epoch(train_data, val_data, callbacks))
            for callback in callbacks:
                callback.on_fit_end(self, history)
        except BaseException as error:
            for callback in callbacks:
                callback.on_exception(self, error)
            raise
        return history

    def _fit_epoch(
        self, train_data: Dataset | DataLoader, val_data: Dataset | DataLoader | None, callbacks: list[Callback]
    ) -> dict[str, Any]:
        for callback in callbacks:
            callback.on_epoch_start(self, self.epoch + 1)
        train_loss = self._mean_over_ranks(self.train_epoch(train_data))  # counts the epoch
        metrics: dict[str, Any] = {"epoch": self.epoch, "train_loss": train_loss}
        if val_data is not None:
            metrics.update({f"val_{k}": v for k, v in self.evaluate(val_data).items()})
        metrics["lr"] = self.last_lr
        for callback in callbacks:
            callback.on_epoch_end(self, self.epoch, metrics)
        return metrics

    def _mean_over_ranks(self, value: float) -> float:
        """Under DDP, the mean of ``value`` over the ranks (one all-reduce per epoch)."""
        world = _world()[1]
        if world == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)  # NCCL reduces only CUDA tensors
        dist.all_reduce(tensor)
        return float(tensor) / world

    # --------------------------------------------------------------------------- checkpoints
    @property
    def network(self) -> nn.Module:
        """The model itself, unwrapped from DistributedDataParallel."""
        return cast(nn.Module, self.model.module) if hasattr(self.model, "module") else self.model

    def model_state(self) -> dict[str, torch.Tensor]:
        """The model's weights without DDP's ``module.`` prefix."""
        from ..models.bundle import strip_ddp_prefix

        return strip_ddp_prefix(self.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: weights, optimizer, LR schedule, scaler, counters, RNG, and
        the state of each callback that has a ``state_key``."""
        return {
            "model": self.model_state(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "total_steps": self.total_steps,
            "batch_size": self.batch_size,
            "accumulation": self.accumulation,
            "torch_rng": torch.get_rng_state(),
            "callbacks": {c.state_key: c.state_dict() for c in self.callbacks if c.state_key is not None},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s output, keeping this trainer's own learning rate.

        The schedule's progress comes from ``state``, its peak learning rate stays this trainer's: a search
        continues another trial's state with its own ``lr`` (for a plain resume the two are the same).
        """
        self.network.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.total_steps = state["step"], state["epoch"], state["total_steps"]
        self._align_schedule(state["lr_scheduler"])
        self.batch_size, self.accumulation = state["batch_size"], state["accumulation"]
        torch.set_rng_state(state["torch_rng"])
        saved = state.get("callbacks", {})
        for callback in self.callbacks:
            if callback.state_key in saved:
                callback.load_state_dict(saved[callback.state_key])

    def _align_schedule(self, saved: dict[str, Any] | None = None) -> None:
        """Set the next step's learning rate from the schedule's progress (``saved``, else its own), this
        trainer's peak learning rates and the current :attr:`total_steps` (which fit() may just have changed)."""
        saved = self.lr_scheduler.state_dict() if saved is None else saved
        base = list(self.lr_scheduler.base_lrs)
        lrs = [lr * self._lr_factor(saved["last_epoch"]) for lr in base]
        self.lr_scheduler.load_state_dict({**saved, "base_lrs": base, "_last_lr": lrs})
        # The optimizer's state brought the saved learning rate: replace it with this trainer's.
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            group["lr"] = lr


class _Shard(SequentialSampler):
    """Every ``world``-th index from ``rank``: each example evaluated exactly once across ranks."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = list(range(rank, n, world))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def required_lr(config: TrainConfig) -> float:
    """The recipe's learning rate; an error naming the field where the file gave none and no search merged one in.

    >>> from deepseek_ray.config import TrainConfig
    >>> required_lr(TrainConfig(optimizer={'lr': 3e-4}))
    0.0003
    """
    if config.optimizer.lr is None:
        raise ValueError("train.optimizer.lr is not set: give it in the file or merge the search's choice in")
    return config.optimizer.lr


def _length(data: Dataset) -> int:
    return len(cast(Sized, data))  # every map-style dataset here has a length; torch's type does not say so


def _fetch(data: Dataset, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A micro-batch by index: one slice where the dataset supports it, else item by item."""
    if hasattr(data, "__getitems__"):
        return data.__getitems__(indices)
    return default_collate([data[i] for i in indices])


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
for _mode in COMPILE_MODES:  # train.compile's list
    _COMPILE_MODES.register(_mode)(_mode)


def _compiled(model: nn.Module, compile: bool | str) -> nn.Module | Callable[..., torch.Tensor]:
    """The forward to call: the model itself, or ``torch.compile`` of it in the chosen mode."""
    if compile is False:
        return model
    mode = "default" if compile is True else compile
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile: unknown mode {compile!r}; allowed: True, False, {', '.join(COMPILE_MODES)}")
    return torch.compile(model, mode=mode)


def _default_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    if param is not None and param.device.type != "cpu":
        return param.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
