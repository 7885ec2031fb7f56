"""The filesystem Tune writes a local experiment folder through: every file lands whole or not at all.

Tune saves the experiment state into a staging folder on the driver and a background thread copies that
folder to the storage path, file by file, overwriting in place. A reader (``Tuner.restore``, or
``ExperimentAnalysis`` while the search runs) then sometimes finds half a file, and a SIGKILL during a copy
leaves one for good: ``Tuner.restore`` fails on it and the search is lost. Through this filesystem each file
is written beside its target and renamed over it once complete (``os.replace``), so a reader sees the old
file or the new one. A copy of ``experiment_state-*.json`` whose JSON is cut short is never committed.

Tune saves its state at every step here (``runner._tune_settings``) and starts the copy in the background,
so the next save could rewrite the staging files while the copy reads them: the folder would then hold a
searcher state newer than the trials it lists, and a resume would lose the trials in between. A
:class:`CopyGate` per experiment closes that window: the search's callback waits, before each save, for the
copy of the last one to end (a few milliseconds), so every copy reads one whole save. The copy writes the
files of one save one by one, so the files of the folder's top level (the trial list, the searcher's and the
callbacks' state) are put in place together, within microseconds, once the copy has ended.

>>> import json, tempfile
>>> fs = atomic_local_filesystem()
>>> path = f"{tempfile.mkdtemp()}/experiment_state-x.json"
>>> with fs.open_output_stream(path) as out:
...     _ = out.write(b'{"trial_data": []}')
>>> with fs.open_output_stream(path) as out:  # a copy cut short: not committed
...     _ = out.write(b'{"trial_data": [')
>>> json.loads(open(path).read())
{'trial_data': []}
"""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import threading
import uuid
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.fs as pafs

# The one state file Tune rewrites in place (TuneController's JSON). The searchers' state files
# (``search_gen_state-*.json``, ``basic-variant-state-*.json``) are pickles, despite the name, that Tune
# writes beside and renames over, so their copies are whole; a trial's result.json is JSON lines.
STATE_FILES = ("experiment_state-*.json",)


class _ReplaceOnClose:
    """A file put in place whole on close: kept in memory (spilled beside ``path`` past 1 MiB), then left
    alone if ``path`` already holds the same bytes (Tune copies every file of the folder at each save, and
    most have not changed), else written at a hidden path beside it and renamed over it. A Tune state file
    is put in place only if its JSON is whole."""

    MEMORY_LIMIT = 1 << 20

    def __init__(self, path: str, check_json: bool) -> None:
        self.path, self.check_json = path, check_json
        self.memory: io.BytesIO | None = io.BytesIO()
        self.spill: BinaryIO | None = None
        self.closed = False

    def write(self, data: Any) -> int:
        if self.memory is None:
            return self.spill.write(data)  # type: ignore[union-attr]
        written = self.memory.write(data)
        if self.memory.tell() > self.MEMORY_LIMIT and not self.check_json:
            self.spill = _temp_beside(self.path)
            self.spill.write(self.memory.getbuffer())
            self.memory = None
        return written

    def flush(self) -> None:
        if self.spill is not None:
            self.spill.flush()

    def tell(self) -> int:
        return self.memory.tell() if self.memory is not None else self.spill.tell()  # type: ignore[union-attr]

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        gate = _GATES.get(os.path.dirname(self.path))  # set for the experiment's top level: its state files
        if self.memory is None:  # spilled: written beside the target already
            self.spill.close()  # type: ignore[union-attr]
            _put_in_place(self.spill.name, self.path, gate)  # type: ignore[union-attr]
            return
        data = self.memory.getvalue()
        if self.check_json and not _is_json(data):
            return  # a copy of a file Tune was rewriting: the last whole one stays
        held = gate is not None and gate.copy_under_way()
        if not held and _holds(self.path, data):
            return  # nothing new (a held file may have an older copy waiting: it is always written)
        with _temp_beside(self.path) as temp:
            temp.write(data)
        _put_in_place(temp.name, self.path, gate)


def _put_in_place(temp: str, path: str, gate: CopyGate | None) -> None:
    """Rename ``temp`` over ``path`` now, or with the rest of the experiment's state once its copy ends."""
    if gate is None or not gate.defer(temp, path):
        os.replace(temp, path)


def _temp_beside(path: str) -> BinaryIO:
    folder, name = os.path.split(path)
    return open(os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp"), "wb")  # noqa: SIM115


def _holds(path: str, data: bytes) -> bool:
    try:
        if os.path.getsize(path) != len(data):
            return False
        with open(path, "rb") as handle:
            return handle.read() == data
    except OSError:
        return False


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)  # as Tune reads it: NaN and Infinity are allowed (orjson refuses them)
        return True
    except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ones
        return False


