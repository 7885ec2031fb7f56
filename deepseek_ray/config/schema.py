"""The experiment file, one pydantic class per pipeline stage.

The tree mirrors the runtime tree (Ludwig's rule): ``data`` feeds ``search``, which feeds ``train``,
``export`` and ``serve``; ``tracking`` watches them all. Where a section picks an implementation,
``type:`` names it. A plain list of names (strategies, optimizers, compile modes, export formats …) is a
registry (:mod:`.registries`) filled where each value is implemented; a choice with options of its own
(schedulers, augmentations, quantizers) is a union of classes here, whose ``type`` names are the list
and against which the implementation registers. Every model forbids unknown keys, so a typo is an error,
not a silently ignored setting; counts refuse ``true``/``false``, and sizes, names and paths have bounds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError, core_schema

from .registries import (
    BIN_STRATEGIES,
    CALIBRATION_METHODS,
    COMPILE_MODES,
    EXPORT_FORMATS,
    KINDS,
    LR_SCHEDULES,
    METRICS,
    OPTIMIZERS,
    QUANTIZE_RECIPES,
    STRATEGIES,
    TRAINED_TOKENIZERS,
)
from .registry import Registry


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are checked on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ------------------------------------------------------------------------------ value types
def _not_a_bool(value: Any) -> Any:
    # pydantic's lax mode reads True as 1: `trials: true` would run one trial.
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


#: An ``int`` / ``float`` that refuses ``true``/``false`` (YAML booleans), otherwise pydantic's usual parsing.
Int = Annotated[int, BeforeValidator(_not_a_bool)]
Float = Annotated[float, BeforeValidator(_not_a_bool)]

# Bounds of counts and sizes: far above any real run, low enough that a typo (10**12) is caught here
# rather than as an out-of-memory error or an endless search.
MAX_BATCH = 2**16
MAX_ACCUMULATION = 4096
MAX_EPOCHS = 100_000
MAX_TRIALS = 100_000
MAX_WORKERS = 4096
MAX_REPLICAS = 1024
MAX_CPUS = 1024.0
MAX_SEED = 2**32 - 1  # numpy's RandomState takes seeds below 2**32
MAX_PATH = 4096  # Linux PATH_MAX
MAX_PATH_PART = 255  # bytes of one file or folder name (NAME_MAX)
MAX_NAME = 100


def fits_the_filesystem(value: Any) -> Any:
    """``value`` (a path or name) if the OS can open it: at most 4096 characters, each part at most 255 bytes.

    >>> fits_the_filesystem('data/train.csv')
    'data/train.csv'
    >>> fits_the_filesystem('x' * 300)
    Traceback (most recent call last):
    ...
    ValueError: a file or folder name is at most 255 bytes; this one (xxxxxxxxxxxxxxxxxxxx…) has 300
    """
    text = str(value)
    if len(text) > MAX_PATH:
        raise ValueError(f"a path is at most {MAX_PATH} characters; this one has {len(text)}")
    for part in re.split(r"[/\\]", text):
        if len(part.encode()) > MAX_PATH_PART:
            raise ValueError(
                f"a file or folder name is at most {MAX_PATH_PART} bytes; "
                f"this one ({part[:20]}…) has {len(part.encode())}"
            )
    return value


#: A string naming a file, a folder or a hub model: bounded so that opening it cannot fail with ENAMETOOLONG.
PathText = Annotated[str, AfterValidator(fits_the_filesystem)]
FilePath = Annotated[Path, BeforeValidator(fits_the_filesystem)]


def _or(names: list[str]) -> str:
    """``a, b or c``."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def _quoted(names: Iterable[str]) -> str:
    """``'a', 'b' or 'c'``, as pydantic lists the values of a ``Literal``."""
    return _or([repr(n) for n in names])


def _not_above(low: str, low_value: float, high: str, high_value: float) -> None:
    """A ``ValueError`` when ``low`` exceeds ``high``: the pairs a section keeps in order (min/max, …)."""
    if low_value > high_value:
        raise ValueError(f"{low} ({low_value}) must not exceed {high} ({high_value})")


class OneOf:
    """``Annotated[str, OneOf(REGISTRY)]``: a name the registry (or a function giving names) holds.

    Checked on validation with pydantic's wording for a ``Literal`` ("Input should be 'a' or 'b'"), and
    written as the JSON Schema's ``enum``; both read the registry when used, never at import time, so
    ``config`` imports no stage.

    >>> from deepseek_ray.config.registry import Registry
    >>> SIZES = Registry('size'); _ = SIZES.register('small')(1); _ = SIZES.register('large')(2)
    >>> TypeAdapter(Annotated[str, OneOf(SIZES)]).validate_python('huge')
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for function-after[check(), str]
      Input should be 'small' or 'large' [type=literal_error, input_value='huge', input_type=str]
    >>> TypeAdapter(Annotated[str, OneOf(SIZES)]).json_schema()['enum']
    ['small', 'large']
    """

    def __init__(self, names: Registry | Callable[[], Iterable[str]]):
        self.names = names.names if isinstance(names, Registry) else names

    def check(self, value: str) -> str:
        allowed = list(self.names())
        if value not in allowed:
            raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": _quoted(allowed)})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        json_schema = handler(schema)
        json_schema["enum"] = list(self.names())
        return json_schema


def tag(config_class: type[BaseModel]) -> str:
    """The ``type`` name of one config class of a discriminated union.

    >>> tag(RandomSwapConfig)
    'random_swap'
    """
    return get_args(config_class.model_fields["type"].annotation)[0]


