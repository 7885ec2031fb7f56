"""The experiment file, one pydantic class per pipeline stage.

The tree mirrors the runtime tree (Ludwig's rule): ``data`` feeds ``search``, which feeds ``train``,
``export`` and ``serve``; ``tracking`` watches them all. Where a section picks an implementation,
``type:`` names it, and the union of classes below is the list of what is allowed.
Every model forbids unknown keys, so a typo is an error, not a silently ignored setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args

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


# Text: the options of deepseek_ray.data.TextPreprocessor, one class per augmentation.
TEXT_AUGMENTATIONS = ("synonym_replacement", "random_swap", "random_deletion", "back_translation")
TRAINED_TOKENIZERS = ("wordpiece", "bpe")


class SynonymReplacementConfig(Section):
    """Replace about a fraction ``p`` of the words with a WordNet synonym (needs WordNet, see the README)."""

    type: Literal["synonym_replacement"]
    p: float | None = Field(None, ge=0, le=1, description="Share of words changed; default data.text.p.")


class RandomSwapConfig(Section):
    """Swap two random words, about ``p``·n times."""

    type: Literal["random_swap"]
    p: float | None = Field(None, ge=0, le=1, description="Share of words changed; default data.text.p.")


class RandomDeletionConfig(Section):
    """Drop each word with probability ``p`` (at least one word stays)."""

    type: Literal["random_deletion"]
    p: float | None = Field(None, ge=0, le=1, description="Share of words changed; default data.text.p.")


class BackTranslationConfig(Section):
    """Translate to a pivot language and back with two MarianMT models (local folders or hub names)."""

    type: Literal["back_translation"]
    forward: str = "Helsinki-NLP/opus-mt-en-de"
    backward: str = "Helsinki-NLP/opus-mt-de-en"
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)


TextAugmentConfig = Annotated[
    Union[SynonymReplacementConfig, RandomSwapConfig, RandomDeletionConfig, BackTranslationConfig],
    Field(discriminator="type"),
]


class TextDataConfig(Section):
    """Text datasets: tokenisation to ``max_len`` token ids and training-split augmentation
    (``deepseek_ray.data.TextPreprocessor``; val and test are never augmented).

    >>> TextDataConfig(tokenizer='bpe', augmentation=['random_swap']).augmentation[0].type
    'random_swap'
    """

    tokenizer: str = Field(
        "wordpiece", min_length=1,
        description="wordpiece | bpe (trained on the training split), a local Hugging Face tokenizer folder or "
                    "tokenizer.json (relative to the experiment file), or a hub name (needs the network).")
    max_len: int = Field(64, ge=2, le=4096, description="Token ids per example: longer texts are truncated, shorter padded.")
    vocab_size: int = Field(8000, ge=100, description="Vocabulary of a trained wordpiece/bpe tokenizer.")
    augmentation: list[TextAugmentConfig] = Field(
        default_factory=list,
        description="Names or {type: ..., options}: synonym_replacement, random_swap, random_deletion, back_translation.")
    p: float = Field(0.1, ge=0, le=1, description="Default share of words an augmentation changes.")
    copies: int = Field(1, ge=0, le=10, description="Augmented copies of each training text, per augmentation.")

    @field_validator("augmentation", mode="before")
    @classmethod
    def _names_to_mappings(cls, value: Any) -> Any:
        # `augmentation: [random_swap]` is the short form of `[{type: random_swap}]`.
        if isinstance(value, list):
            return [{"type": item} if isinstance(item, str) else item for item in value]
        return value


class WindowConfig(Section):
    """Time series: forecast ``horizon`` steps of the target from the last ``lookback`` steps of every column."""

    lookback: int | None = Field(None, ge=1, le=10000, description="Input steps; default: the dataset's own (co2: 52, sunspots: 24).")
    horizon: int = Field(1, ge=1, le=1000, description="Steps forecast at once.")


BIN_STRATEGIES = ("quantile", "uniform")


class TabularDataConfig(Section):
    """Tabular datasets: binning and scaling (imputation and one-hot encoding are automatic), all fitted
    on the training split and saved in the model bundle, so serving transforms raw rows the same way.

    >>> TabularDataConfig(bins={'age': [0, 18, 30, 120], 'income': {'quantile': 4}}).bins['income']
    {'quantile': 4}
    """

    bins: dict[str, list[float] | dict[str, int]] = Field(
        default_factory=dict,
        description="Column → explicit edges [0, 18, 30, 120] (bins closed on the right), {quantile: n} or {uniform: n}.")
    scale: bool = Field(True, description="Standardise numeric columns (mean/std of the training split).")

    @field_validator("bins")
    @classmethod
    def _bin_specs(cls, bins: dict[str, Any]) -> dict[str, Any]:
        for column, spec in bins.items():
            if isinstance(spec, list):
                if len(spec) < 2 or any(b <= a for a, b in zip(spec, spec[1:])):
                    raise ValueError(f"bins.{column}: edges must be at least two strictly increasing numbers, got {spec}")
            elif len(spec) != 1 or next(iter(spec)) not in BIN_STRATEGIES or next(iter(spec.values())) < 2:
                raise ValueError(f"bins.{column}: got {spec}; allowed: a list of edges, {{quantile: n}} or {{uniform: n}} "
                                 "with n ≥ 2")
        return bins


DataKind = Literal["image", "tabular", "text", "timeseries"]
#: Every dataset kind: the one list (``data.kind`` and the dataset registry use it).
DATA_KINDS: tuple[str, ...] = get_args(DataKind)
#: The ``data`` section holding each kind's options → that kind (image datasets have none; ``augment`` is theirs).
OPTIONS_KIND = {"text": "text", "window": "timeseries", "tabular": "tabular"}


class DataConfig(Section):
    """Where the examples come from, how they are split, and the options of the dataset's kind
    (``text``, ``window`` for time series, ``tabular``); set only the one that fits the dataset.
    """

    dataset: str = Field("mnist5k", description="A registry name (see `deepseek-ray datasets`) or a csv/parquet/jsonl file.")
    label: str | None = Field(None, description="The label column (file datasets), or the target column to forecast.")
    kind: DataKind | None = Field(
        None, description="A file dataset's kind (default: text for one string column, else tabular); "
                          "registered datasets know theirs.")
    split: SplitConfig = SplitConfig()
    augment: list[AugmentConfig] = Field(default_factory=list, description="Image augmentation, applied per training batch.")
    limit: int | None = Field(None, ge=10, description="Use only N examples (shuffled; a time series keeps its first N steps): for smoke tests.")
    text: TextDataConfig | None = Field(None, description="Tokenizer, max_len and augmentation of a text dataset.")
    window: WindowConfig | None = Field(None, description="lookback and horizon of a time-series dataset.")
    tabular: TabularDataConfig | None = Field(None, description="Binning and scaling of a tabular dataset.")

    @property
    def options_key(self) -> str | None:
        """The kind-specific options section given (``text``, ``window`` or ``tabular``); ``None`` without one.

        >>> DataConfig(dataset='co2', window={'lookback': 12}).options_key
        'window'
        """
        return next((key for key in OPTIONS_KIND if getattr(self, key) is not None), None)

    @property
    def options_kind(self) -> str | None:
        """The kind the options section given implies (``window`` → ``timeseries``); ``None`` without one.

        >>> DataConfig(dataset='co2', window={'lookback': 12}).options_kind
        'timeseries'
        """
        return OPTIONS_KIND.get(self.options_key)

    def misfit(self, kind: str | None) -> str | None:
        """The first key that does not fit a dataset of ``kind``: an options section of another kind, else
        ``'augment'`` (image augmentation) for a non-image kind; ``None`` when all fit or ``kind`` is ``None``.

        >>> DataConfig(dataset='penguins', window={'lookback': 4}).misfit('tabular')
        'window'
        >>> DataConfig(dataset='co2', window={'lookback': 4}).misfit('timeseries') is None
        True
        """
        if kind is None:
            return None
        wrong = next((key for key, own in OPTIONS_KIND.items() if getattr(self, key) is not None and own != kind), None)
        if wrong is None and self.augment and kind != "image":
            return "augment"
        return wrong

    @model_validator(mode="after")
    def _one_kind(self) -> "DataConfig":
        given = [key for key in OPTIONS_KIND if getattr(self, key) is not None]
        if len(given) > 1:
            kinds = ", ".join(f"{key}: {kind}" for key, kind in OPTIONS_KIND.items())
            raise ValueError(f"{' and '.join(given)} are options of different dataset kinds; keep the one that fits "
                             f"{self.dataset} ({kinds})")
        misfit = self.misfit(self.kind)
        if misfit == "augment":
            raise ValueError("data.augment (random_shift, mixup, cutmix) is for images; for text use data.text.augmentation")
        if misfit is not None:
            raise ValueError(f"data.{misfit} is for {OPTIONS_KIND[misfit]} datasets, but kind is {self.kind}")
        return self


# ---------------------------------------------------------------------------------------- search
# Each strategy is one library sampler (deepseek_ray.hpo.strategies.make_searcher says which).
STRATEGIES = ("random", "grid", "tpe", "gp", "cmaes", "hyperopt", "evolution", "nsga2")
Mode = Literal["max", "min"]


class StrategyConfig(Section):
    """What to try next: the searcher.

    ``random``/``grid``/``tpe``/``gp``/``cmaes``/``nsga2`` are Optuna's samplers, ``hyperopt`` is
    HyperOpt's TPE, ``evolution`` is regularized (aging) evolution as an Optuna sampler.
    """

    type: Literal["random", "grid", "tpe", "gp", "cmaes", "hyperopt", "evolution", "nsga2"] = "tpe"
    n_startup_trials: int = Field(4, ge=0, description="Random trials before a model-based sampler takes over.")
    population: int = Field(10, ge=2, description="evolution: trials alive in the population (the oldest dies).")
    tournament: int = Field(3, ge=1, description="evolution: population members drawn to pick each parent.")


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
    grace_period: int = Field(1, ge=1, description="Epochs of the smallest bracket's first rung.")
    reduction_factor: float = Field(3.0, gt=1)


class PbtSchedulerConfig(Section):
    """Population-based training (Jaderberg et al. 2017), synchronous: every ``perturbation_interval``
    epochs the worst ``quantile_fraction`` of the trials copy the weights and optimizer state of a
    random trial from the best fraction and continue with its hyperparameters, perturbed.

    Needs one metric and one architecture shared by every trial (weights are copied).
    """

    type: Literal["pbt"]
    max_t: int = Field(4, ge=2, description="Epochs of every trial.")
    perturbation_interval: int = Field(1, ge=1, description="Epochs between exploit/explore steps; below max_t.")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="Share of trials copied from (top) and replaced (bottom).")
    resample_probability: float = Field(0.25, ge=0, le=1, description="Chance a perturbed value is drawn afresh from its domain.")
    perturbation_factors: tuple[float, float] = Field((0.8, 1.2), description="Otherwise a numeric value is multiplied by one of these.")
    hyperparameters: list[str] | None = Field(
        None, description="Keys to perturb; default: every searched float (uniform, loguniform, quniform) in the space.")

    @model_validator(mode="after")
    def _interval_below_max_t(self) -> "PbtSchedulerConfig":
        if self.perturbation_interval >= self.max_t:
            raise ValueError(f"perturbation_interval ({self.perturbation_interval}) must be below max_t ({self.max_t}), "
                             "or no trial is ever perturbed")
        return self


SchedulerConfig = Annotated[
    Union[FifoSchedulerConfig, AshaSchedulerConfig, HyperbandSchedulerConfig, PbtSchedulerConfig],
    Field(discriminator="type"),
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
    """Ray Tune searchers over a search-space file: a searcher (``strategy``) and a scheduler
    (``fifo``, ``asha``, ``hyperband``, or ``pbt`` for a space whose trials share one architecture).

    ``metric``/``mode`` take a list for a multi-objective search (e.g. ``[val_accuracy, latency_ms]``
    with ``[max, min]``), which returns the Pareto front and needs the ``fifo`` scheduler.
    """

    space: Path = Field(Path("search_spaces/mnist_cnn.yaml"), description="Search-space YAML, relative to the experiment file.")
    strategy: StrategyConfig = StrategyConfig()
    scheduler: SchedulerConfig = AshaSchedulerConfig(type="asha")
    budget: BudgetConfig = BudgetConfig()
    metric: str | list[str] = Field("val_accuracy", description="Reported metric to optimise, or a list of them.")
    mode: Mode | list[Mode] = Field("max", description="max or min, one per metric.")
    concurrency: int = Field(2, ge=1, description="Trials running at once.")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_failures: int = Field(1, ge=0, description="Retries of a trial that raised (or whose loss became NaN).")
    batch_size: int = Field(64, ge=1, description="Mini-batch size inside a trial.")

    @model_validator(mode="after")
    def _objectives_agree(self) -> "SearchConfig":
        metrics, modes = self.objectives()
        if len(metrics) != len(modes):
            raise ValueError(f"metric and mode need one entry each: got {len(metrics)} metric(s), {len(modes)} mode(s)")
        if len(metrics) > 1 and self.scheduler.type == "pbt":
            raise ValueError(f"scheduler pbt ranks trials by one metric; a multi-objective search ({metrics}) needs scheduler type fifo")
        if len(metrics) > 1 and self.scheduler.type != "fifo":
            raise ValueError(f"a multi-objective search ({metrics}) needs scheduler type fifo, got {self.scheduler.type!r}")
        if len(metrics) > 1 and self.strategy.type in ("cmaes", "hyperopt", "evolution", "grid"):
            raise ValueError(f"strategy {self.strategy.type!r} optimises one metric; for {metrics} use nsga2, tpe, gp or random")
        return self

    def objectives(self) -> tuple[list[str], list[str]]:
        """``(metrics, modes)`` as lists, one entry per objective.

        >>> SearchConfig(metric=['val_accuracy', 'latency_ms'], mode=['max', 'min'], scheduler={'type': 'fifo'}).objectives()
        (['val_accuracy', 'latency_ms'], ['max', 'min'])
        """
        as_list = lambda v: list(v) if isinstance(v, list) else [v]  # noqa: E731
        return as_list(self.metric), as_list(self.mode)


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
    compile: bool | Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        False, description="torch.compile the model; a mode name picks its mode (reduce-overhead: CUDA graphs, fastest on GPUs).")
    per_device_train_batch_size: int = Field(64, ge=1)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: LrSchedulerConfig = LrSchedulerConfig()
    gradient_accumulation: int = Field(1, ge=1)
    clip_grad_norm: float | None = Field(1.0, gt=0)
    early_stopping_patience: int | None = Field(3, ge=1, description="Epochs without a better val metric before stopping.")
    max_failures: int = Field(2, ge=0, description="Worker-group restarts from the last checkpoint.")
    baseline: bool = Field(
        True, description="Also score a simple baseline on the same test split: images: a plain 2-conv CNN with the same "
                          "recipe; tabular: scikit-learn logistic (or ridge) regression on the same features; time series: "
                          "the last observed value (persistence); text: the majority class.")


# ---------------------------------------------------------------------------------------- export
class Int8DynamicConfig(Section):
    """Post-training int8: weights per channel, activations quantized on the fly (MatMul, Gemm, Attention, LSTM, GRU, Gather)."""

    type: Literal["int8_dynamic"]
    per_channel: bool = True


class Int8StaticConfig(Section):
    """Post-training int8 QDQ: weights per channel, activation ranges from training examples."""

    type: Literal["int8_static"]
    calibration_samples: int = Field(256, ge=1, description="Training examples that set the activation ranges.")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    recipe: Literal["auto", "compute", "full", "transformer"] = Field(
        "auto", description="compute: Conv/MatMul/Gemm (and the Relu/pooling between them) static, elementwise "
                            "arithmetic in float; full: every supported node static; transformer: MatMul/Gemm/Gather "
                            "static, the MatMuls after GELU dynamic, norms/softmax in float; auto: transformer for "
                            "graphs with attention, else compute.")


class Int4Config(Section):
    """Weight-only int4 (ONNX Runtime's MatMulNBits / GatherBlockQuantized): 4 bits + one scale per block."""

    type: Literal["int4"]
    block_size: int = Field(128, description="Weights per scale: a power of two, 16–256.")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value not in (16, 32, 64, 128, 256):
            raise ValueError(f"block_size must be one of 16, 32, 64, 128, 256, got {value}")
        return value


QuantizeConfig = Annotated[Union[Int8DynamicConfig, Int8StaticConfig, Int4Config], Field(discriminator="type")]


class ExportConfig(Section):
    """Export of the trained model, checked against torch on the test split, and its quantized variants.

    Each ``quantize`` entry becomes one more ONNX file beside ``model.onnx`` (``model.<type>.onnx``), made
    by ``deepseek_ray.quantization.quantize(model.onnx, method=type, calibration=..., **options)``.
    """

    formats: list[Literal["onnx", "torch_export", "tensorrt"]] = Field(
        default_factory=lambda: ["onnx"], min_length=1,
        description="onnx (ONNX Runtime), torch_export (torch.export .pt2), tensorrt (needs TensorRT or onnxruntime-gpu).")
    opset: int = Field(18, ge=13, le=23)
    optimize_level: int = Field(9, ge=0, le=9, description="0 = no graph optimisation, 7 = all of ONNX Runtime's, 8–9 = + transformer fusions.")
    parity_tolerance: float = Field(
        1e-4, gt=0, description="Max |torch − exported| allowed on the test split: in probability (classification, where "
                                "the classes must also be identical), or relative to the largest |prediction| (regression).")
    quantize: list[QuantizeConfig] = Field(default_factory=list, description="Quantized variants of the ONNX model.")

    @model_validator(mode="after")
    def _consistent(self) -> "ExportConfig":
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats lists a format twice: {self.formats}")
        kinds = [item.type for item in self.quantize]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"quantize lists a type twice: {kinds}; allowed once each: int8_dynamic, int8_static, int4")
        if self.quantize and "onnx" not in self.formats:
            raise ValueError("quantize works on the ONNX model: add onnx to formats")
        return self


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
    model: Literal["onnx", "int8_dynamic", "int8_static", "int4"] = Field(
        "onnx", description="What the endpoint serves: the fp32 ONNX model, or one of export.quantize's variants.")


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

    @model_validator(mode="after")
    def _served_model_is_exported(self) -> "ExperimentConfig":
        # Only a quantized choice is checked here: serving needs onnx in export.formats, which the serve stage
        # checks itself (a file without it still runs with --no-serve).
        exported = ["onnx", *(q.type for q in self.export.quantize)]
        if self.serve.model not in exported:
            raise ValueError(f"serve.model: {self.serve.model!r} is not exported by this file; allowed: "
                             f"{', '.join(exported)} (export.quantize)")
        return self

    @property
    def run_dir(self) -> Path:
        """The folder holding this experiment's artifacts: ``output_dir/name``."""
        return self.output_dir / self.name
