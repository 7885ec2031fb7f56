"""Search-space files: YAML → an Optuna define-by-run function or a HyperOpt nested space.

Three kinds of file, picked by ``type:``

``nas``     a cell network over the op registry: a number of cells, then an op per node of each cell
            (a conditional space), plus training hyperparameters and ``dropout``.
``hpo``     ``model: <registered builder>`` and ranges for that builder's keyword arguments plus the
            training hyperparameters (``lr``, ``weight_decay``, ``batch_size``, ``warmup_steps``);
            every key is checked against the builder's signature.
``params``  free parameters for any objective function (benchmarks, user code).

Conditional spaces are why both forms exist: Ray's OptunaSearch and HyperOptSearch refuse
``tune.sample_from``, so Optuna gets a define-by-run function and HyperOpt nested ``hp.choice``.
Every other key is a domain:

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

import inspect
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ConfigError, load_yaml
from ..models import MODELS, Architecture
from ..nn import OPS

DOMAINS = ("choice", "grid", "uniform", "loguniform", "quniform", "randint")
KINDS = ("nas", "hpo", "params")
# What the trial's optimiser uses; everything else in a nas/hpo file goes to the model builder.
TRAINING_KEYS = ("lr", "weight_decay", "batch_size", "warmup_steps")
NAS_STRUCTURE = ("cells", "nodes", "channels")
# Builder arguments that leave the weights' shapes alone: trials may differ in them under PBT.
SHAPE_FREE_KWARGS = ("dropout",)
# What PBT may change in a trial that continues from copied weights (a nas/hpo space).
PBT_KEYS = ("lr", "weight_decay", "dropout")
# Builder arguments that come from the data (DatasetSplits.model_inputs) or from the NAS genotype.
DERIVED_KWARGS = ("in_channels", "num_classes", "in_features", "vocab_size", "max_len", "out_features", "arch")


@dataclass(frozen=True)
class Domain:
    """One searchable parameter: its kind (one of :data:`DOMAINS`) and its arguments.

    >>> Domain('randint', (1, 3)).to_hyperopt('layers') is not None
    True
    """

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

    def to_hyperopt(self, label: str) -> Any:
        """The same domain as a HyperOpt expression (``label`` must be unique in the space)."""
        from hyperopt import hp
        from hyperopt.pyll import scope

        if self.kind in ("choice", "grid"):
            return hp.choice(label, list(self.args))
        if self.kind == "uniform":
            return hp.uniform(label, *self.args)
        if self.kind == "loguniform":
            return hp.loguniform(label, math.log(self.args[0]), math.log(self.args[1]))
        if self.kind == "quniform":
            return hp.quniform(label, *self.args)
        return scope.int(hp.randint(label, self.args[0], self.args[1] + 1))  # hyperopt's high is exclusive

    def sample(self, rng: random.Random) -> Any:
        """One value drawn uniformly from the domain (log-uniformly for ``loguniform``)."""
        if self.kind in ("choice", "grid"):
            return rng.choice(self.args)
        if self.kind == "randint":
            return rng.randint(*self.args)
        low, high = self.args[:2]
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        return self.clip(rng.uniform(low, high))

    def clip(self, value: float) -> Any:
        """``value`` brought inside the domain's range and onto its grid (quniform step, randint)."""
        low, high = self.args[:2]
        if self.kind == "quniform":
            value = low + round((value - low) / self.args[2]) * self.args[2]
        if self.kind == "randint":
            value = round(value)
        return min(max(value, low), high)

    def perturb(
        self,
        value: Any,
        rng: random.Random,
        factors: tuple[float, float] = (0.8, 1.2),
        resample_probability: float = 0.25,
    ) -> Any:
        """PBT's explore step, as in Ray Tune's ``PopulationBasedTraining``: with ``resample_probability``
        draw afresh; else scale a number by one of ``factors`` (clipped to the domain), or move a
        categorical value to a neighbouring one.

        >>> lr = Domain('loguniform', (1e-4, 1e-2))
        >>> round(lr.perturb(1e-3, random.Random(0), resample_probability=0.0), 6) in (0.0008, 0.0012)
        True
        >>> Domain('choice', (16, 32, 64)).perturb(32, random.Random(1), resample_probability=0.0) in (16, 64)
        True
        """
        if rng.random() < resample_probability:
            return self.sample(rng)
        if self.kind in ("choice", "grid"):
            index = list(self.args).index(value) + rng.choice((-1, 1))
            return self.args[min(max(index, 0), len(self.args) - 1)]
        return self.clip(value * rng.choice(factors))

    def values(self) -> list[Any] | None:
        """The finite set of values (categorical domains and ``randint``), or None."""
        if self.kind in ("choice", "grid"):
            return list(self.args)
        if self.kind == "randint":
            return list(range(self.args[0], self.args[1] + 1))
        return None

    def finite_values(self) -> list[Any]:
        """:meth:`values` of a domain already checked to be finite (the NAS structure, a grid's domains)."""
        values = self.values()
        if values is None:
            raise ValueError(f"a {self.kind} domain has no finite set of values")
        return values


