"""Kinds of data: one registered class per kind, owning everything that differs between kinds.

Ludwig gives each feature type one class; here each kind of data (image, tabular, text, time series) is
one :class:`DataKind` subclass in its own module, registered in :data:`KINDS` under its name. The stages
ask the kind instead of switching on a string:

=====================  ==============================================================================
stage                  asks the kind for
=====================  ==============================================================================
data                   :meth:`~DataKind.split`: the splits, with what is fitted on the training split
search, train          :meth:`~DataKind.model_inputs`: the data-derived arguments of a model builder
baseline               :meth:`~DataKind.baseline`: a simple model scored on the same test split
export                 :meth:`~DataKind.input_spec` (kept in the metadata), :meth:`~DataKind.example_input`
serve                  :attr:`~DataKind.parser` (request → model inputs), :meth:`~DataKind.reply`,
                       :meth:`~DataKind.tensor_metadata` (Open Inference Protocol), :meth:`~DataKind.request_hint`
=====================  ==============================================================================

Adding a kind is one module with one subclass and ``@register_kind('name')``; the export metadata records
the class by import path (``kind_class``), so a Serve replica on any node imports the module that defines it
(a kind outside any installed package travels to the replicas with them: Ray's ``py_modules``).

>>> from deepseek_ray.data import KINDS, load_dataset
>>> {'image', 'tabular', 'text', 'timeseries'} <= set(KINDS.names())
True
>>> kind = load_dataset('digits').kind
>>> kind.name, kind.import_path
('image', 'deepseek_ray.data.image:ImageKind')
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from ..config.registries import KINDS

if TYPE_CHECKING:
    from .datasets import DatasetSplits


class BadRequest(ValueError):
    """A request the model cannot take; its message is returned to the client (HTTP 400)."""


@dataclass
class Baseline:
    """A simple model to compare against: either its outputs on the test split (probabilities, or
    predictions in the target's units), or the spec of a model the pipeline trains with the run's recipe.

    >>> Baseline('majority class', outputs=np.ones((2, 2))).model_spec is None
    True
    """

    description: str
    outputs: np.ndarray | None = None
    model_spec: dict[str, Any] | None = None


class RequestParser:
    """A request's ``inputs`` → a batch of model inputs ``(n, *example_shape)`` of the model's dtype.

    This base takes (nested) lists of numbers: one example flat or in its own shape, or a list of them.
    ``dtype`` is the model input's type; an integer type accepts only whole numbers. A kind whose requests
    carry more (strings, rows by column) subclasses it.

    >>> parse = RequestParser((1, 4, 4))
    >>> parse([[0] * 4] * 4).shape, parse([0] * 32).shape
    ((1, 1, 4, 4), (2, 1, 4, 4))
    >>> RequestParser((2,), np.int64)([1.5, 2])
    Traceback (most recent call last):
    ...
    deepseek_ray.data.kinds.BadRequest: "inputs" must hold whole numbers (the model takes int64)
    """

    def __init__(
        self,
        example_shape: tuple[int, ...],
        dtype: Any = np.float32,
        spec: dict[str, Any] | None = None,
        export_dir: str | Path | None = None,
    ):
        self.example_shape = tuple(int(d) for d in example_shape)
        self.dtype = np.dtype(dtype).type
        self.spec = dict(spec or {})
        self.export_dir = None if export_dir is None else Path(export_dir)

    @property
    def accepts_text(self) -> bool:
        """Whether raw strings are accepted (the Open Inference Protocol's ``BYTES``)."""
        return False

    def __call__(self, inputs: Any) -> np.ndarray:
        return self.numbers(inputs)

    def numbers(self, inputs: Any) -> np.ndarray:
        """(Nested) lists of numbers → ``(n, *example_shape)``; NaN, infinity and wrong sizes are refused."""
        integer = np.issubdtype(self.dtype, np.integer)
        try:
            # Float models: parsed straight into their dtype, so a value beyond its range is inf and refused below;
            # integer models: parsed as float64 first, to tell whole numbers from fractions.
            array = np.asarray(inputs, dtype=np.float64 if integer else self.dtype)
        except (TypeError, ValueError):
            raise BadRequest(
                '"inputs" must be a (nested) list of numbers, with every example of the same shape'
            ) from None
        size = int(np.prod(self.example_shape))
        if array.size == 0 or array.size % size:
            raise BadRequest(
                f'"inputs" has {array.size} numbers; each example needs {size} (shape {list(self.example_shape)})'
            )
        if not np.isfinite(array).all():
            raise BadRequest('"inputs" contains NaN or infinity')
        if integer and not (array == np.round(array)).all():
            raise BadRequest(f'"inputs" must hold whole numbers (the model takes {np.dtype(self.dtype).name})')
        return array.reshape(-1, *self.example_shape).astype(self.dtype, copy=False)


def one_or_many(inputs: Any, kind: type) -> list[Any] | None:
    """``inputs`` as a list of ``kind``: a non-empty list of them as it is, a single one in a list; else None.

    >>> one_or_many('a', str), one_or_many(['a', 'b'], str), one_or_many([1], str), one_or_many([5, 6], list)
    (['a'], ['a', 'b'], None, [[5, 6]])
    """
    if isinstance(inputs, list) and inputs and all(isinstance(item, kind) for item in inputs):
        return inputs
    return [inputs] if isinstance(inputs, kind) else None


def head(data: DatasetSplits) -> dict[str, int]:
    """The output size a model builder needs: ``out_features=1`` for regression, else ``num_classes``."""
    return {"out_features": 1} if data.task == "regression" else {"num_classes": data.num_classes}


_OIP_DATATYPES = {np.float32: "FP32", np.float64: "FP64", np.float16: "FP16", np.int64: "INT64", np.int32: "INT32"}


class DataKind:
    """What one kind of data does at every stage. Subclasses set :attr:`name` (through
    :func:`register_kind`) and override what differs; the defaults fit inputs that are plain arrays."""

    name: ClassVar[str] = ""
    #: the class that parses this kind's requests in a Serve replica
    parser: ClassVar[type[RequestParser]] = RequestParser

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    @property
    def import_path(self) -> str:
        """``module:Class``, as the export metadata records it (:func:`kind_of` loads it back)."""
        return f"{type(self).__module__}:{type(self).__qualname__}"

    # ------------------------------------------------------------------------------------ data
    def split(
        self,
        name: str,
        raw: Any,
        fractions: tuple[float, float, float],
        seed: int,
        limit: int | None = None,
        **options: Any,
    ) -> DatasetSplits:
        """Split what the dataset's loader returned and fit what is fitted on the training split only."""
        raise NotImplementedError(f"{type(self).__name__} must define split()")

    def model_inputs(self, data: DatasetSplits) -> dict[str, Any]:
        """The data-derived arguments a model builder needs (merged into its spec by search and train)."""
        return {"in_channels": data.input_shape[0], **head(data)}

    def baseline(self, data: DatasetSplits) -> Baseline:
        """A simple model scored on the same test split: the majority class, or the training mean."""
        y = data.train.y.numpy()
        if data.task == "regression":
            mean = y.mean(0, keepdims=True)
            return Baseline("training mean", outputs=data.in_target_units(np.repeat(mean, len(data.test), 0)))
        majority = int(np.bincount(y, minlength=data.num_classes).argmax())
        return Baseline(
            f"majority class: {data.labels[majority]}", outputs=np.eye(data.num_classes)[[majority] * len(data.test)]
        )

    # ---------------------------------------------------------------------------------- export
    def input_spec(self, data: DatasetSplits, export_dir: Path | None = None) -> dict[str, Any]:
        """What a replica needs to turn a request into model inputs (kept in the export metadata)."""
        return {}

    def example_input(self, meta: dict[str, Any], count: int = 2) -> torch.Tensor:
        """``count`` inputs drawn like a bundle's data (mean ± std of its scaling), for an export without data."""
        prep = meta.get("preprocessing") or {}
        generator = torch.Generator().manual_seed(int(meta.get("seed", 0)))
        mean, std = (
            torch.as_tensor(prep.get(key, default), dtype=torch.float32)
            for key, default in (("mean", 0.0), ("std", 1.0))
        )
        return mean + std * torch.randn((count, *meta["input_shape"]), generator=generator)

    # ----------------------------------------------------------------------------------- serve
    def request_parser(self, meta: dict[str, Any], dtype: Any, export_dir: str | Path) -> RequestParser:
        """This kind's :attr:`parser` for one exported model (its metadata, input dtype and folder)."""
        return self.parser(tuple(meta["input_shape"]), dtype, meta.get("input_spec") or {}, export_dir)

    def reply(self, row: np.ndarray, meta: dict[str, Any]) -> dict[str, Any]:
        """One example's answer: label and probabilities, or the prediction in the target's units.

        >>> DataKind().reply(np.array([0.2, 0.8]), {'labels': ['no', 'yes']})
        {'label': 'yes', 'class_index': 1, 'probabilities': [0.2, 0.8]}
        >>> DataKind().reply(np.array([341.5]), {'labels': ['co2'], 'task': 'regression'})
        {'prediction': 341.5, 'target': 'co2'}
        """
        labels = meta.get("labels") or []
        if meta.get("task") == "regression":  # one value, or one per horizon step
            values = [float(v) for v in np.ravel(row)]
            return {"prediction": values[0] if len(values) == 1 else values, "target": labels[0] if labels else None}
        index = int(row.argmax())
        return {
            "label": labels[index] if index < len(labels) else index,
            "class_index": index,
            "probabilities": [round(float(p), 6) for p in row],
        }

    def tensor_metadata(self, meta: dict[str, Any], dtype: Any) -> list[dict[str, Any]]:
        """The model's inputs as the Open Inference Protocol describes them (``name``, ``datatype``, ``shape``).

        >>> DataKind().tensor_metadata({'input_shape': [1, 28, 28]}, np.float32)
        [{'name': 'input', 'datatype': 'FP32', 'shape': [-1, 1, 28, 28]}]
        """
        return [
            {"name": "input", "datatype": _OIP_DATATYPES[np.dtype(dtype).type], "shape": [-1, *meta["input_shape"]]}
        ]

    def request_hint(self, meta: dict[str, Any]) -> str:
        """What a request body looks like, for the log line."""
        return f'{{"inputs": <{shape_text(meta)} values>}}'


def shape_text(meta: dict[str, Any]) -> str:
    """An example's shape as a request hint writes it: ``28×28``."""
    return "×".join(str(d) for d in meta.get("input_shape", []))


def register_kind(name: str):
    """Class decorator: register a :class:`DataKind` subclass as ``data.kind: name``.

    >>> @register_kind('toy_doc')
    ... class ToyKind(DataKind): ...
    >>> KINDS['toy_doc'].name
    'toy_doc'
    """

    def wrap(cls: type[DataKind]) -> type[DataKind]:
        cls.name = name
        return KINDS.register(name)(cls)

    return wrap


def get_kind(name: str) -> DataKind:
    """The registered kind called ``name``, an error listing the kinds otherwise.

    >>> get_kind('text').name
    'text'
    """
    return KINDS[name]()


def kind_of(meta: dict[str, Any]) -> DataKind:
    """The kind an export or bundle was made from: its ``kind_class`` imported (a replica on another node
    imports the module that defines it), else the registered ``kind`` (``image`` for older files)."""
    path = meta.get("kind_class")
    if path:
        module, _, qualname = path.partition(":")
        cls: Any = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        return cls()
    return get_kind(meta.get("kind") or "image")


def kind_metadata(kind: DataKind) -> dict[str, str]:
    """What export metadata and bundles record of a kind: its name and its class by import path."""
    return {"kind": kind.name, "kind_class": kind.import_path}