def tags(union: Any) -> tuple[str, ...]:
    """The ``type`` names of a discriminated union of config classes: the list of what is allowed.

    >>> tags(QuantizeConfig)
    ('int8_dynamic', 'int8_static', 'int4')
    """
    return tuple(tag(member) for member in get_args(get_args(union)[0]))


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

    train: Float = Field(0.8, gt=0, lt=1)
    val: Float = Field(0.1, gt=0, lt=1)
    test: Float = Field(0.1, gt=0, lt=1)

    @model_validator(mode="after")
    def _sums_to_one(self) -> SplitConfig:
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"train + val + test must add up to 1, got {total:g}")
        return self


class MixupConfig(Section):
    """MixUp (Zhang et al. 2018): convex combinations of image pairs and their labels."""

    type: Literal["mixup"]
    alpha: Float = Field(0.2, gt=0, le=100)


class CutmixConfig(Section):
    """CutMix (Yun et al. 2019): a box of one image pasted into another, labels mixed by area."""

    type: Literal["cutmix"]
    alpha: Float = Field(1.0, gt=0, le=100)


class RandomShiftConfig(Section):
    """Random translation by up to ``pixels`` in each direction (zero padded)."""

    type: Literal["random_shift"]
    pixels: Int = Field(2, ge=1, le=8)


AugmentConfig = Annotated[MixupConfig | CutmixConfig | RandomShiftConfig, Field(discriminator="type")]


# Text: the options of deepseek_ray.data.TextPreprocessor, one class per augmentation (deepseek_ray.data.text
# builds each augmenter from its class).


class SynonymReplacementConfig(Section):
    """Replace about a fraction ``p`` of the words with a WordNet synonym (needs WordNet, see the README)."""

    type: Literal["synonym_replacement"]
    p: Float | None = Field(None, ge=0, le=1, description="Share of words changed; default data.text.p.")


class RandomSwapConfig(Section):
    """Swap two random words, about ``p``·n times."""

    type: Literal["random_swap"]
    p: Float | None = Field(None, ge=0, le=1, description="Share of words changed; default data.text.p.")


class RandomDeletionConfig(Section):
    """Drop each word with probability ``p`` (at least one word stays)."""

    type: Literal["random_deletion"]
    p: Float | None = Field(None, ge=0, le=1, description="Share of words changed; default data.text.p.")


class BackTranslationConfig(Section):
    """Translate to a pivot language and back with two MarianMT models (local folders or hub names)."""

    type: Literal["back_translation"]
    forward: PathText = Field("Helsinki-NLP/opus-mt-en-de", min_length=1)
    backward: PathText = Field("Helsinki-NLP/opus-mt-de-en", min_length=1)
    max_new_tokens: Int = Field(64, ge=1, le=4096)
    batch_size: Int = Field(16, ge=1, le=MAX_BATCH)


TextAugmentConfig = Annotated[
    SynonymReplacementConfig | RandomSwapConfig | RandomDeletionConfig | BackTranslationConfig,
    Field(discriminator="type"),
]
#: Every text augmentation: the union's ``type`` names.
TEXT_AUGMENTATIONS: tuple[str, ...] = tags(TextAugmentConfig)
_TEXT_AUGMENTATION: TypeAdapter[Any] = TypeAdapter(TextAugmentConfig)


def text_augmentation(spec: str | dict[str, Any] | BaseModel) -> Any:
    """A text augmentation's config from its name or ``{type: name, options}``, with the schema's checks.

    >>> text_augmentation({'type': 'random_swap', 'p': 0.3}).p
    0.3
    >>> text_augmentation('shout')  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: augmentation: unknown 'shout'; allowed: synonym_replacement, random_swap, random_deletion, ...
    """
    if isinstance(spec, BaseModel):
        return spec
    options = {"type": spec} if isinstance(spec, str) else dict(spec)
    if options.get("type") not in TEXT_AUGMENTATIONS:
        raise ValueError(f"augmentation: unknown {options.get('type')!r}; allowed: {', '.join(TEXT_AUGMENTATIONS)}")
    return _TEXT_AUGMENTATION.validate_python(options)  # a ValidationError is a ValueError


class TextDataConfig(Section):
    """Text datasets: tokenisation to ``max_len`` token ids and training-split augmentation
    (``deepseek_ray.data.TextPreprocessor``; val and test are never augmented).

    >>> TextDataConfig(tokenizer='bpe', augmentation=['random_swap']).augmentation[0].type
    'random_swap'
    """

    tokenizer: PathText = Field(
        "wordpiece",
        min_length=1,
        json_schema_extra=lambda schema: _examples(schema, TRAINED_TOKENIZERS),
        description="wordpiece | bpe (trained on the training split), a local Hugging Face tokenizer folder or "
        "tokenizer.json (relative to the experiment file), all-MiniLM-L6-v2 (the packaged encoder's), or a hub name "
        "(needs the network).",
    )
    max_len: Int = Field(
        64, ge=2, le=4096, description="Token ids per example: longer texts are truncated, shorter padded."
    )
    vocab_size: Int = Field(8000, ge=100, le=1_000_000, description="Vocabulary of a trained wordpiece/bpe tokenizer.")
    augmentation: list[TextAugmentConfig] = Field(
        default_factory=list,
        json_schema_extra=lambda schema: _also_by_name(schema, TEXT_AUGMENTATIONS),
        description=f"Names or {{type: ..., options}}: {', '.join(TEXT_AUGMENTATIONS)}.",
    )
    p: Float = Field(0.1, ge=0, le=1, description="Default share of words an augmentation changes.")
    copies: Int = Field(1, ge=0, le=10, description="Augmented copies of each training text, per augmentation.")

    @field_validator("augmentation", mode="before")
    @classmethod
    def _names_to_mappings(cls, value: Any) -> Any:
        # `augmentation: [random_swap]` is the short form of `[{type: random_swap}]`.
        if isinstance(value, list):
            return [{"type": item} if isinstance(item, str) else item for item in value]
        return value