class AtomicLocalHandler(pafs.FileSystemHandler):
    """pyarrow's ``LocalFileSystem`` with writes that replace a file whole (see the module's docstring)."""

    def __init__(self) -> None:
        self.local = pafs.LocalFileSystem()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AtomicLocalHandler)

    def __reduce__(self) -> tuple[type, tuple[()]]:  # trial actors get the filesystem with the storage context
        return AtomicLocalHandler, ()

    def get_type_name(self) -> str:
        return "atomic-local"

    def normalize_path(self, path: str) -> str:
        return self.local.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.local.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        if path in _GATES:  # Tune's copy of the experiment's staging folder begins (in its copying thread)
            _GATES[path].copying()
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.local.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the filesystem's root")

    def delete_file(self, path: str) -> None:
        self.local.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self.local.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self.local.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while block := source.read(1 << 20):
                target.write(block)

    def open_input_stream(self, path: str) -> pa.NativeFile:
        return self.local.open_input_stream(path)

    def open_input_file(self, path: str) -> pa.NativeFile:
        return self.local.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        check = any(fnmatch.fnmatch(os.path.basename(path), pattern) for pattern in STATE_FILES)
        return pa.PythonFile(_ReplaceOnClose(path, check), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pa.NativeFile:
        return self.local.open_append_stream(path, metadata=metadata)


def atomic_local_filesystem() -> pafs.FileSystem:
    """A pyarrow filesystem for ``RunConfig(storage_filesystem=...)`` and ``Tuner.restore``: the local disk,
    each file replaced whole.

    >>> atomic_local_filesystem().type_name
    'py::atomic-local'
    """
    return pafs.PyFileSystem(AtomicLocalHandler())


class CopyGate:
    """Keeps Tune's next save of an experiment's state from starting while the copy of the last one runs.

    Tune calls :meth:`saved` in each save (through the search's callback), the filesystem calls
    :meth:`copying` from the thread that starts copying the save, and the callback calls :meth:`wait`
    before the next save.

    >>> gate = CopyGate()
    >>> for save in range(2):
    ...     gate.saved(); copier = threading.Thread(target=gate.copying); copier.start()
    ...     gate.wait()
    >>> copier.is_alive()
    False
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._saves = self._copied = 0  # the saves made; the last save whose copy has begun
        self._copier: threading.Thread | None = None
        self._pending: list[tuple[str, str]] = []  # (written beside, target) of the copy under way
        self._waited = False

    def saved(self) -> None:
        with self._changed:
            self._saves += 1

    def copying(self) -> None:
        with self._changed:
            self._copied, self._copier = self._saves, threading.current_thread()
            self._changed.notify_all()

    def copy_under_way(self) -> bool:
        copier = self._copier
        return copier is not None and copier.is_alive()

    def defer(self, temp: str, path: str) -> bool:
        """Hold a file of the folder's top level while a copy is under way (False: none is)."""
        with self._changed:
            if not self.copy_under_way():
                return False
            self._pending.append((temp, path))
            return True

    def wait(self, timeout_s: float = 10.0) -> None:
        """Until the copy of the last save has ended (bounded: a slow disk delays the search, never stops it),
        then put its files in place."""
        with self._changed:
            # Before the first copy is seen, once and briefly: Tune may copy through another filesystem.
            started = timeout_s if self._copier is not None else 0.0 if self._waited else 1.0
            self._changed.wait_for(lambda: self._copied >= self._saves, timeout=started)
            self._waited, copier = True, self._copier
        if copier is not None and copier is not threading.current_thread():
            with contextlib.suppress(AssertionError, RuntimeError):  # a pyarrow pool thread cannot be joined
                copier.join(timeout_s)
        with self._changed:
            if copier is not None and copier.is_alive():
                return  # still copying after the timeout: its files go in place at the next wait
            pending, self._pending = self._pending, []
        for temp, path in pending:  # in the order written: a later copy of a file wins
            os.replace(temp, path)


_GATES: dict[str, CopyGate] = {}  # experiment folder -> its gate, in the driver's process


def copy_gate(folder: str) -> CopyGate:
    """The :class:`CopyGate` of the experiment folder ``folder`` (a path as Tune gives it to the filesystem).

    >>> copy_gate('/tmp/ds/search') is copy_gate('/tmp/ds/search')
    True
    """
    return _GATES.setdefault(folder, CopyGate())
