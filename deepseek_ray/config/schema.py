"""The experiment file, one pydantic class per pipeline stage.

The tree mirrors the runtime tree (Ludwig's rule): ``data`` feeds ``search``, which feeds ``train``,
``export`` and ``serve``; ``tracking`` watches them all. Where a section picks an implementation,
``type:`` names it, and the union of classes below is the list of what is allowed.
Every model forbids unknown keys, so a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h)?\s*$")


def parse_duration(value: str | float | int | None) -> float | None:
    """Seconds in ``value``: a number, or a string such as ``'90s'``, ``'5m'``, ``'1.5h'``.

    >>> parse_duration('5m'), parse_duration(30), parse_duration(None)
    (300.0, 30.0, None)
    """
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration; use seconds or a string like '90s', '5m', '1h'")
    number, unit = match.groups()
    return float(number) * {"s": 1, "m": 60, "h": 3600, None: 1}[unit]


# ----------------------------------------------------------------------------------------- data
class SplitConfig(Section):
    """Fractions of the dataset for each split; they must add up to 1."""

    train: float = Field(0.8, gt=0, lt=1)
    val: float = Field(0.1, gt=0, lt=1)
    test: float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> "SplitConfig":
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must add up to 1, got {total:g}")
        return self


class MixupConfig(Section):
    """MixUp (Zhang et al. 2018): convex combinations of image pairs and their labels."""

    type: Literal["mixup"]
    alpha: float = Field(0.2, gt=0)


class CutmixConfig(Section):
    """CutMix (Yun et al. 2019): a box of one image pasted into another, labels mixed by area."""

    type: Literal["cutmix"]
    alpha: float = Field(1.0, gt=0)


class RandomShiftConfig(Section):
    """Random translation by up to ``pixels`` in each direction (zero padded)."""

    type: Literal["random_shift"]
    pixels: int = Field(2, ge=1, le=8)


AugmentConfig = Annotated[Union[MixupConfig, CutmixConfig, RandomShiftConfig], Field(discriminator="type")]


class DataConfig(Section):
    """Where the examples come from and how they are split."""

    dataset: str = Field("mnist5k", description="A registry name (see `deepseek-ray datasets`) or a csv/parquet/jsonl file.")
    label: str | None = Field(None, description="The label column, for a file dataset.")
    split: SplitConfig = SplitConfig()
    augment: list[AugmentConfig] = Field(default_factory=list, description="Training-split augmentation, applied per batch.")
    limit: int | None = Field(None, ge=10, description="Use only the first N examples (after shuffling): for smoke tests.")


# ---------------------------------------------------------------------------------------- search
STRATEGIES = ("random", "tpe", "gp", "cmaes", "nsga2")


class StrategyConfig(Section):
    """What to try next: the searcher. Each name is one of Optuna's samplers."""

    type: Literal["random", "tpe", "gp", "cmaes", "nsga2"] = "tpe"
    n_startup_trials: int = Field(4, ge=0, description="Random trials before a model-based sampler takes over.")


class FifoSchedulerConfig(Section):
    """Run every trial to the end."""

    type: Literal["fifo"]
    max_t: int = Field(4, ge=1, description="Epochs of every trial.")


class AshaSchedulerConfig(Section):
    """Asynchronous successive halving: stop the weaker trials early."""

    type: Literal["asha"]
    grace_period: int = Field(1, ge=1, description="Epochs every trial runs before it may be stopped.")
    max_t: int = Field(4, ge=1, description="Epochs of the longest trial.")
    reduction_factor: float = Field(2.0, gt=1)


class HyperbandSchedulerConfig(Section):
    """HyperBand with brackets of successive halving."""

    type: Literal["hyperband"]
    max_t: int = Field(4, ge=1)
    reduction_factor: float = Field(3.0, gt=1)


SchedulerConfig = Annotated[
    Union[FifoSchedulerConfig, AshaSchedulerConfig, HyperbandSchedulerConfig], Field(discriminator="type")
]


class BudgetConfig(Section):
    """The search stops at whichever limit comes first."""

    trials: int = Field(12, ge=1, description="Number of trials.")
    time: float | None = Field(None, description="Wall-clock limit: seconds or '90s' / '5m' / '1h'.")
    epochs: int | None = Field(None, ge=1, description="Total training epochs over all trials.")

    @field_validator("time", mode="before")
    @classmethod
    def _parse_time(cls, value: str | float | None) -> float | None:
        return parse_duration(value)


