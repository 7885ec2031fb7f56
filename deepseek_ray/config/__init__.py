"""The experiment file: schema, loading, validation and JSON Schema export.

>>> from deepseek_ray.config import ExperimentConfig
>>> ExperimentConfig(name='x', data={'dataset': 'digits'}).data.dataset
'digits'

``config`` is imported by every stage and imports none of them: the lists of allowed values live in
registries (:mod:`.registries`) that the implementing modules fill, looked up when a file is validated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

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
    Metric,
)
from .registry import Registry
from .schema import (
    OPTIONS_KIND,
    POPULATION_SCHEDULERS,
    QUANTIZE_METHODS,
    TEXT_AUGMENTATIONS,
    AshaSchedulerConfig,
    BatchingConfig,
    BudgetConfig,
    DataConfig,
    ExperimentConfig,
    ExportConfig,
    FifoSchedulerConfig,
    HyperbandSchedulerConfig,
    MlflowFileConfig,
    Pb2SchedulerConfig,
    PbtSchedulerConfig,
    SearchConfig,
    ServeConfig,
    TabularDataConfig,
    TextDataConfig,
    TrackingConfig,
    TrainConfig,
    WindowConfig,
    fits_the_filesystem,
    parse_duration,
    text_augmentation,
)

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "DataConfig",
    "TextDataConfig",
    "WindowConfig",
    "TabularDataConfig",
    "OPTIONS_KIND",
    "TEXT_AUGMENTATIONS",
    "text_augmentation",
    "fits_the_filesystem",
    "SearchConfig",
    "TrainConfig",
    "ExportConfig",
    "ServeConfig",
    "TrackingConfig",
    "BatchingConfig",
    "BudgetConfig",
    "AshaSchedulerConfig",
    "FifoSchedulerConfig",
    "HyperbandSchedulerConfig",
    "PbtSchedulerConfig",
    "Pb2SchedulerConfig",
    "POPULATION_SCHEDULERS",
    "Registry",
    "Metric",
    "KINDS",
    "STRATEGIES",
    "METRICS",
    "TRAINED_TOKENIZERS",
    "BIN_STRATEGIES",
    "OPTIMIZERS",
    "LR_SCHEDULES",
    "COMPILE_MODES",
    "EXPORT_FORMATS",
    "QUANTIZE_METHODS",
    "CALIBRATION_METHODS",
    "QUANTIZE_RECIPES",
    "load",
    "load_yaml",
    "json_schema",
    "parse_duration",
]


class ConfigError(ValueError):
    """An invalid experiment file. ``errors`` holds one line per problem: path, bad value, what is allowed.

    >>> try:
    ...     validate_mapping({'name': 'x', 'data': {}, 'train': {'epochs': 'ten'}})
    ... except ConfigError as err:
    ...     print(err.errors[0])
    train.epochs: got 'ten'; Input should be a valid integer, unable to parse string as an integer
    """

    def __init__(self, source: str, errors: list[str]):
        self.source = source
        self.errors = errors
        super().__init__(f"{source}: {len(errors)} error(s)\n" + "\n".join(f"  - {e}" for e in errors))


def _shown(value: Any, limit: int = 80) -> str:
    """``repr(value)``; a long one cut to ``limit`` characters, saying how long it was (a 5,000-character name
    stays readable).

    >>> _shown('x' * 100, 12)
    "'xxxxxxxxxx'… (100 characters)"
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    length = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return repr(value[: limit - 2]) + "…" + length if isinstance(value, str) else text[: limit - 1] + "…"


