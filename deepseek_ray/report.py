"""What a person sees: one line per event with the stage and elapsed time, and plain-text tables."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class Reporter:
    """Prints progress lines ``[  12.3s] search  trial 3/12 ...`` and remembers each stage's wall time.

    >>> import io
    >>> out = io.StringIO(); reporter = Reporter(out)
    >>> with reporter.stage('data'):
    ...     reporter.line('loaded')
    >>> 'data' in reporter.walls and 'loaded' in out.getvalue()
    True
    """

    def __init__(self, stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.start = time.perf_counter()
        self.current = ""
        self.walls: dict[str, float] = {}

    def line(self, message: str) -> None:
        elapsed = time.perf_counter() - self.start
        self.stream.write(f"[{elapsed:7.1f}s] {self.current:<8} {message}\n")
        self.stream.flush()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[Reporter]:
        previous, self.current = self.current, name
        began = time.perf_counter()
        self.line("started")
        try:
            yield self
        finally:
            self.walls[name] = time.perf_counter() - began
            self.line(f"finished in {self.walls[name]:.1f}s")
            self.current = previous


def table(rows: list[tuple[str, Any]] | list[list[Any]], header: list[str] | None = None) -> str:
    """A plain-text table with aligned columns.

    >>> print(table([('a', 1), ('bb', 22)], header=['key', 'value']))
    key | value
    ----+------
    a   | 1
    bb  | 22
    """
    cells = [[str(c) for c in row] for row in ([header] if header else []) + [list(r) for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in cells]
    if header:
        lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)