class WindowConfig(Section):
    """Time series: forecast ``horizon`` steps of the target from the last ``lookback`` steps of every column."""

    lookback: Int | None = Field(
        None, ge=1, le=10000, description="Input steps; default: the dataset's own (co2: 52, sunspots: 24)."
    )
    horizon: Int = Field(1, ge=1, le=1000, description="Steps forecast at once.")


class TabularDataConfig(Section):
    """Tabular datasets: binning and scaling (imputation and one-hot encoding are automatic), all fitted
    on the training split and saved in the model bundle, so serving transforms raw rows the same way.

    >>> TabularDataConfig(bins={'age': [0, 18, 30, 120], 'income': {'quantile': 4}}).bins['income']
    {'quantile': 4}
    """

    bins: dict[str, list[Float] | dict[str, Int]] = Field(
        default_factory=dict,
        description="Column → explicit edges [0, 18, 30, 120] (bins closed on the right), or {strategy: n} "
        "(see the registry data.tabular.bins: quantile, uniform).",
    )
    scale: bool = Field(True, description="Standardise numeric columns (mean/std of the training split).")

    @field_validator("bins")
    @classmethod
    def _bin_specs(cls, bins: dict[str, Any]) -> dict[str, Any]:
        for column, spec in bins.items():
            if isinstance(spec, list):
                if len(spec) < 2 or any(b <= a for a, b in pairwise(spec)):
                    raise ValueError(
                        f"bins.{column}: edges must be at least two strictly increasing numbers, got {spec}"
                    )
            elif (
                len(spec) != 1 or next(iter(spec)) not in BIN_STRATEGIES or not 2 <= next(iter(spec.values())) <= 10_000
            ):
                strategies = " or ".join(f"{{{name}: n}}" for name in BIN_STRATEGIES.names())
                raise ValueError(
                    f"bins.{column}: got {spec}; allowed: a list of edges, {strategies} with 2 ≤ n ≤ 10000"
                )
        return bins


#: The ``data`` section holding each kind's options → that kind (image datasets have none; ``augment`` is theirs).
OPTIONS_KIND = {"text": "text", "window": "timeseries", "tabular": "tabular"}


class DataConfig(Section):
    """Where the examples come from, how they are split, and the options of the dataset's kind
    (``text``, ``window`` for time series, ``tabular``); set only the one that fits the dataset.
    """

    dataset: PathText = Field(
        "mnist5k",
        min_length=1,
        description="A registry name (see `deepseek-ray datasets`) or a csv/parquet/jsonl file.",
    )
    label: str | None = Field(
        None,
        min_length=1,
        max_length=1024,
        description="The label column (file datasets), or the target column to forecast.",
    )
    kind: Annotated[str, OneOf(KINDS)] | None = Field(
        None,
        description="A file dataset's kind (default: text for one string column, else tabular); "
        "registered datasets know theirs.",
    )
    split: SplitConfig = SplitConfig()
    augment: list[AugmentConfig] = Field(
        default_factory=list, description="Image augmentation, applied per training batch."
    )
    limit: Int | None = Field(
        None,
        ge=10,
        le=10**9,
        description="Use only N examples (shuffled; a time series keeps its first N steps): for smoke tests.",
    )
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
        key = self.options_key
        return None if key is None else OPTIONS_KIND[key]

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
    def _one_kind(self) -> DataConfig:
        given = [key for key in OPTIONS_KIND if getattr(self, key) is not None]
        if len(given) > 1:
            kinds = ", ".join(f"{key}: {kind}" for key, kind in OPTIONS_KIND.items())
            raise ValueError(
                f"{' and '.join(given)} are options of different dataset kinds; keep the one that fits "
                f"{self.dataset} ({kinds})"
            )
        misfit = self.misfit(self.kind)
        if misfit == "augment":
            raise ValueError(
                "data.augment (random_shift, mixup, cutmix) is for images; for text use data.text.augmentation"
            )
        if misfit is not None:
            raise ValueError(f"data.{misfit} is for {OPTIONS_KIND[misfit]} datasets, but kind is {self.kind}")
        return self


# ---------------------------------------------------------------------------------------- search
Mode = Literal["max", "min"]


class StrategyConfig(Section):
    """What to try next: the searcher, one of :data:`~deepseek_ray.config.registries.STRATEGIES`.

    ``random``/``grid``/``tpe``/``gp``/``cmaes``/``nsga2`` are Optuna's samplers, ``hyperopt`` is
    HyperOpt's TPE, ``evolution`` is regularized (aging) evolution as an Optuna sampler
    (:mod:`deepseek_ray.hpo.strategies` registers each).
    """

    type: Annotated[str, OneOf(STRATEGIES)] = "tpe"
    n_startup_trials: Int = Field(
        4, ge=0, le=MAX_TRIALS, description="Random trials before a model-based sampler takes over."
    )
    population: Int = Field(
        10, ge=2, le=10_000, description="evolution: trials alive in the population (the oldest dies)."
    )
    tournament: Int = Field(3, ge=1, le=10_000, description="evolution: population members drawn to pick each parent.")

    @model_validator(mode="after")
    def _tournament_within_population(self) -> StrategyConfig:
        if self.type == "evolution":
            _not_above("evolution: tournament", self.tournament, "population", self.population)
        return self


def _grace_within_max_t(scheduler: AshaSchedulerConfig) -> AshaSchedulerConfig:
    # A grace period past max_t would never let the scheduler stop a trial: a silently plain search.
    _not_above("grace_period", scheduler.grace_period, "max_t", scheduler.max_t)
    return scheduler


