"""Registries of named implementations: one list of allowed values, filled where each value is implemented.

``config`` imports no stage, yet its schema must know every allowed ``type:``, kind or strategy. A
:class:`Registry` is declared here with the modules that fill it (by import path); the first lookup imports
them, so the implementing module is the one place a value is defined, and the schema, its JSON Schema and its
error messages all read the registry. A plugin outside the package registers the same way.

>>> COLOURS = Registry('paint.colour')
>>> @COLOURS.register('red')
... class Red: ...
>>> COLOURS['red'].__name__, COLOURS.names()
('Red', ['red'])
>>> COLOURS['blue']
Traceback (most recent call last):
...
KeyError: "paint.colour: unknown 'blue'; allowed: red"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Names → implementations for the config key ``key``; ``providers`` are the modules that register
    the built-in ones (imported on the first lookup)."""

    def __init__(self, key: str, providers: tuple[str, ...] = ()):
        self.key = key
        self._providers = list(providers)
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``item`` under ``name`` (a later registration of the same name replaces it)."""

        def wrap(item: T) -> T:
            self._items[name] = item
            return item

        return wrap

    def _loaded(self) -> dict[str, T]:
        while self._providers:  # a provider may itself look names up while it is imported
            importlib.import_module(self._providers.pop(0))
        return self._items

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._loaded())

    def check(self, name: Any) -> str:
        """``name`` if it is registered, else a ``ValueError`` naming the key and the allowed values."""
        if not isinstance(name, str) or name not in self._loaded():
            raise ValueError(f"{self.key}: unknown {name!r}; allowed: {', '.join(self.names())}")
        return name

    def __getitem__(self, name: str) -> T:
        try:
            return self._loaded()[name]
        except KeyError:
            raise KeyError(f"{self.key}: unknown {name!r}; allowed: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __len__(self) -> int:
        return len(self._loaded())

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        """``(name, implementation)`` pairs, in registration order."""
        return list(self._loaded().items())

    def __repr__(self) -> str:
        return f"Registry({self.key!r}: {', '.join(self.names())})"
