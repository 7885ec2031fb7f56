"""Hooks into :meth:`MixedPrecisionTrainer.fit`, after PyTorch Lightning's Trainer/Callback split.

The trainer owns the step (precision, accumulation, clipping, schedule, OOM back-off); what a run does
around it — keep the best weights, stop early, time the epochs, report and checkpoint (``deepseek_ray.train``),
drills that make a test fail on purpose (:mod:`deepseek_ray.optim.drills`) — is a :class:`Callback` handed in.

>>> import torch
>>> from deepseek_ray.data import ArrayDataset
>>> from deepseek_ray.optim import MixedPrecisionTrainer
>>> data = ArrayDataset(torch.randn(32, 4), torch.randint(0, 2, (32,)))
>>> best = BestWeights('val_loss', mode='min')
>>> stop = EarlyStopping('val_loss', 'min', patience=2)
>>> trainer = MixedPrecisionTrainer(torch.nn.Linear(4, 2), lr=1e-2, callbacks=[best, stop])
>>> history = trainer.fit(data, data, epochs=3)
>>> best.best == min(m['val_loss'] for m in history), sorted(best.weights)
(True, ['bias', 'weight'])
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from .trainer import MixedPrecisionTrainer

Metrics = dict[str, Any]
MODES = ("max", "min")


class Callback:
    """A hook object for :class:`~deepseek_ray.optim.MixedPrecisionTrainer`; override only what you need.

    The trainer calls every callback's hook in list order. ``on_epoch_end`` may add entries to ``metrics``
    (they reach the history and, under Ray Train, the report) and may set ``trainer.should_stop``. A callback
    with a ``state_key`` has its :meth:`state_dict` saved inside ``trainer.state_dict()`` under that key, so its
    state survives a restart from a checkpoint.

    >>> class Count(Callback):
    ...     epochs = 0
    ...     def on_epoch_end(self, trainer, epoch, metrics):
    ...         self.epochs += 1
    >>> Count().state_key is None
    True
    """

    state_key: str | None = None

    def on_fit_start(self, trainer: MixedPrecisionTrainer) -> None:
        """Once per :meth:`fit`, after any checkpoint was loaded, before the first epoch."""

    def on_epoch_start(self, trainer: MixedPrecisionTrainer, epoch: int) -> None:
        """Before epoch ``epoch`` (counted from 1) trains."""

    def on_micro_batch_start(self, trainer: MixedPrecisionTrainer, step: int, micro_index: int) -> None:
        """Before each micro-batch: ``micro_index`` of the window that ends optimizer step ``step``."""

    def on_epoch_end(self, trainer: MixedPrecisionTrainer, epoch: int, metrics: Metrics) -> None:
        """After epoch ``epoch`` trained and was evaluated; ``metrics`` is that epoch's history entry."""

    def on_fit_end(self, trainer: MixedPrecisionTrainer, history: list[Metrics]) -> None:
        """After the last epoch of :meth:`fit` (or an early stop)."""

    def on_exception(self, trainer: MixedPrecisionTrainer, error: BaseException) -> None:
        """When :meth:`fit` raises; the error propagates afterwards."""

    def state_dict(self) -> dict[str, Any]:
        """What a restart needs to continue (saved only when :attr:`state_key` is set)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output."""


def better(value: float, best: float | None, mode: str) -> bool:
    """Whether ``value`` beats ``best`` (``None``: nothing yet) in ``mode``.

    >>> better(0.5, None, 'max'), better(0.5, 0.4, 'min')
    (True, False)
    """
    return best is None or (value > best if mode == "max" else value < best)


def _checked_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode: unknown {mode!r}; allowed: {', '.join(MODES)}")
    return mode


class BestWeights(Callback):
    """Keep a copy of the model's weights (no DDP prefix) from the epoch with the best ``metric``.

    Adds ``best`` (the best value so far) to each epoch's metrics. See the module's example.
    """

    state_key = "best_weights"

    def __init__(self, metric: str = "val_accuracy", mode: str = "max"):
        self.metric, self.mode = metric, _checked_mode(mode)
        self.best: float | None = None
        self.weights: dict[str, torch.Tensor] | None = None

    def on_epoch_end(self, trainer: MixedPrecisionTrainer, epoch: int, metrics: Metrics) -> None:
        if better(metrics[self.metric], self.best, self.mode):
            self.best = metrics[self.metric]
            self.weights = {k: v.detach().clone() for k, v in trainer.model_state().items()}
        metrics["best"] = self.best

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.weights = state["best"], state["weights"]


