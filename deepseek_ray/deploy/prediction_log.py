"""The prediction log of shadow traffic: what the live model and the candidate answered, and the labels.

One Arrow IPC stream file per live replica (one writer each, no locks), in the shadow session's folder on the
run's storage path (a local or shared disk). Records are buffered in memory and written by the replica's own
event loop :data:`FLUSH_MS` after the first of them (no thread: a thread waking to write would take the GIL
from the serving loop). A record is in the operating system's hands, so it outlives the replica's process,
at most :data:`DURABLE_WITHIN_MS` after it was appended (the kill test checks this bound), and on disk
(``fsync``, so it outlives the machine) within :data:`FSYNC_S`. A reader takes every file in the folder, and
stops at a truncated last batch.

Records: ``request_id``, ``kind`` (``live``, ``candidate``, ``candidate_error``, ``dropped``, ``label``), ``time``
(seconds since the epoch), ``output`` (the model's output row: probabilities, or the prediction) and ``label``.

>>> import tempfile
>>> folder = tempfile.mkdtemp()
>>> log = PredictionLog(folder, 'replica-1')
>>> log.append('r1', 'live', [0.9, 0.1]); log.append('r1', 'candidate', [0.2, 0.8]); log.append('r1', 'label', label=1)
>>> log.flush(); log.close()
>>> sorted(read_log(folder).column('kind').to_pylist())
['candidate', 'label', 'live']
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: the event loop writes what was appended this long after the first record of a batch
FLUSH_MS = 50.0
#: a record outlives the replica's process (written to the OS) at most this long after it was appended
DURABLE_WITHIN_MS = 100.0
#: ... and is on disk (fsync) within this
FSYNC_S = 1.0
SCHEMA = pa.schema(
    [
        ("request_id", pa.string()),
        ("kind", pa.string()),
        ("time", pa.float64()),
        ("output", pa.list_(pa.float32())),
        ("label", pa.float64()),
    ]
)
KINDS = ("live", "candidate", "candidate_error", "dropped", "label")


class PredictionLog:
    """An append-only log file for one writer: ``append`` is cheap (a list append), writing is batched. Inside
    an event loop the writes schedule themselves; elsewhere the caller calls :meth:`flush`."""

    def __init__(self, folder: str | Path, writer: str, flush_ms: float = FLUSH_MS):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{writer}-{os.getpid()}-{time.time_ns()}.arrow"
        self._file = open(self.path, "wb")  # noqa: SIM115 - held open for the replica's life
        self._writer = pa.ipc.new_stream(self._file, SCHEMA)
        self._pending: list[tuple[str, str, float, Any, float | None]] = []
        self._flush_s = flush_ms / 1000
        self._timer: asyncio.TimerHandle | None = None
        self._synced = time.monotonic()
        atexit.register(self.close)  # the last records, when the process ends normally

    def append(
        self, request_id: str, kind: str, output: Sequence[float] | np.ndarray | None = None, label: float | None = None
    ) -> None:
        """Add one record (it outlives the process within :data:`DURABLE_WITHIN_MS`)."""
        self._pending.append((request_id, kind, time.time(), output, label))
        if self._timer is None:
            with contextlib.suppress(RuntimeError):  # no event loop: the caller flushes
                self._timer = asyncio.get_running_loop().call_later(self._flush_s, self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._timer = None
        self.flush()
        if time.monotonic() - self._synced > FSYNC_S:
            self._synced = time.monotonic()
            asyncio.get_running_loop().run_in_executor(None, self._sync)

    def flush(self) -> None:
        """Write what was appended so far (to the OS: it outlives the process)."""
        records, self._pending = self._pending, []
        if not records or self._file.closed:
            return
        ids, kinds, times, outputs, labels = zip(*records, strict=True)
        batch = pa.record_batch(
            [
                pa.array(ids, pa.string()),
                pa.array(kinds, pa.string()),
                pa.array(times, pa.float64()),
                pa.array(outputs, pa.list_(pa.float32())),
                pa.array(labels, pa.float64()),
            ],
            schema=SCHEMA,
        )
        self._writer.write_batch(batch)
        self._file.flush()

    def _sync(self) -> None:
        if not self._file.closed:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Write what is left, fsync and close the file (again: nothing happens)."""
        if self._file.closed:
            return
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        self._writer.close()
        self._file.flush()
        self._sync()
        self._file.close()
        atexit.unregister(self.close)


def read_log(folder: str | Path) -> pa.Table:
    """Every record in a shadow session's folder (all writers), in no particular order."""
    batches: list[pa.RecordBatch] = []
    for path in sorted(Path(folder).glob("*.arrow")):
        batches.extend(_read_file(path))
    return pa.Table.from_batches(batches, schema=SCHEMA)


def _read_file(path: Path) -> list[pa.RecordBatch]:
    batches = []
    try:
        with pa.OSFile(str(path)) as source, pa.ipc.open_stream(source) as reader:
            for batch in reader:
                batches.append(batch)
    except (pa.ArrowInvalid, OSError, StopIteration):
        pass  # a writer killed mid-batch, or a file just created: what came before stands
    return batches


def request_ids(folder: str | Path, kind: str = "live") -> set[str]:
    """The request ids with a record of ``kind`` in the folder."""
    table = read_log(folder)
    mask = pc.equal(table.column("kind"), kind)
    return set(table.filter(mask).column("request_id").to_pylist())


__all__ = ["DURABLE_WITHIN_MS", "FLUSH_MS", "FSYNC_S", "KINDS", "PredictionLog", "read_log", "request_ids"]