class FifoSchedulerConfig(Section):
    """Run every trial to the end."""

    type: Literal["fifo"]
    max_t: Int = Field(4, ge=1, le=MAX_EPOCHS, description="Epochs of every trial.")


class AshaSchedulerConfig(Section):
    """Asynchronous successive halving: stop the weaker trials early."""

    type: Literal["asha"]
    grace_period: Int = Field(1, ge=1, le=MAX_EPOCHS, description="Epochs every trial runs before it may be stopped.")
    max_t: Int = Field(4, ge=1, le=MAX_EPOCHS, description="Epochs of the longest trial.")
    reduction_factor: Float = Field(2.0, gt=1, le=100)

    @model_validator(mode="after")
    def _rungs(self) -> AshaSchedulerConfig:
        return _grace_within_max_t(self)


class HyperbandSchedulerConfig(Section):
    """HyperBand (Tune's ``HyperBandScheduler``): brackets of successive halving, the smallest starting at
    ``max_t / reduction_factor**k`` epochs. It pauses trials between rungs, so trials checkpoint."""

    type: Literal["hyperband"]
    max_t: Int = Field(4, ge=1, le=MAX_EPOCHS)
    reduction_factor: Float = Field(3.0, gt=1, le=100)


#: the schedulers that copy weights between the trials of one population
POPULATION_SCHEDULERS = ("pbt", "pb2")


class _PopulationSchedulerConfig(Section):
    """What PBT and PB2 share: every ``perturbation_interval`` epochs the worst ``quantile_fraction`` of the
    trials copy the weights and optimizer state of a random trial from the best fraction and continue with
    new hyperparameters.

    Needs one metric and one architecture shared by every trial (weights are copied). Tune's PBT and PB2
    take no searcher: the population is drawn at random by Tune's variant generator (strategy ``random``).
    """

    max_t: Int = Field(4, ge=2, le=MAX_EPOCHS, description="Epochs of every trial.")
    perturbation_interval: Int = Field(
        1, ge=1, le=MAX_EPOCHS, description="Epochs between exploit/explore steps; below max_t."
    )
    quantile_fraction: Float = Field(
        0.25, gt=0, le=0.5, description="Share of trials copied from (top) and replaced (bottom)."
    )
    hyperparameters: list[Annotated[str, Field(min_length=1, max_length=MAX_NAME)]] | None = Field(
        None, description="Keys to perturb; default: every searched float (uniform, loguniform, quniform) in the space."
    )

    @model_validator(mode="after")
    def _interval_below_max_t(self) -> _PopulationSchedulerConfig:
        if self.perturbation_interval >= self.max_t:
            raise ValueError(
                f"perturbation_interval ({self.perturbation_interval}) must be below max_t ({self.max_t}), "
                "or no trial is ever perturbed"
            )
        return self


class PbtSchedulerConfig(_PopulationSchedulerConfig):
    """Population-based training (Jaderberg et al. 2017; Tune's ``PopulationBasedTraining``, ``synch=True``):
    the copied hyperparameters are perturbed, each multiplied by a factor or drawn afresh."""

    type: Literal["pbt"]
    resample_probability: Float = Field(
        0.25, ge=0, le=1, description="Chance a perturbed value is drawn afresh from its domain."
    )
    perturbation_factors: tuple[Float, Float] = Field(
        (0.8, 1.2), description="Otherwise a numeric value is multiplied by one of these."
    )


class Pb2SchedulerConfig(_PopulationSchedulerConfig):
    """Population-based bandits (Parker-Holder et al. 2020; Tune's ``PB2``, ``synch=True``): the copied
    hyperparameters are chosen by a Gaussian-process bandit fitted to how each setting improved the metric,
    within their domains' bounds; so every perturbed key is a numeric range (uniform, loguniform, quniform)."""

    type: Literal["pb2"]


SchedulerConfig = Annotated[
    FifoSchedulerConfig | AshaSchedulerConfig | HyperbandSchedulerConfig | PbtSchedulerConfig | Pb2SchedulerConfig,
    Field(discriminator="type"),
]


class BudgetConfig(Section):
    """The search stops at whichever limit comes first."""

    trials: Int = Field(12, ge=1, le=MAX_TRIALS, description="Number of trials.")
    time: float | None = Field(
        None,
        gt=0,
        le=366 * 24 * 3600,
        json_schema_extra=lambda schema: _also_a_duration(schema),
        description="Wall-clock limit: seconds or '90s' / '5m' / '1h'.",
    )
    epochs: Int | None = Field(None, ge=1, le=MAX_TRIALS * 100, description="Total training epochs over all trials.")

    @field_validator("time", mode="before")
    @classmethod
    def _parse_time(cls, value: str | float | None) -> float | None:
        return parse_duration(_not_a_bool(value))