class SearchConfig(Section):
    """Ray Tune over a search-space file: a searcher (``strategy``) and a scheduler."""

    space: Path = Field(Path("search_spaces/mnist_cnn.yaml"), description="Search-space YAML, relative to the experiment file.")
    strategy: StrategyConfig = StrategyConfig()
    scheduler: SchedulerConfig = AshaSchedulerConfig(type="asha")
    budget: BudgetConfig = BudgetConfig()
    metric: str = "val_accuracy"
    mode: Literal["max", "min"] = "max"
    concurrency: int = Field(2, ge=1, description="Trials running at once.")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_failures: int = Field(1, ge=0, description="Retries of a trial that raised.")
    batch_size: int = Field(64, ge=1, description="Mini-batch size inside a trial.")


# ----------------------------------------------------------------------------------------- train
class OptimizerConfig(Section):
    """The optimizer; ``lr`` comes from the search unless given here."""

    type: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(0.01, ge=0)


class LrSchedulerConfig(Section):
    """Learning-rate schedule after a linear warmup."""

    type: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = Field(0, ge=0)


class TrainConfig(Section):
    """The final training run: Ray Train ``TorchTrainer`` over ``workers`` processes."""

    epochs: int = Field(10, ge=1)
    workers: int = Field(2, ge=1)
    use_gpu: bool = False
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    compile: bool = False
    per_device_train_batch_size: int = Field(64, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: LrSchedulerConfig = LrSchedulerConfig()
    gradient_accumulation: int = Field(1, ge=1)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    early_stopping_patience: int | None = Field(3, ge=1, description="Epochs without a better val metric before stopping.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint.")
    baseline: bool = Field(True, description="Also train a plain 2-conv CNN with the same recipe, for comparison.")


# ---------------------------------------------------------------------------------------- export
class ExportConfig(Section):
    """Export of the trained model, checked against torch on the test split."""

    formats: list[Literal["onnx"]] = Field(default_factory=lambda: ["onnx"])
    opset: int = Field(18, ge=13, le=23)
    optimize_level: int = Field(9, ge=0, le=9, description="0 = no graph optimisation, 9 = everything ONNX Runtime offers.")
    parity_tolerance: float = Field(1e-4, gt=0, description="Max |Δ probability| allowed between torch and ONNX Runtime.")


# ----------------------------------------------------------------------------------------- serve
class BatchingConfig(Section):
    """Request batching in each replica."""

    min_batch: int = Field(1, ge=1)
    max_batch: int = Field(32, ge=1)
    latency_threshold_ms: float = Field(100.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "BatchingConfig":
        if self.min_batch > self.max_batch:
            raise ValueError(f"min_batch ({self.min_batch}) must not exceed max_batch ({self.max_batch})")
        return self


class AutoscalingConfig(Section):
    """Replica count bounds for Serve's autoscaler."""

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(16.0, gt=0)


class ServeConfig(Section):
    """The HTTP endpoint (Ray Serve) over the exported model."""

    route: str = Field("/predict", pattern=r"^/[A-Za-z0-9_\-/]*$")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    batching: BatchingConfig = BatchingConfig()
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    num_cpus: float = Field(0.5, gt=0, description="CPUs reserved per replica.")


# -------------------------------------------------------------------------------------- tracking
class TrackingConfig(Section):
    """MLflow tracking; ``config`` points at an ``mlflow_config.yaml`` whose keys override these."""

    enabled: bool = True
    config: Path | None = Field(None, description="mlflow_config.yaml, relative to the experiment file.")
    experiment_name: str | None = None
    tracking_uri: str = "sqlite:///mlflow.db"
    artifacts_location: str | None = None
    registered_model_name: str | None = Field(None, description="Defaults to the experiment name.")


class MlflowFileConfig(Section):
    """The promised ``mlflow_config.yaml``."""

    experiment_name: str | None = None
    tracking_uri: str | None = None
    artifacts_location: str | None = None
    registered_model_name: str | None = None


# ------------------------------------------------------------------------------------------ root
class ExperimentConfig(Section):
    """One experiment file: every stage of the pipeline.

    >>> cfg = ExperimentConfig(name='demo', data={'dataset': 'digits'}, train={'epochs': 2})
    >>> cfg.train.epochs, cfg.search.strategy.type
    (2, 'tpe')
    """

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", description="Names the Ray job, Tune experiment, Serve app and MLflow experiment.")
    seed: int = Field(0, ge=0)
    output_dir: Path = Field(Path("runs"), description="Where artifacts go (relative to the working directory).")
    data: DataConfig
    search: SearchConfig = SearchConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    serve: ServeConfig = ServeConfig()
    tracking: TrackingConfig = TrackingConfig()

    @property
    def run_dir(self) -> Path:
        """The folder holding this experiment's artifacts: ``output_dir/name``."""
        return self.output_dir / self.name
