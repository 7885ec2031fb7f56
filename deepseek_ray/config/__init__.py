"""The experiment file: schema, loading, validation and JSON Schema export.

>>> from deepseek_ray.config import ExperimentConfig
>>> ExperimentConfig(name='x', data={'dataset': 'digits'}).data.dataset
'digits'

``config`` is imported by every stage and imports none of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .schema import (
    DATA_KINDS,
    OPTIONS_KIND,
    STRATEGIES,
    TEXT_AUGMENTATIONS,
    TRAINED_TOKENIZERS,
    AshaSchedulerConfig,
    BatchingConfig,
    BudgetConfig,
    DataConfig,
    ExperimentConfig,
    ExportConfig,
    MlflowFileConfig,
    SearchConfig,
    ServeConfig,
    TabularDataConfig,
    TextDataConfig,
    TrackingConfig,
    TrainConfig,
    WindowConfig,
    parse_duration,
)

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "DataConfig",
    "TextDataConfig",
    "WindowConfig",
    "TabularDataConfig",
    "DATA_KINDS",
    "OPTIONS_KIND",
    "TEXT_AUGMENTATIONS",
    "SearchConfig",
    "TrainConfig",
    "ExportConfig",
    "ServeConfig",
    "TrackingConfig",
    "BatchingConfig",
    "BudgetConfig",
    "AshaSchedulerConfig",
    "STRATEGIES",
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


def _describe(error: dict[str, Any]) -> str:
    # Drop the discriminator tag pydantic inserts for tagged unions: the user wrote no such key.
    loc = [str(p) for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
    path = ".".join(loc) or "(top level)"
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key (check the spelling; `deepseek-ray schema` lists the allowed keys)"
    if error["type"] == "missing":
        return f"{path}: required, but missing"
    return f"{path}: got {error.get('input')!r}; {message}"


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file and the line.

    >>> import tempfile, os
    >>> f = tempfile.NamedTemporaryFile('w', suffix='.yaml', delete=False); _ = f.write('a: 1'); f.close()
    >>> load_yaml(f.name)
    {'a': 1}
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), [f"file not found: {path}"])
    try:
        raw = yaml.safe_load(path.read_text())
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


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> ExperimentConfig:
    """Load, validate and resolve an experiment file.

    Paths inside the file (``search.space``, a file ``data.dataset``, ``tracking.config``) are made
    absolute against the file's folder, once, here in the driver: trials run in their own directories.
    A local ``data.text.tokenizer`` folder is resolved the same way. ``output_dir`` and a relative sqlite
    ``tracking_uri`` are made absolute against the working directory.
    ``overrides`` are dotted keys, e.g. ``{'train.epochs': 1}``.

    >>> cfg = load('examples/quickstart.yaml')  # doctest: +SKIP
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
    if dataset_file.suffix in {".csv", ".parquet", ".jsonl", ".json", ".gz"} or dataset_file.exists():
        cfg.data.dataset = str(dataset_file)
    if cfg.data.text is not None and cfg.data.text.tokenizer not in TRAINED_TOKENIZERS:
        tokenizer = _resolve(base, cfg.data.text.tokenizer)
        if tokenizer.exists():  # a local folder or tokenizer.json; anything else is a hub name
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
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def _merge_mlflow_file(cfg: ExperimentConfig) -> None:
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