class SearchConfig(Section):
    """A Ray Tune search over a search-space file: a searcher (``strategy``) and one of Tune's schedulers
    (``fifo``, ``asha``, ``hyperband``, or ``pbt`` / ``pb2`` for a space whose trials share one architecture).

    ``metric``/``mode`` take a list for a multi-objective search (e.g. ``[val_accuracy, latency_ms]``
    with ``[max, min]``), which returns the Pareto front and needs the ``fifo`` scheduler.
    """

    space: FilePath = Field(
        Path("search_spaces/mnist_cnn.yaml"), description="Search-space YAML, relative to the experiment file."
    )
    strategy: StrategyConfig = StrategyConfig()
    scheduler: SchedulerConfig = AshaSchedulerConfig(type="asha")
    budget: BudgetConfig = BudgetConfig()
    metric: str | list[str] = Field(
        "val_accuracy",
        description="Reported metric to optimise, or a list of them (an experiment file's trials "
        "report those of the registry search.metric: `deepseek-ray schema` lists them).",
    )
    mode: Mode | list[Mode] = Field("max", description="max or min, one per metric.")
    concurrency: Int = Field(
        2,
        ge=1,
        le=1024,
        description="Trials running at once (Tune's max_concurrent_trials); pbt, pb2 and hyperband admit the whole "
        "population or bracket, since Tune counts their paused trials, and the CPUs bound the rest.",
    )
    cpus_per_trial: Float = Field(1.0, gt=0, le=MAX_CPUS)
    gpus_per_trial: Float = Field(0.0, ge=0, le=64)
    max_failures: Int = Field(
        1, ge=0, le=1000, description="Retries of a trial that raised (or whose loss became NaN)."
    )
    batch_size: Int = Field(64, ge=1, le=MAX_BATCH, description="Mini-batch size inside a trial.")

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_not_empty(cls, value: Any) -> Any:
        # `budget:` or `budget: {}` reads as "no limit" but would run the default 12 trials.
        if value is None or value == {}:
            raise ValueError("the budget is empty: give trials, time and/or epochs (or leave budget out for 12 trials)")
        return value

    @field_validator("metric", mode="before")
    @classmethod
    def _metric_named(cls, value: Any) -> Any:
        names = value if isinstance(value, list) else [value]
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(
                "name the metric to optimise, e.g. val_accuracy (or a list such as [val_accuracy, latency_ms])"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"lists a metric twice: {names}")
        return value

    @model_validator(mode="after")
    def _objectives_agree(self) -> SearchConfig:
        metrics, modes = self.objectives()
        if len(metrics) != len(modes):
            raise ValueError(f"metric and mode need one entry each: got {len(metrics)} metric(s), {len(modes)} mode(s)")
        population = self.scheduler.type in POPULATION_SCHEDULERS
        if len(metrics) > 1 and population:
            raise ValueError(
                f"scheduler {self.scheduler.type} ranks trials by one metric; a multi-objective search ({metrics}) "
                "needs scheduler type fifo"
            )
        if population and "strategy" in self.model_fields_set and self.strategy.type != "random":
            raise ValueError(
                f"strategy {self.strategy.type!r} cannot run under scheduler {self.scheduler.type}: Tune's "
                "population-based schedulers take no searcher (the population is drawn at random); use strategy "
                "random or leave it out"
            )
        if len(metrics) > 1 and self.scheduler.type != "fifo":
            raise ValueError(
                f"a multi-objective search ({metrics}) needs scheduler type fifo, got {self.scheduler.type!r}"
            )
        if len(metrics) > 1 and not STRATEGIES[self.strategy.type].multi_objective:
            several = [name for name, strategy in STRATEGIES.items() if strategy.multi_objective]
            raise ValueError(f"strategy {self.strategy.type!r} optimises one metric; for {metrics} use {_or(several)}")
        return self

    def objectives(self) -> tuple[list[str], list[str]]:
        """``(metrics, modes)`` as lists, one entry per objective.

        >>> search = SearchConfig(metric=['val_accuracy', 'latency_ms'], mode=['max', 'min'],
        ...                       scheduler={'type': 'fifo'})
        >>> search.objectives()
        (['val_accuracy', 'latency_ms'], ['max', 'min'])
        """
        as_list = lambda v: list(v) if isinstance(v, list) else [v]  # noqa: E731
        return as_list(self.metric), as_list(self.mode)


# ----------------------------------------------------------------------------------------- train
class OptimizerConfig(Section):
    """The optimizer; ``lr`` comes from the search unless given here."""

    type: Annotated[str, OneOf(OPTIMIZERS)] = "adamw"
    lr: Float | None = Field(None, gt=0, le=10)
    weight_decay: Float = Field(0.01, ge=0, le=10)


class LrSchedulerConfig(Section):
    """Learning-rate schedule after a linear warmup."""

    type: Annotated[str, OneOf(LR_SCHEDULES)] = "cosine"
    warmup_steps: Int = Field(0, ge=0, le=10**9)


