"""Search-space files: YAML → an Optuna define-by-run function, with conditional NAS parameters.

A NAS space (``type: nas``) samples a number of cells, then one op per node of each cell — a
conditional space, which is why it is define-by-run (Ray's OptunaSearch refuses ``sample_from``).
Every other key is a hyperparameter domain:

==============================  ==========================================
``{choice: [a, b, c]}``          one of the values
``{grid: [a, b, c]}``            one of the values (every one, for grid search)
``{uniform: [low, high]}``       a float
``{loguniform: [low, high]}``    a float, log scale
``{quniform: [low, high, q]}``   a float on a grid of step ``q``
``{randint: [low, high]}``       an integer, both ends included
a plain value                    a constant
==============================  ==========================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_yaml
from ..models import Architecture
from ..nn import OPS

DOMAINS = ("choice", "grid", "uniform", "loguniform", "quniform", "randint")
# Hyperparameters a trial knows how to use; anything else in a space file is a typo.
HYPERPARAMETERS = ("lr", "weight_decay", "dropout", "batch_size", "warmup_steps")
NAS_KEYS = ("type", "ops", "cells", "nodes", "channels")


@dataclass(frozen=True)
class Domain:
    """One searchable parameter: its kind (one of :data:`DOMAINS`) and its arguments."""

    kind: str
    args: tuple

    def suggest(self, trial: Any, name: str) -> Any:
        """Draw this parameter from an Optuna trial (define-by-run)."""
        if self.kind in ("choice", "grid"):
            return trial.suggest_categorical(name, list(self.args))
        if self.kind == "uniform":
            return trial.suggest_float(name, *self.args)
        if self.kind == "loguniform":
            return trial.suggest_float(name, *self.args, log=True)
        if self.kind == "quniform":
            low, high, step = self.args
            return trial.suggest_float(name, low, high, step=step)
        return trial.suggest_int(name, *self.args)  # randint

    def values(self) -> list[Any] | None:
        """The finite set of values, for categorical domains."""
        return list(self.args) if self.kind in ("choice", "grid") else None


def parse_domain(key: str, spec: Any, source: str) -> Domain:
    """Turn ``{loguniform: [1e-4, 1e-2]}`` (or a constant) into a :class:`Domain`."""
    if not isinstance(spec, dict):
        return Domain("choice", (spec,))
    if len(spec) != 1 or next(iter(spec)) not in DOMAINS:
        raise ConfigError(source, [f"{key}: got {spec!r}; a domain is one of {', '.join(DOMAINS)}, e.g. {{choice: [16, 32]}}"])
    kind, args = next(iter(spec.items()))
    args = tuple(args) if isinstance(args, (list, tuple)) else (args,)
    want = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2}.get(kind)
    if want is not None and len(args) != want:
        raise ConfigError(source, [f"{key}.{kind}: got {list(args)!r}; needs {want} numbers"])
    if kind in ("choice", "grid") and not args:
        raise ConfigError(source, [f"{key}.{kind}: needs at least one value"])
    if kind in ("uniform", "loguniform", "quniform", "randint") and not args[0] < args[1]:
        raise ConfigError(source, [f"{key}.{kind}: low ({args[0]}) must be below high ({args[1]})"])
    if kind == "loguniform" and args[0] <= 0:
        raise ConfigError(source, [f"{key}.loguniform: low must be > 0, got {args[0]}"])
    return Domain(kind, args)


@dataclass
class SearchSpace:
    """A parsed search-space file.

    >>> space = SearchSpace.from_mapping({'type': 'nas', 'ops': ['conv3x3', 'identity'],
    ...     'cells': {'choice': [2, 3]}, 'channels': {'choice': [16]}, 'lr': {'loguniform': [1e-4, 1e-2]}})
    >>> space.architecture({'cells': 2, 'channels': 16, 'cell0_op0': 'conv3x3', 'cell1_op0': 'identity'})
    'c16|conv3x3|identity'
    """

    kind: str
    ops: list[str] = field(default_factory=list)
    structure: dict[str, Domain] = field(default_factory=dict)  # cells, nodes, channels
    hyperparameters: dict[str, Domain] = field(default_factory=dict)
    source: str = "<space>"

    @classmethod
    def load(cls, path: str | Path) -> "SearchSpace":
        return cls.from_mapping(load_yaml(path), str(path))

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], source: str = "<space>") -> "SearchSpace":
        kind = raw.get("type", "nas")
        if kind != "nas":
            raise ConfigError(source, [f"type: got {kind!r}; allowed: nas"])
        unknown = [k for k in raw if k not in NAS_KEYS + HYPERPARAMETERS]
        if unknown:
            allowed = ", ".join(NAS_KEYS + HYPERPARAMETERS)
            raise ConfigError(source, [f"{k}: unknown key; allowed keys: {allowed}" for k in unknown])
        ops = list(raw.get("ops") or [])
        bad_ops = [op for op in ops if op not in OPS]
        if not ops or bad_ops:
            raise ConfigError(source, [f"ops: got {bad_ops or ops!r}; choose from the registered ops: {', '.join(sorted(OPS))}"])
        structure = {
            key: parse_domain(key, raw.get(key, default), source)
            for key, default in (("cells", {"choice": [2, 3]}), ("nodes", 1), ("channels", {"choice": [16, 32]}))
        }
        hyper = {key: parse_domain(key, raw[key], source) for key in HYPERPARAMETERS if key in raw}
        hyper.setdefault("lr", Domain("loguniform", (1e-4, 1e-2)))
        return cls(kind, ops, structure, hyper, source)

    def define_by_run(self, trial: Any) -> None:
        """Sample one configuration into an Optuna trial: structure first, then an op per node."""
        cells = self.structure["cells"].suggest(trial, "cells")
        nodes = self.structure["nodes"].suggest(trial, "nodes")
        self.structure["channels"].suggest(trial, "channels")
        for cell in range(cells):
            for node in range(nodes):
                trial.suggest_categorical(f"cell{cell}_op{node}", self.ops)
        for name, domain in self.hyperparameters.items():
            domain.suggest(trial, name)

    def architecture(self, params: dict[str, Any]) -> str:
        """The architecture string of a sampled configuration."""
        nodes = params.get("nodes", 1)
        cells = tuple(tuple(params[f"cell{c}_op{n}"] for n in range(nodes)) for c in range(params["cells"]))
        return Architecture(int(params["channels"]), cells).encode()