def _describe(error: ErrorDetails) -> str:
    # Drop the discriminator tag pydantic inserts for tagged unions: the user wrote no such key.
    loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    path = ".".join(loc) or "(top level)"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key (check the spelling; `deepseek-ray schema` lists the allowed keys)"
    if error["type"] == "missing":
        return f"{path}: required, but missing"
    if not loc and re.match(r"^[a-z_]+(\.[a-z_]+)+: ", message):
        return message  # a check across sections names its own field
    return f"{path}: got {_shown(error.get('input'))}; {message}"


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *defaults` may be overridden key by key
                continue
            key = self.construct_object(key_node, deep=deep)
            try:
                seen = first_line.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if seen != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {seen + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep=deep)


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the filesystem
        return False


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file and the line; a key given twice is an error.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False); _ = f.write('a: 1'); f.close()
    >>> load_yaml(f.name)
    {'a': 1}
    >>> _ = open(f.name, 'w').write('a: 1\\nb: 2\\na: 3')
    >>> load_yaml(f.name)
    Traceback (most recent call last):
    ...
    deepseek_ray.config.ConfigError: ... 1 error(s)
      - not valid YAML: line 3, column 1: duplicate key 'a' (first given on line 1)
    """
    path = Path(path)
    if not _is_file(path):
        raise ConfigError(_shown(str(path)), [f"file not found: {_shown(str(path))}"])
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(str(path), [f"not valid YAML: {where}{getattr(err, 'problem', err)}"]) from None
    if raw is None:
        raise ConfigError(str(path), ["the file is empty; an experiment needs at least `name:` and `data:`"])
    if not isinstance(raw, dict):
        raise ConfigError(str(path), [f"the top level must be a mapping of sections, got {type(raw).__name__}"])
    return raw


def validate_mapping(raw: dict[str, Any], source: str = "<config>") -> ExperimentConfig:
    """Validate a parsed experiment mapping; raise :class:`ConfigError` listing every problem."""
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(source, [_describe(e) for e in err.errors()]) from None


def _resolve(base: Path, value: Path | str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (base / path).resolve()


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # the schema bounds names and paths; joined to a deep folder one may still be too long
        return False


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load, validate and resolve an experiment file.

    Paths inside the file (``search.space``, a file ``data.dataset``, ``tracking.config``) are made
    absolute against the file's folder, once, here in the driver: trials run in their own directories.
    A local ``data.text.tokenizer`` folder is resolved the same way. ``output_dir`` and a relative sqlite
    ``tracking_uri`` are made absolute against the working directory.
    ``overrides`` are dotted keys, e.g. ``{'train.epochs': 1}``.

    >>> import deepseek_ray
    >>> quickstart = Path(deepseek_ray.__file__).parents[1] / 'examples' / 'quickstart.yaml'  # the repo's copy
    >>> cfg = load(quickstart, overrides={'train.epochs': 1})
    >>> cfg.name, cfg.train.epochs, cfg.search.space.is_absolute(), cfg.search.space.name
    ('mnist-quickstart', 1, True, 'mnist_cnn.yaml')
    """
    path = Path(path)
    raw = load_yaml(path)
    for dotted, value in (overrides or {}).items():
        node = raw
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    cfg = validate_mapping(raw, str(path))
    base = path.resolve().parent
    cfg.search.space = _resolve(base, cfg.search.space)
    dataset_file = _resolve(base, cfg.data.dataset)
    if dataset_file.suffix in {".csv", ".parquet", ".jsonl", ".json", ".gz"} or _exists(dataset_file):
        cfg.data.dataset = str(dataset_file)
    if cfg.data.text is not None and cfg.data.text.tokenizer not in TRAINED_TOKENIZERS:
        tokenizer = _resolve(base, cfg.data.text.tokenizer)
        if _exists(tokenizer):  # a local folder or tokenizer.json; anything else is a hub name
            cfg.data.text.tokenizer = str(tokenizer)
    cfg.output_dir = cfg.output_dir.expanduser().resolve()
    if cfg.tracking.config is not None:
        cfg.tracking.config = _resolve(base, cfg.tracking.config)
        _merge_mlflow_file(cfg)
    cfg.tracking.tracking_uri = absolute_sqlite_uri(cfg.tracking.tracking_uri)
    location = cfg.tracking.artifacts_location
    if location and "://" not in location:
        cfg.tracking.artifacts_location = str(Path(location).expanduser().resolve())
    return cfg


def absolute_sqlite_uri(uri: str) -> str:
    """``sqlite:///rel.db`` → ``sqlite:////abs/rel.db`` (resolved against the working directory).

    >>> absolute_sqlite_uri('http://mlflow:5000')
    'http://mlflow:5000'
    """
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def _merge_mlflow_file(cfg: ExperimentConfig) -> None:
    if cfg.tracking.config is None:
        return
    source = str(cfg.tracking.config)
    try:
        extra = MlflowFileConfig.model_validate(load_yaml(cfg.tracking.config))
    except ValidationError as err:
        raise ConfigError(source, [_describe(e) for e in err.errors()]) from None
    for key, value in extra.model_dump(exclude_none=True).items():
        setattr(cfg.tracking, key, value)


def json_schema() -> str:
    """The experiment file's JSON Schema, as text.

    >>> '"ExperimentConfig"' in json_schema()
    True
    """
    return json.dumps(ExperimentConfig.model_json_schema(), indent=2)