class TrainConfig(Section):
    """The final training run: Ray Train ``TorchTrainer`` over ``workers`` processes."""

    epochs: Int = Field(10, ge=1, le=MAX_EPOCHS)
    workers: Int = Field(2, ge=1, le=MAX_WORKERS)
    use_gpu: bool = False
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    compile: bool | str = Field(
        False,
        json_schema_extra=lambda schema: _compile_json_schema(schema),
        description="torch.compile the model; a mode name picks its mode "
        "(reduce-overhead: CUDA graphs, fastest on GPUs).",
    )
    per_device_train_batch_size: Int = Field(64, ge=1, le=MAX_BATCH)
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: LrSchedulerConfig = LrSchedulerConfig()
    gradient_accumulation: Int = Field(1, ge=1, le=MAX_ACCUMULATION)
    clip_grad_norm: Float | None = Field(1.0, gt=0)
    early_stopping_patience: Int | None = Field(
        3, ge=1, le=MAX_EPOCHS, description="Epochs without a better val metric before stopping."
    )
    max_failures: Int = Field(2, ge=0, le=1000, description="Worker-group restarts from the last checkpoint.")
    collective_timeout_s: Int = Field(
        1800,
        ge=10,
        le=86_400,
        description="Seconds a rank waits in a torch.distributed collective or rendezvous before the run fails "
        "(and is retried from its last checkpoint): a rank that hangs does not hold the others forever.",
    )
    baseline: bool = Field(
        True,
        description="Also score a simple baseline on the same test split: images: a plain 2-conv CNN with the same "
        "recipe; tabular: scikit-learn logistic (or ridge) regression on the same features; time series: "
        "the last observed value (persistence); text: the majority class.",
    )

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value: Any) -> Any:
        # One message for the bool-or-mode union (pydantic would report each member's failure).
        if isinstance(value, bool) or value in COMPILE_MODES:
            return value
        raise PydanticCustomError(
            "literal_error", "Input should be true, false or {expected}", {"expected": _quoted(COMPILE_MODES.names())}
        )

    def with_params(self, params: dict[str, Any]) -> TrainConfig:
        """This recipe with a search's hyperparameters in place: ``lr`` and ``weight_decay`` (the optimizer's),
        ``warmup_steps`` (the schedule's) and ``batch_size`` (per device); other keys are the model's.

        >>> recipe = TrainConfig(scheduler={'type': 'linear'}).with_params({'lr': 3e-4, 'batch_size': 16, 'cells': 2})
        >>> recipe.optimizer.lr, recipe.scheduler.type, recipe.per_device_train_batch_size
        (0.0003, 'linear', 16)
        """
        # Copied, not validated: the search space bounds its own values (a test searches lr=1e9 to train into NaN).
        optimizer: dict[str, Any] = {k: float(params[k]) for k in ("lr", "weight_decay") if k in params}
        schedule = {"warmup_steps": int(params["warmup_steps"])} if "warmup_steps" in params else {}
        batch = {"per_device_train_batch_size": int(params["batch_size"])} if "batch_size" in params else {}
        return self.model_copy(
            update={
                "optimizer": self.optimizer.model_copy(update=optimizer),
                "scheduler": self.scheduler.model_copy(update=schedule),
                **batch,
            }
        )


def _examples(schema: dict[str, Any], registry: Registry) -> None:
    schema["examples"] = registry.names()


def _compile_json_schema(schema: dict[str, Any]) -> None:
    schema["anyOf"] = [{"type": "boolean"}, {"type": "string", "enum": COMPILE_MODES.names()}]


def _also_a_duration(schema: dict[str, Any]) -> None:
    """A number of seconds or a duration string such as '5m' (what :func:`parse_duration` reads)."""
    schema["anyOf"].insert(1, {"type": "string", "pattern": _DURATION.pattern})


def _also_by_name(schema: dict[str, Any], names: tuple[str, ...]) -> None:
    """List items given as a bare name (``[random_swap]``) as well as ``{type: name, ...}``."""
    schema["items"] = {"anyOf": [{"type": "string", "enum": list(names)}, schema["items"]]}


# ---------------------------------------------------------------------------------------- export
class Int8DynamicConfig(Section):
    """Post-training int8: weights per channel, activations quantized on the fly (MatMul, Gemm, Attention, LSTM, GRU,
    Gather)."""

    type: Literal["int8_dynamic"]
    per_channel: bool = True


class Int8StaticConfig(Section):
    """Post-training int8 QDQ: weights per channel, activation ranges from training examples."""

    type: Literal["int8_static"]
    calibration_samples: Int = Field(
        256, ge=1, le=1_000_000, description="Training examples that set the activation ranges."
    )
    calibration_method: Annotated[str, OneOf(CALIBRATION_METHODS)] = "minmax"
    per_channel: bool = True
    recipe: Annotated[str, OneOf(QUANTIZE_RECIPES)] = Field(
        "auto",
        description="compute: Conv/MatMul/Gemm (and the Relu/pooling between them) static, elementwise "
        "arithmetic in float; full: every supported node static; transformer: MatMul/Gemm/Gather "
        "static, the MatMuls after GELU dynamic, norms/softmax in float; auto: transformer for "
        "graphs with attention, else compute.",
    )


class Int4Config(Section):
    """Weight-only int4 (ONNX Runtime's MatMulNBits / GatherBlockQuantized): 4 bits + one scale per block."""

    type: Literal["int4"]
    block_size: Int = Field(128, description="Weights per scale: a power of two, 16–256.")

    @field_validator("block_size")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value not in (16, 32, 64, 128, 256):
            raise ValueError(f"block_size must be one of 16, 32, 64, 128, 256, got {value}")
        return value


QuantizeConfig = Annotated[Int8DynamicConfig | Int8StaticConfig | Int4Config, Field(discriminator="type")]
#: Every quantizer: the union's ``type`` names (:mod:`deepseek_ray.quantization` registers one per class).
QUANTIZE_METHODS: tuple[str, ...] = tags(QuantizeConfig)


class ExportConfig(Section):
    """Export of the trained model, checked against torch on the test split, and its quantized variants.

    Each ``quantize`` entry becomes one more ONNX file beside ``model.onnx`` (``model.<type>.onnx``), made
    by ``deepseek_ray.quantization.quantize(model.onnx, method=type, calibration=..., **options)``.
    """

    formats: list[Annotated[str, OneOf(EXPORT_FORMATS)]] = Field(
        default_factory=lambda: ["onnx"],
        min_length=1,
        description="onnx (ONNX Runtime), torch_export (torch.export .pt2), "
        "tensorrt (needs TensorRT or onnxruntime-gpu).",
    )
    opset: Int = Field(18, ge=13, le=23)
    optimize_level: Int = Field(
        9, ge=0, le=9, description="0 = no graph optimisation, 7 = all of ONNX Runtime's, 8–9 = + transformer fusions."
    )
    parity_tolerance: Float = Field(
        1e-4,
        gt=0,
        description="Max |torch − exported| allowed on the test split: in probability (classification, where "
        "the classes must also be identical), or relative to the largest |prediction| (regression).",
    )
    quantize: list[QuantizeConfig] = Field(default_factory=list, description="Quantized variants of the ONNX model.")

    @model_validator(mode="after")
    def _consistent(self) -> ExportConfig:
        if len(set(self.formats)) != len(self.formats):
            raise ValueError(f"formats lists a format twice: {self.formats}")
        kinds = [item.type for item in self.quantize]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"quantize lists a type twice: {kinds}; allowed once each: {', '.join(QUANTIZE_METHODS)}")
        if self.quantize and "onnx" not in self.formats:
            raise ValueError("quantize works on the ONNX model: add onnx to formats")
        return self


