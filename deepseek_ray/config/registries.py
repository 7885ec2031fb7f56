"""Every registry the experiment file's allowed values come from, with the modules that fill each one.

The schema reads these (field checks, JSON Schema enums, error messages); the implementing module registers
each value where it implements it, so a value is added in one place.

>>> 'image' in KINDS
True
>>> 'tpe' in STRATEGIES, METRICS['val_accuracy'].mode
(True, 'max')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .registry import Registry

#: Kinds of data (``data.kind``): one :class:`deepseek_ray.data.DataKind` subclass each.
KINDS: Registry = Registry(
    "data.kind", providers=tuple(f"deepseek_ray.data.{kind}" for kind in ("image", "tabular", "text", "timeseries"))
)


@dataclass(frozen=True)
class Metric:
    """A metric that training and the search trials report: which way is better, and which tasks report it.

    >>> Metric('max', ('classification',)).reported_for('regression')
    False
    """

    mode: Literal["max", "min"]
    tasks: tuple[str, ...] = ()  # empty: every task
    by_training: bool = True  # the final training reports it too (not only the search's trials)

    def reported_for(self, task: str) -> bool:
        """Whether trials of ``task`` (``classification``, ``regression``) report this metric."""
        return not self.tasks or task in self.tasks


#: Searchers (``search.strategy.type``): one ``Strategy`` each, registered in :mod:`deepseek_ray.hpo.strategies`.
STRATEGIES: Registry = Registry("search.strategy.type", providers=("deepseek_ray.hpo.strategies",))
#: What training and each search trial report (``search.metric``): a :class:`Metric` each, registered beside the
#: code that reports it (the trainer's epoch metrics; a trial's ``latency_ms`` and ``params``).
METRICS: Registry[Metric] = Registry(
    "search.metric", providers=("deepseek_ray.optim.trainer", "deepseek_ray.hpo.runner")
)
#: Tokenizers trained on the training split (``data.text.tokenizer``; any other value is a folder or hub name).
TRAINED_TOKENIZERS: Registry = Registry("data.text.tokenizer", providers=("deepseek_ray.data.text",))
#: Bin strategies of a tabular column (``data.tabular.bins.<column>: {<strategy>: n}``): edges from values.
BIN_STRATEGIES: Registry = Registry("data.tabular.bins", providers=("deepseek_ray.data.tabular",))
#: Optimizers (``train.optimizer.type``): a ``torch.optim.Optimizer`` class each.
OPTIMIZERS: Registry = Registry("train.optimizer.type", providers=("deepseek_ray.optim.trainer",))
#: Learning-rate schedules after the warmup (``train.scheduler.type``).
LR_SCHEDULES: Registry = Registry("train.scheduler.type", providers=("deepseek_ray.optim.trainer",))
#: ``torch.compile`` modes (``train.compile``, besides ``true``/``false``).
COMPILE_MODES: Registry = Registry("train.compile", providers=("deepseek_ray.optim.trainer",))
#: Export formats (``export.formats``).
EXPORT_FORMATS: Registry = Registry("export.formats", providers=("deepseek_ray.export.exporter",))
#: Activation calibration of ``int8_static`` (``export.quantize[].calibration_method``).
CALIBRATION_METHODS: Registry = Registry(
    "export.quantize.calibration_method", providers=("deepseek_ray.quantization.ptq",)
)
#: What ``int8_static`` quantizes (``export.quantize[].recipe``).
QUANTIZE_RECIPES: Registry = Registry("export.quantize.recipe", providers=("deepseek_ray.quantization.ptq",))
