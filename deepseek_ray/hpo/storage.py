"""The filesystem Tune writes a local experiment folder through: every file lands whole or not at all.

Tune saves the experiment state into a staging folder on the driver and a background thread copies that
folder to the storage path, file by file, overwriting in place. A reader (``Tuner.restore``, or
``ExperimentAnalysis`` while the search runs) then sometimes finds half a file, and a SIGKILL during a copy
leaves one for good: ``Tuner.restore`` fails on it and the search is lost. Through this filesystem each file
is written beside its target and renamed over it once complete (``os.replace``), so a reader sees the old
file or the new one. Tune also rewrites its staging ``experiment_state-*.json`` while the previous copy may
still be reading it; a state file whose JSON is cut short is therefore never committed, and the last
complete one stays.

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

import fnmatch
import os
import uuid
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.fs as pafs

# Tune's state files of an experiment folder that are JSON documents (TuneController, BasicVariantGenerator,
# SearchGenerator); a trial's result.json is JSON lines and is not checked.
STATE_FILES = ("experiment_state-*.json", "basic-variant-state-*.json", "search_gen_state-*.json")


class _ReplaceOnClose:
    """A file written at a hidden path beside ``path`` and renamed over it on close (a Tune state file only
    if its JSON is whole)."""

    def __init__(self, path: str, check_json: bool) -> None:
        folder, name = os.path.split(path)
        self.path, self.check_json = path, check_json
        self.temp = os.path.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        self.file = open(self.temp, "wb")  # noqa: SIM115 (closed, then renamed, by close())

    @property
    def closed(self) -> bool:
        return self.file.closed

    def write(self, data: Any) -> int:
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def tell(self) -> int:
        return self.file.tell()

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.file.closed:
            return
        self.file.close()
        if self.check_json and not _is_json(self.temp):
            os.remove(self.temp)  # a copy of a file Tune was rewriting: keep the last whole one
        else:
            os.replace(self.temp, self.path)


def _is_json(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            orjson.loads(handle.read())  # 0.5 ms for the 400 KB state of 40 trials (json: 1.8 ms)
        return True
    except ValueError:  # orjson.JSONDecodeError is one
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