# ----------------------------------------------------------------------------------------- serve
class BatchingConfig(Section):
    """Request batching in each replica (``serve.batch``), held under the latency threshold."""

    min_batch: Int = Field(1, ge=1, le=MAX_BATCH, description="The floor of the adaptive batch cap.")
    max_batch: Int = Field(32, ge=1, le=MAX_BATCH, description="The ceiling of the batch cap; 1 turns batching off.")
    latency_threshold_ms: Float = Field(
        100.0, gt=0, le=3_600_000, description="p99 target, end to end; past it requests are shed with 503."
    )
    adaptive: bool = Field(True, description="Move the cap and wait to hold the threshold; false: a fixed batch.")
    wait_ms: Float = Field(10.0, ge=0, le=60_000, description="The fixed batch's wait (adaptive: false).")

    @model_validator(mode="after")
    def _ordered(self) -> BatchingConfig:
        _not_above("min_batch", self.min_batch, "max_batch", self.max_batch)
        return self


class AutoscalingConfig(Section):
    """Replica count bounds for Serve's autoscaler."""

    min_replicas: Int = Field(1, ge=0, le=MAX_REPLICAS)
    max_replicas: Int = Field(2, ge=1, le=MAX_REPLICAS)
    target_ongoing_requests: Float = Field(16.0, gt=0, le=1_000_000)
    upscale_delay_s: Float = Field(10.0, ge=0, le=86_400, description="Load held this long before scaling out.")
    downscale_delay_s: Float = Field(60.0, ge=0, le=86_400, description="Idle this long before scaling in.")

    @model_validator(mode="after")
    def _ordered(self) -> AutoscalingConfig:
        _not_above("min_replicas", self.min_replicas, "max_replicas", self.max_replicas)
        return self


class LimitsConfig(Section):
    """What one request may carry and take; beyond it the answer is a 4xx (or 504) with the reason."""

    max_body_bytes: Int = Field(4 * 2**20, ge=64, le=2**31, description="Request body size (413 beyond).")
    max_examples: Int = Field(256, ge=1, le=MAX_BATCH, description="Examples in one request (413 beyond).")
    timeout_s: Float = Field(30.0, gt=0, le=3600, description="Time to answer one request (504 beyond).")


def _served_model(value: str) -> str:
    allowed = ("onnx", "torch_export", *QUANTIZE_METHODS)
    if value in allowed or value.startswith("models:/"):
        return value
    raise ValueError(f"got {value!r}; allowed: {', '.join(allowed)}, or models:/NAME/VERSION, models:/NAME@ALIAS")


#: the metrics a shadow comparison may use (deepseek_ray.eval): higher is better, except mae and rmse
SHADOW_METRICS = ("accuracy", "f1_score", "precision", "recall", "roc_auc", "mae", "rmse")


class ShadowConfig(Section):
    """A candidate served in the shadow of the live model (its own Serve app, ``<name>-shadow``), compared on
    the live traffic with labels from ``POST {route}/feedback``, and promoted when the evidence says so."""

    candidate: PathText | None = Field(
        None,
        min_length=1,
        description="The candidate: an exported .onnx file, a folder holding one, or models:/NAME/VERSION or "
        "models:/NAME@ALIAS. Unset: a new run's model becomes the candidate when the app is already live.",
    )
    fraction: Float = Field(0.1, ge=0, le=1, description="Share of the live requests mirrored to the candidate.")
    max_in_flight: Int = Field(64, ge=1, le=1_000_000, description="Mirrored examples out at once; beyond: dropped.")
    timeout_s: Float = Field(10.0, gt=0, le=3600, description="A mirrored call not answered by then is dropped.")
    metric: Literal[SHADOW_METRICS] | None = Field(  # type: ignore[valid-type]
        None, description="What is compared (default: accuracy, or rmse for regression)."
    )
    threshold: Float = Field(
        0.0, ge=-1, le=1e9, description="Promote only when candidate − live exceeds this (0: plain superiority)."
    )
    alpha: Float = Field(0.05, gt=0, lt=0.5, description="The decision's error rate, valid at every look.")
    auto_promote: bool = Field(False, description="Promote as soon as the decision is promote (else: the CLI).")
    log_dir: PathText | None = Field(None, description="Where the prediction log goes (default runs/NAME/shadow).")
    new_model: Literal["shadow", "replace"] = Field(
        "shadow",
        description="When `run` or `serve` finds the app already live: serve the new model as the candidate "
        "(shadow) or replace the live one.",
    )


