"""Small file helpers every stage may use (this module imports nothing of the package).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / 'state.bin'
>>> write_atomically(path, b'new')
>>> sha256_of(path)[:12], fingerprint(np.zeros(3))
('11507a0e2f5e', '9d908ecfb6b256de')
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import numpy as np


def sha256_of(path: str | Path) -> str:
    """The sha256 of a file, read in 1 MiB blocks.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile() as f:
    ...     sha256_of(f.name)[:12]
    'e3b0c44298fc'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it and ``os.replace``: a kill leaves the
    old file or the new one, never half of one.

    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / 'state.pkl'
    >>> write_atomically(path, b'new')
    >>> path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    (b'new', ['state.pkl'])
    """
    path = Path(path)
    # A temporary name of its own, so that two processes writing the same file never share one.
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)


def fingerprint(*arrays: np.ndarray) -> str:
    """A short sha256 of the arrays' bytes: identifies the exact data a run saw."""
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]
