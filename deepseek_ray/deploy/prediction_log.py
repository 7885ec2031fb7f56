"""The prediction log of shadow traffic: what the live model and the candidate answered, and the labels.

One Arrow IPC stream file per live replica (one writer each, no locks), in the shadow session's folder on the
run's storage path (a local or shared disk). Records are buffered in memory and written, flushed and
``fsync``-ed by a background thread every :data:`FLUSH_MS`; a record is durable at most
:data:`DURABLE_WITHIN_MS` after it was appended (the kill test checks this bound). A reader takes every file in
the folder, and stops at a truncated last batch (a killed writer's).

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

import atexit
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

#: the background thread writes what was appended this often
FLUSH_MS = 20.0
#: a record is on disk (written, flushed, fsync-ed) at most this long after it was appended
DURABLE_WITHIN_MS = 100.0
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
    """An append-only log file for one writer: ``append`` is cheap (a list append), writing is batched."""

    def __init__(self, folder: str | Path, writer: str, flush_ms: float = FLUSH_MS):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{writer}-{os.getpid()}-{time.time_ns()}.arrow"
        self._file = open(self.path, "wb")  # noqa: SIM115 - held open for the replica's life
        self._writer = pa.ipc.new_stream(self._file, SCHEMA)
        self._pending: list[tuple[str, str, float, Any, float | None]] = []
        self._lock = threading.Lock()  # one flush at a time (the thread's, or an explicit one)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._flush_every, args=(flush_ms / 1000,), daemon=True)
        self._thread.start()
        atexit.register(self.close)  # the last records, before the interpreter stops the thread

    def append(
        self, request_id: str, kind: str, output: Sequence[float] | np.ndarray | None = None, label: float | None = None
    ) -> None:
        """Add one record (it is durable within :data:`DURABLE_WITHIN_MS`)."""
        self._pending.append((request_id, kind, time.time(), output, label))

    def flush(self) -> None:
        """Write, flush and fsync what was appended so far."""
        with self._lock:
            records, self._pending = self._pending, []  # a swap: appends meanwhile go to the new list
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
            os.fsync(self._file.fileno())

    def close(self) -> None:
        """Write what is left and close the file (again: nothing happens)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._thread.join()
        self.flush()
        with self._lock:
            self._writer.close()
            self._file.close()
        atexit.unregister(self.close)

    def _flush_every(self, interval_s: float) -> None:
        while not self._closed.wait(interval_s):
            self.flush()


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
    mask = pa.compute.equal(table.column("kind"), kind)
    return set(table.filter(mask).column("request_id").to_pylist())


__all__ = ["DURABLE_WITHIN_MS", "FLUSH_MS", "KINDS", "PredictionLog", "read_log", "request_ids"]
