"""A training run's per-epoch reports, from Ray Train's controller to the driver, through a local file.

This module imports only Ray: Train's controller unpickles :class:`ProgressRelay` and must not import torch.
"""

from __future__ import annotations

import json
import os
from typing import Any

from ray.train import UserCallback


class ProgressRelay(UserCallback):
    """A Ray Train callback that forwards each report to the driver through a local file.

    It runs in the Train controller, which Ray Train places on the driver's node, so a JSON-lines file
    there reaches the driver without one more actor process (a ``ray.util.queue.Queue`` costs a process
    start while the controller and the workers are starting).

    >>> import tempfile
    >>> path = tempfile.mktemp()
    >>> ProgressRelay(path).after_report(None, [{"epoch": 1, "val_accuracy": 0.5}], None)
    >>> tail = ProgressTail(path)
    >>> tail.read()
    [{'epoch': 1, 'val_accuracy': 0.5}]
    >>> tail.read(), os.remove(path)
    ([], None)
    """

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        with open(self.path, "a") as handle:  # one short append per epoch; the driver reads whole lines
            handle.write(json.dumps(dict(metrics[0]), default=float) + "\n")


class ProgressTail:
    """The driver's side of :class:`ProgressRelay`: the reports appended since the last read."""

    def __init__(self, path: str):
        self.path = path
        self.offset = 0

    def read(self) -> list[dict[str, Any]]:
        """Reports written completely since the previous call, oldest first."""
        if not os.path.exists(self.path):
            return []
        with open(self.path) as handle:
            handle.seek(self.offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind("\n") + 1]  # a line still being written waits for the next read
        self.offset += len(complete)
        return [json.loads(line) for line in complete.splitlines() if line]
