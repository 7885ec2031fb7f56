"""Failure drills for tests: callbacks that make a run fail on purpose, the way a real fault would.

Nothing in production builds these; a test hands them to ``MixedPrecisionTrainer(callbacks=...)`` or
``deepseek_ray.train.train(..., callbacks=...)``, which pickles them to every worker. They are plain
callbacks (:class:`~deepseek_ray.optim.callbacks.Callback`), so each new drill is one more class, never a setting.

>>> import torch
>>> from deepseek_ray.data import ArrayDataset
>>> from deepseek_ray.optim import MixedPrecisionTrainer
>>> data = ArrayDataset(torch.randn(8, 2), torch.randint(0, 2, (8,)))
>>> trainer = MixedPrecisionTrainer(torch.nn.Linear(2, 2), callbacks=[FailOnce(after_epoch=1)])
>>> trainer.fit(data, epochs=2)
Traceback (most recent call last):
...
RuntimeError: failure drill: stops after epoch 1
>>> len(trainer.fit(data, epochs=2))  # resumed past epoch 1: the drill is spent
1
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.distributed as dist

from .callbacks import Callback, Metrics

if TYPE_CHECKING:
    from .trainer import MixedPrecisionTrainer


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class FailOnce(Callback):
    """Raise ``RuntimeError`` at the end of epoch ``after_epoch`` on every rank, unless the fit started past it.

    Under Ray Train it runs after the report, so the epoch's checkpoint exists; the restarted worker group
    resumes from it, past ``after_epoch``, and the drill stays quiet.
    """

    def __init__(self, after_epoch: int):
        self.after_epoch = after_epoch
        self._armed = False

    def on_fit_start(self, trainer: MixedPrecisionTrainer) -> None:
        self._armed = trainer.epoch < self.after_epoch

    def on_epoch_end(self, trainer: MixedPrecisionTrainer, epoch: int, metrics: Metrics) -> None:
        if self._armed and epoch == self.after_epoch:
            self._armed = False
            raise RuntimeError(f"failure drill: stops after epoch {epoch}")


class InjectOOM(Callback):
    """Make rank ``rank``'s network raise an out-of-memory error at optimizer step ``step``, as a real CUDA OOM would.

    ``"forward"``: once, inside the wrapped module (after DDP's pre-forward collectives). ``"backward"``: at
    the end of the network's backward, every time it runs at the configured micro-batch size — under DDP, in
    the syncing backward with the all-reduces in flight: the one place the trainer cannot redo. A restart that
    starts at a smaller micro-batch passes.

    >>> from deepseek_ray.optim import MixedPrecisionTrainer
    >>> trainer = MixedPrecisionTrainer(torch.nn.Linear(2, 2))
    >>> InjectOOM(rank=0, step=0).on_fit_start(trainer)
    >>> try:
    ...     trainer.model(torch.zeros(1, 2))
    ... except torch.OutOfMemoryError as err:
    ...     print(err)
    injected out of memory at step 0
    >>> trainer.model(torch.zeros(1, 2)).shape  # only once
    torch.Size([1, 2])
    """

    def __init__(self, rank: int, step: int, where: Literal["forward", "backward"] = "forward"):
        if where not in ("forward", "backward"):
            raise ValueError(f"where: unknown {where!r}; allowed: forward, backward")
        self.rank, self.step, self.where = rank, step, where
        self._attached = False

    def on_fit_start(self, trainer: MixedPrecisionTrainer) -> None:
        if self._attached or _rank() != self.rank:
            return
        self._attached = True
        if self.where == "forward":
            trainer.network.register_forward_pre_hook(self._forward_hook(trainer))
        else:
            trainer.network.register_full_backward_hook(self._backward_hook(trainer))

    def _forward_hook(self, trainer: MixedPrecisionTrainer) -> Any:
        fired: list[bool] = []

        def before_forward(module: torch.nn.Module, inputs: Any) -> None:
            if module.training and trainer.step == self.step and not fired:  # a training forward, not evaluation
                fired.append(True)
                raise torch.OutOfMemoryError(f"injected out of memory at step {self.step}")

        return before_forward

    def _backward_hook(self, trainer: MixedPrecisionTrainer) -> Any:
        def after_backward(module: torch.nn.Module, grad_input: Any, grad_output: Any) -> None:
            if trainer.step == self.step and trainer.batch_size == trainer.per_device_train_batch_size:
                raise torch.OutOfMemoryError(f"injected out of memory in the backward of step {self.step}")

        return after_backward