class ServeConfig(Section):
    """The HTTP endpoint (Ray Serve) over the exported model."""

    route: str = Field("/predict", max_length=256, pattern=r"^/[A-Za-z0-9_\-/]*$")
    host: str = Field("127.0.0.1", min_length=1, max_length=253)
    port: Int = Field(8000, ge=1, le=65535)
    batching: BatchingConfig = BatchingConfig()
    autoscaling: AutoscalingConfig = AutoscalingConfig()
    limits: LimitsConfig = LimitsConfig()
    num_cpus: Float = Field(0.5, gt=0, le=MAX_CPUS, description="CPUs reserved per replica.")
    num_gpus: Float = Field(0.0, ge=0, le=MAX_CPUS, description="GPUs per replica (a share: replicas may share one).")
    threads: Int = Field(1, ge=1, le=256, description="ONNX Runtime's intra-op threads per replica.")
    max_queued_requests: Int = Field(
        64,
        ge=-1,
        le=1_000_000,
        description="Requests Serve queues before a replica takes them (503 beyond; -1: none).",
    )
    access_log: bool = Field(False, description="Serve's per-request access log lines (off: they cost per request).")
    ingress: Literal["proxy", "haproxy"] = Field(
        "proxy",
        description="Serve's HTTP ingress on the embedded Ray: its proxy, or the HAProxy ingress (3-4x faster "
        "here; its replicas listen on every interface). A cluster sets it where Ray starts (cluster.yaml).",
    )
    model: Annotated[
        str,
        AfterValidator(_served_model),
        WithJsonSchema(
            {
                "anyOf": [
                    {"enum": ["onnx", "torch_export", *QUANTIZE_METHODS]},
                    {"type": "string", "pattern": "^models:/.+"},
                ]
            }
        ),
    ] = Field(
        "onnx",
        description="What the endpoint serves: the fp32 ONNX model, the torch.export program (torch_export: "
        "run by torch, on the GPU with num_gpus), one of export.quantize's variants, or a registered version "
        "(models:/NAME@champion).",
    )
    precision: Literal["fp32", "fp16", "bf16"] = Field(
        "fp32",
        description="Autocast precision of a torch_export model (fp16/bf16 on a GPU); ONNX runs as exported.",
    )
    cuda_graphs: bool = Field(
        True,
        description="A torch_export model on a GPU replays CUDA graphs, one per power-of-two batch up to "
        "batching.max_batch (one launch per batch, not one per operator); false runs it op by op.",
    )
    shadow: ShadowConfig = ShadowConfig()

    @model_validator(mode="after")
    def _precision_needs_torch(self) -> ServeConfig:
        if self.precision != "fp32" and self.model != "torch_export":
            raise ValueError(
                f"serve.precision {self.precision} needs serve.model: torch_export (got {self.model}); "
                "ONNX models run as exported: use fp32, or export.quantize for smaller ones"
            )
        return self


# -------------------------------------------------------------------------------------- tracking
class TrackingConfig(Section):
    """MLflow tracking; ``config`` points at an ``mlflow_config.yaml`` whose keys override these."""

    enabled: bool = True
    config: FilePath | None = Field(None, description="mlflow_config.yaml, relative to the experiment file.")
    experiment_name: str | None = Field(None, min_length=1, max_length=256)
    tracking_uri: PathText = Field("sqlite:///mlflow.db", min_length=1)
    artifacts_location: PathText | None = None
    registered_model_name: str | None = Field(
        None, min_length=1, max_length=256, description="Defaults to the experiment name."
    )


class MlflowFileConfig(Section):
    """The promised ``mlflow_config.yaml``."""

    experiment_name: str | None = Field(None, min_length=1, max_length=256)
    tracking_uri: PathText | None = None
    artifacts_location: PathText | None = None
    registered_model_name: str | None = Field(None, min_length=1, max_length=256)


# ------------------------------------------------------------------------------------------ root
class ExperimentConfig(Section):
    """One experiment file: every stage of the pipeline.

    >>> cfg = ExperimentConfig(name='demo', data={'dataset': 'digits'}, train={'epochs': 2})
    >>> cfg.train.epochs, cfg.search.strategy.type
    (2, 'tpe')
    """

    name: str = Field(
        ...,
        max_length=MAX_NAME,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="Names the Ray job, Tune experiment, Serve app and MLflow experiment.",
    )
    seed: Int = Field(0, ge=0, le=MAX_SEED)
    output_dir: FilePath = Field(Path("runs"), description="Where artifacts go (relative to the working directory).")
    data: DataConfig
    search: SearchConfig = SearchConfig()
    train: TrainConfig = TrainConfig()
    export: ExportConfig = ExportConfig()
    serve: ServeConfig = ServeConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _served_model_is_exported(self) -> ExperimentConfig:
        # Only the torch.export and quantized choices are checked here: serving needs onnx in export.formats,
        # which the serve stage checks itself (a file without it still runs with --no-serve).
        program = ["torch_export"] if "torch_export" in self.export.formats else []
        exported = ["onnx", *program, *(q.type for q in self.export.quantize)]
        if self.serve.model not in exported and not self.serve.model.startswith("models:/"):
            raise ValueError(
                f"serve.model: {self.serve.model!r} is not exported by this file; allowed: "
                f"{', '.join(exported)} (export.formats, export.quantize)"
            )
        return self

    @model_validator(mode="after")
    def _metrics_are_reported(self) -> ExperimentConfig:
        # An experiment's trials train models, so they report what METRICS lists; a typo would only fail
        # after the first trial, as a missing key.
        metrics, modes = self.search.objectives()
        for metric, mode in zip(metrics, modes, strict=True):  # lengths agree (SearchConfig)
            if metric not in METRICS:
                raise ValueError(
                    f"search.metric: got {metric!r}; not a metric the trials report; allowed: "
                    f"{', '.join(METRICS.names())}"
                )
            best = METRICS[metric].mode
            if mode != best:
                raise ValueError(
                    f"search.mode: {metric} is better when {'higher' if best == 'max' else 'lower'}: "
                    f"use mode {best}, got {mode}"
                )
        return self

    @property
    def run_dir(self) -> Path:
        """The folder holding this experiment's artifacts: ``output_dir/name``."""
        return self.output_dir / self.name
