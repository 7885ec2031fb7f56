"""What a Serve replica needs on whichever node it starts: the model's files, and the code of a plugin kind.

A local model path is shipped through Ray (the files the model needs, uploaded once per content as the
replicas' ``working_dir``); a URI (``s3://``, ``gs://``, ``hdfs://``, ``file://`` on a shared disk: anything
``pyarrow.fs`` opens) is fetched by each replica. Nothing is left that exists only on the driver's disk.

>>> path = 'runs/mnist-quickstart/export/model.onnx'
>>> ship_model(path, read_model_metadata(path))  # uploads through Ray  # doctest: +SKIP
('model.onnx', {'working_dir': 'gcs://_ray_pkg_….zip'})
"""

from __future__ import annotations

import importlib
import json
import shutil
import sysconfig
import tempfile
from pathlib import Path
from typing import Any


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` names a file system by scheme (``s3://bucket/m.onnx``) rather than a local path.

    >>> is_uri('s3://models/model.onnx'), is_uri('runs/x/export/model.onnx')
    (True, False)
    """
    return "://" in str(path)


def model_files(model_path: Path, meta: dict[str, Any]) -> list[Path]:
    """The files serving ``model_path`` needs: the model, its metadata (and external data), the tokenizer."""
    folder = model_path.parent
    files = sorted(folder.glob(model_path.name + "*"))
    tokenizer = (meta.get("input_spec") or {}).get("tokenizer")
    if tokenizer:
        files.append(folder / tokenizer)
    return files


def ship_model(model_path: str | Path, meta: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(the path a replica opens, the runtime_env entries that bring it there)``; ``meta`` is the model's
    export metadata (:func:`read_model_metadata`), which names the files beside it."""
    from ..ray_compat import uploaded_working_dir

    if is_uri(model_path):
        return str(model_path), {}
    path = Path(model_path).resolve()
    with tempfile.TemporaryDirectory(prefix="deepseek_ray_model_") as staging:
        for source in model_files(path, meta):
            target = Path(staging) / source.name
            if source.is_dir():
                shutil.copytree(source, target)
            else:
                shutil.copy2(source, target)
        uri = uploaded_working_dir(staging)
    if uri is None:  # this Ray cannot upload: the path must exist on every node
        return str(path), {}
    return path.name, {"working_dir": uri}


def local_model(replica_path: str) -> Path:
    """On the replica: a local path to the model, fetching the folder of a URI first.

    A replica starts in its copy of the shipped folder, so a relative path is resolved there:

    >>> local_model('model.onnx') == Path.cwd() / 'model.onnx'
    True
    """
    if not is_uri(replica_path):
        return Path(replica_path).resolve()
    import pyarrow.fs

    filesystem, remote = pyarrow.fs.FileSystem.from_uri(replica_path)
    local = Path(tempfile.mkdtemp(prefix="deepseek_ray_model_"))
    pyarrow.fs.copy_files(str(Path(remote).parent), str(local), source_filesystem=filesystem)
    return local / Path(remote).name


def read_model_metadata(model_path: str | Path) -> dict[str, Any]:
    """The export metadata beside a local model or a URI."""
    if not is_uri(model_path):
        from ..export import read_metadata

        return read_metadata(model_path)
    import pyarrow.fs

    filesystem, remote = pyarrow.fs.FileSystem.from_uri(str(model_path))
    with filesystem.open_input_stream(remote + ".json") as stream:
        return json.loads(stream.read())


def kind_code(meta: dict[str, Any]) -> dict[str, Any]:
    """For a model whose kind is defined outside this package and outside any installed package (a plugin
    module in the user's project), the runtime_env entry that ships that module's top-level package (Ray's
    ``py_modules``), so that a replica on any node imports it; ``{}`` otherwise."""
    from ..ray_compat import uploaded_py_modules

    module = str(meta.get("kind_class") or "").partition(":")[0]
    top = module.split(".")[0]
    if not top or top == __name__.split(".")[0]:
        return {}
    package = importlib.import_module(top)
    where = Path(getattr(package, "__file__", None) or next(iter(package.__path__)))
    installed = Path(sysconfig.get_paths()["purelib"]), Path(sysconfig.get_paths()["platlib"])
    if any(where.is_relative_to(site) for site in installed):
        return {}  # an installed package: the nodes' environment has it
    uris = uploaded_py_modules([str(where.parent if where.name == "__init__.py" else where)])
    return {"py_modules": uris} if uris else {}