class EarlyStopping(Callback):
    """Stop after ``patience`` epochs without a better ``metric``; adds ``stopping`` to each epoch's metrics.

    Its count is part of the trainer's checkpoint: a run restarted after the stop decision trains no further.

    >>> EarlyStopping('val_loss', 'min', patience=2).state_dict()
    {'best': None, 'stale': 0}
    """

    state_key = "early_stopping"

    def __init__(self, metric: str = "val_accuracy", mode: str = "max", patience: int = 3):
        if patience < 1:
            raise ValueError(f"patience must be ≥ 1, got {patience}")
        self.metric, self.mode, self.patience = metric, _checked_mode(mode), patience
        self.best: float | None = None
        self.stale = 0

    def on_fit_start(self, trainer: MixedPrecisionTrainer) -> None:
        trainer.should_stop = trainer.should_stop or self.stale >= self.patience

    def on_epoch_end(self, trainer: MixedPrecisionTrainer, epoch: int, metrics: Metrics) -> None:
        if better(metrics[self.metric], self.best, self.mode):
            self.best, self.stale = metrics[self.metric], 0
        else:
            self.stale += 1
        metrics["stopping"] = self.stale >= self.patience
        trainer.should_stop = trainer.should_stop or metrics["stopping"]

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stale": self.stale}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.stale = state["best"], state["stale"]


class Timing(Callback):
    """Adds ``epoch_time_s`` (train + evaluate) to every epoch, and ``startup_s`` to the first epoch of a fit.

    ``startup_s``: wall-clock seconds from ``submitted_at`` (a ``time.time()``, e.g. when ``train()`` was
    called) to the first step, on the slowest rank. Wall clock, because the driver that set it and the
    workers share it (one machine, or synchronised clocks).

    >>> from deepseek_ray.data import ArrayDataset
    >>> from deepseek_ray.optim import MixedPrecisionTrainer
    >>> trainer = MixedPrecisionTrainer(torch.nn.Linear(4, 2), callbacks=[Timing(submitted_at=time.time())])
    >>> history = trainer.fit(ArrayDataset(torch.randn(8, 4), torch.randint(0, 2, (8,))), epochs=2)
    >>> [sorted(k for k in m if k.endswith('_s')) for m in history]
    [['epoch_time_s', 'startup_s'], ['epoch_time_s']]
    """

    def __init__(self, submitted_at: float | None = None):
        self.submitted_at = submitted_at
        self._epoch_start = 0.0
        self._startup: float | None = None

    def on_epoch_start(self, trainer: MixedPrecisionTrainer, epoch: int) -> None:
        self._epoch_start = time.perf_counter()
        if self.submitted_at is not None:
            self._startup = time.time() - self.submitted_at
            self.submitted_at = None  # only the first epoch of a fit measures start-up

    def on_epoch_end(self, trainer: MixedPrecisionTrainer, epoch: int, metrics: Metrics) -> None:
        metrics["epoch_time_s"] = time.perf_counter() - self._epoch_start
        if self._startup is not None:
            metrics["startup_s"] = _max_over_ranks(self._startup, trainer.device)
            self._startup = None


class EpochFunction(Callback):
    """A plain function ``(epoch, metrics) -> bool | None`` as a callback; True stops the fit.

    >>> EpochFunction(lambda epoch, metrics: None).function(1, {}) is None
    True
    """

    def __init__(self, function: Callable[[int, Metrics], bool | None]):
        self.function = function

    def on_epoch_end(self, trainer: MixedPrecisionTrainer, epoch: int, metrics: Metrics) -> None:
        if self.function(epoch, metrics):
            trainer.should_stop = True


def _max_over_ranks(value: float, device: torch.device) -> float:
    """The largest ``value`` over the ranks (every rank calls this equally often: no collective waits alone)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device)  # NCCL reduces only CUDA tensors
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor)