def parse_domain(key: str, spec: Any, source: str) -> Domain:
    """Turn ``{loguniform: [1e-4, 1e-2]}`` (or a constant) into a :class:`Domain`.

    >>> parse_domain('lr', {'loguniform': [1e-4, 1e-2]}, 'x.yaml')
    Domain(kind='loguniform', args=(0.0001, 0.01))
    """
    if not isinstance(spec, dict):
        return Domain("choice", (spec,))
    if len(spec) != 1 or next(iter(spec)) not in DOMAINS:
        raise ConfigError(
            source, [f"{key}: got {spec!r}; a domain is one of {', '.join(DOMAINS)}, e.g. {{choice: [16, 32]}}"]
        )
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


def builder_kwargs(model: str, source: str) -> list[str]:
    """The searchable keyword arguments of a registered model builder (data-derived ones excluded).

    >>> builder_kwargs('cellnet', 'x.yaml')
    ['dropout']
    """
    if model not in MODELS:
        raise ConfigError(source, [f"model: unknown {model!r}; registered models: {', '.join(sorted(MODELS))}"])
    parameters = inspect.signature(MODELS[model]).parameters.values()
    named = (p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return [name for name in named if name not in DERIVED_KWARGS]


@dataclass
class SearchSpace:
    """A parsed search-space file.

    >>> space = SearchSpace.from_mapping({'type': 'nas', 'ops': ['conv3x3', 'identity'],
    ...     'cells': {'choice': [2, 3]}, 'channels': {'choice': [16]}, 'lr': {'loguniform': [1e-4, 1e-2]}})
    >>> params = {'cells': 2, 'channels': 16, 'cell0_op0': 'conv3x3', 'cell1_op0': 'identity', 'lr': 1e-3}
    >>> space.architecture(params)
    'c16|conv3x3|identity'
    >>> space.model_spec(params, {'in_channels': 1, 'num_classes': 10})['arch']
    'c16|conv3x3|identity'
    """

    kind: str
    model: str | None = None  # the builder a trial trains (cellnet for nas)
    ops: list[str] = field(default_factory=list)
    structure: dict[str, Domain] = field(default_factory=dict)  # nas: cells, nodes, channels
    hyperparameters: dict[str, Domain] = field(default_factory=dict)
    source: str = "<space>"

    @classmethod
    def load(cls, path: str | Path) -> SearchSpace:
        """Read and validate a search-space file."""
        return cls.from_mapping(load_yaml(path), str(path))

    @classmethod
    def from_mapping(cls, raw: dict[str, Any], source: str = "<space>") -> SearchSpace:
        """Validate a parsed space; every error names its key and what is allowed."""
        kind = raw.get("type", "nas")
        if kind not in KINDS:
            raise ConfigError(source, [f"type: got {kind!r}; allowed: {', '.join(KINDS)}"])
        body = {k: v for k, v in raw.items() if k != "type"}
        if kind == "params":
            return cls(kind, hyperparameters={k: parse_domain(k, v, source) for k, v in body.items()}, source=source)
        if kind == "nas":
            return cls._nas(body, source)
        return cls._hpo(body, source)

    @classmethod
    def _nas(cls, body: dict[str, Any], source: str) -> SearchSpace:
        allowed = ("ops",) + NAS_STRUCTURE + TRAINING_KEYS + tuple(builder_kwargs("cellnet", source))
        _reject_unknown(body, allowed, source)
        ops = list(body.get("ops") or [])
        bad_ops = [op for op in ops if op not in OPS]
        if not ops or bad_ops:
            raise ConfigError(
                source, [f"ops: got {bad_ops or ops!r}; choose from the registered ops: {', '.join(sorted(OPS))}"]
            )
        structure = {
            key: parse_domain(key, body.get(key, default), source)
            for key, default in (("cells", {"choice": [2, 3]}), ("nodes", 1), ("channels", {"choice": [16, 32]}))
        }
        for key, domain in structure.items():
            values = domain.values()
            if values is None or not all(isinstance(v, int) and v >= 1 for v in values):
                raise ConfigError(
                    source,
                    [
                        f"{key}: got {domain.kind} {list(domain.args)}; "
                        "needs whole numbers ≥ 1 (choice, grid or randint)"
                    ],
                )
        hyper = {
            key: parse_domain(key, value, source) for key, value in body.items() if key not in ("ops",) + NAS_STRUCTURE
        }
        hyper.setdefault("lr", Domain("loguniform", (1e-4, 1e-2)))
        return cls("nas", "cellnet", ops, structure, hyper, source)

    @classmethod
    def _hpo(cls, body: dict[str, Any], source: str) -> SearchSpace:
        model = body.pop("model", None)
        if model is None:
            raise ConfigError(source, [f"model: required for type hpo; registered models: {', '.join(sorted(MODELS))}"])
        derived = [k for k in body if k in DERIVED_KWARGS]
        if derived:
            raise ConfigError(
                source, [f"{k}: comes from the data (or the NAS genotype), not the search space" for k in derived]
            )
        _reject_unknown(body, TRAINING_KEYS + tuple(builder_kwargs(str(model), source)), source, f"for model {model!r}")
        hyper = {key: parse_domain(key, value, source) for key, value in body.items()}
        hyper.setdefault("lr", Domain("loguniform", (1e-4, 1e-2)))
        return cls("hpo", str(model), hyperparameters=hyper, source=source)

    # ----------------------------------------------------------------------------- PBT
    def varying_architecture(self) -> list[str]:
        """The keys that give trials different architectures (weight shapes): what PBT cannot allow.

        >>> SearchSpace.from_mapping({'type': 'nas', 'ops': ['conv3x3', 'identity'], 'cells': 2}).varying_architecture()
        ['channels', 'ops']
        """
        if self.kind == "params":
            return []
        shaping = {
            k: d
            for k, d in {**self.structure, **self.hyperparameters}.items()
            if k not in TRAINING_KEYS and k not in SHAPE_FREE_KWARGS
        }
        varying = [
            key for key, domain in shaping.items() if (values := domain.values()) is None or len(set(values)) > 1
        ]
        return varying + (["ops"] if self.kind == "nas" and len(self.ops) > 1 else [])

    def perturbable(self, keys: list[str] | None = None) -> dict[str, Domain]:
        """The domains PBT perturbs: ``keys``, or by default every searched float domain among them
        (in a nas/hpo space only :data:`PBT_KEYS` may change once weights are copied).

        >>> space = SearchSpace.from_mapping({'type': 'hpo', 'model': 'mlp', 'hidden': 32,
        ...     'dropout': {'uniform': [0.0, 0.5]}, 'batch_size': {'choice': [16, 32]}})
        >>> sorted(space.perturbable())
        ['dropout', 'lr']
        """
        allowed = {
            k: d
            for k, d in self.hyperparameters.items()
            if (self.kind == "params" or k in PBT_KEYS) and not (d.kind == "choice" and len(d.args) == 1)
        }
        if keys is None:
            return {k: d for k, d in allowed.items() if d.kind in ("uniform", "loguniform", "quniform")}
        unknown = [k for k in keys if k not in allowed]
        if unknown:
            raise ConfigError(
                self.source,
                [
                    f"search.scheduler.hyperparameters: cannot perturb {k!r}; allowed here: "
                    f"{', '.join(allowed) or 'none (nothing is searched)'}"
                    for k in unknown
                ],
            )
        return {k: allowed[k] for k in keys}

    # ------------------------------------------------------------------------ sampling
    def max_cells(self) -> int:
        return max(self.structure["cells"].finite_values()) if self.kind == "nas" else 0

    def define_by_run(self, trial: Any) -> None:
        """Sample one configuration into an Optuna trial: structure first, then an op per node."""
        if self.kind == "nas":
            cells = self.structure["cells"].suggest(trial, "cells")
            nodes = self.structure["nodes"].suggest(trial, "nodes")
            self.structure["channels"].suggest(trial, "channels")
            for cell in range(cells):
                for node in range(nodes):
                    trial.suggest_categorical(f"cell{cell}_op{node}", self.ops)
        for name, domain in self.hyperparameters.items():
            domain.suggest(trial, name)

    def to_hyperopt(self) -> dict[str, Any]:
        """The space as HyperOpt expressions; the NAS structure is a nested ``hp.choice``.

        HyperOptSearch returns the nested choice flattened (``'structure/cells'``):
        :func:`.trainable.unnest` turns it back into flat parameters.
        """
        from hyperopt import hp

        space = {name: domain.to_hyperopt(name) for name, domain in self.hyperparameters.items()}
        if self.kind == "nas":
            options = []
            for cells in self.structure["cells"].finite_values():
                for nodes in self.structure["nodes"].finite_values():
                    option = {"cells": cells, "nodes": nodes}
                    for cell in range(cells):
                        for node in range(nodes):
                            key = f"cell{cell}_op{node}"
                            option[key] = hp.choice(f"c{cells}n{nodes}_{key}", self.ops)
                    options.append(option)
            space["structure"] = hp.choice("structure", options)
            space["channels"] = self.structure["channels"].to_hyperopt("channels")
        return space

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's finite values, for grid search (NAS: ops for the largest network)."""
        finite = {**self.structure, **self.hyperparameters}
        continuous = [
            f"{k}: grid search needs choice, grid or randint domains, got {d.kind}"
            for k, d in finite.items()
            if d.values() is None
        ]
        if continuous:
            raise ConfigError(self.source, continuous)
        grid = {key: domain.finite_values() for key, domain in finite.items()}
        nodes = max(self.structure["nodes"].finite_values()) if self.kind == "nas" else 0
        for cell in range(self.max_cells()):
            for node in range(nodes):
                grid[f"cell{cell}_op{node}"] = list(self.ops)
        return grid

    # ------------------------------------------------------------------------- decoding
    def architecture(self, params: dict[str, Any]) -> str:
        """The readable model of a configuration: an architecture string (nas) or ``model(k=v, ...)``."""
        if self.kind == "nas":
            nodes = params.get("nodes", 1)
            cells = tuple(tuple(params[f"cell{c}_op{n}"] for n in range(nodes)) for c in range(params["cells"]))
            return Architecture(int(params["channels"]), cells).encode()
        if self.kind == "hpo":
            shown = ", ".join(f"{k}={v}" for k, v in self.model_kwargs(params).items())
            return f"{self.model}({shown})"
        return ""

    def model_kwargs(self, params: dict[str, Any]) -> dict[str, Any]:
        """The configuration's keyword arguments for the model builder (training keys left out; in a NAS
        space also the cell structure, which reaches the builder as ``arch``)."""
        if self.kind != "nas":  # an HPO space's `channels` or `cells` are plain builder arguments
            return {k: v for k, v in params.items() if k not in TRAINING_KEYS}
        skip = set(TRAINING_KEYS) | set(NAS_STRUCTURE) | {"structure"}
        return {k: v for k, v in params.items() if k not in skip and not k.startswith("cell")}

    def model_spec(self, params: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
        """``build_model`` spec of a configuration, given the data-derived ``inputs``."""
        if self.model is None:
            raise ValueError(f"{self.source}: a 'params' space has no model to build")
        spec = {"type": self.model, **inputs, **self.model_kwargs(params)}
        if self.kind == "nas":
            spec["arch"] = self.architecture(params)
        accepted = inspect.signature(MODELS[self.model]).parameters
        return {k: v for k, v in spec.items() if k == "type" or k in accepted}


def _reject_unknown(body: dict[str, Any], allowed: tuple[str, ...], source: str, where: str = "") -> None:
    unknown = [k for k in body if k not in allowed]
    if unknown:
        suffix = f" {where}" if where else ""
        raise ConfigError(source, [f"{k}: unknown key{suffix}; allowed keys: {', '.join(allowed)}" for k in unknown])
