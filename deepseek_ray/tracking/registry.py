"""The MLflow model registry: versions of a served model, and the aliases that say which one is live.

A version holds the ONNX model as MLflow's ``onnx`` flavour (``mlflow.onnx.load_model`` reads it) plus what
serving needs beside it: the export metadata (``model.onnx.json``) and the tokenizer. ``champion`` names the live
version and ``challenger`` the one in the shadow (MLflow's stages are deprecated in favour of aliases), so
``models:/NAME@champion`` is always what is served.

>>> import tempfile, torch
>>> from deepseek_ray.export import ModelExporter
>>> folder = tempfile.mkdtemp(); uri = f'sqlite:///{folder}/mlflow.db'
>>> _ = ModelExporter().export(torch.nn.Linear(4, 2), f'{folder}/model.onnx', torch.randn(2, 4))
>>> version = register_model(f'{folder}/model.onnx', 'demo', uri, alias='champion')
>>> resolve_model('models:/demo@champion', uri)[1] == version
True
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHAMPION = "champion"
CHALLENGER = "challenger"
MODELS_SCHEME = "models:/"


def is_registry_uri(path: str | Path) -> bool:
    """Whether ``path`` names a registered model version (``models:/name/3``, ``models:/name@champion``).

    >>> is_registry_uri('models:/mnist@champion'), is_registry_uri('runs/mnist/export/model.onnx')
    (True, False)
    """
    return str(path).startswith(MODELS_SCHEME)


def client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` on ``tracking_uri`` (its registry too), MLflow's chatter hushed."""
    import mlflow

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def register_model(
    model_path: str | Path,
    name: str,
    tracking_uri: str,
    *,
    alias: str | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> str:
    """Register an exported ONNX model (with its metadata and tokenizer) as a new version of ``name``;
    return the version. It is logged to ``run_id``'s artifacts, or to a new run in the experiment ``name``."""
    import mlflow
    import onnx

    path = Path(model_path)
    meta_path = Path(f"{path}.json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"no export metadata beside {path} (expected {meta_path}); export the model first")
    mlflow_client = client(tracking_uri)
    if run_id is None:
        experiment = mlflow_client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else mlflow_client.create_experiment(name)
        run_id = mlflow_client.create_run(experiment_id, run_name=f"{name}-register").info.run_id
        mlflow_client.set_terminated(run_id)
    meta = json.loads(meta_path.read_text())
    with tempfile.TemporaryDirectory(prefix="deepseek_ray_register_") as staging:
        folder = Path(staging) / "model"
        with contextlib.redirect_stderr(io.StringIO()):  # one file: serving ships model.onnx* beside each other
            onnx_model = onnx.load(str(path), load_external_data=True)
            mlflow.onnx.save_model(onnx_model, str(folder), save_as_external_data=False)
        shutil.copy2(meta_path, folder / "model.onnx.json")
        tokenizer = (meta.get("input_spec") or {}).get("tokenizer")
        if tokenizer:
            source = path.parent / tokenizer
            (shutil.copytree if source.is_dir() else shutil.copy2)(source, folder / tokenizer)
        mlflow_client.log_artifacts(run_id, str(folder), "model")
    with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints its registry messages to stderr
        if not _exists(mlflow_client, name):
            mlflow_client.create_registered_model(name)
        source = mlflow_client.get_run(run_id).info.artifact_uri + "/model"
        version = str(mlflow_client.create_model_version(name, source, run_id=run_id, tags=tags).version)
    if alias:
        mlflow_client.set_registered_model_alias(name, alias, version)
    return version


def _exists(mlflow_client: Any, name: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client.get_registered_model(name)
        return True
    except MlflowException:
        return False


def parse_registry_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``(name, version, alias)`` of a ``models:/`` URI.

    >>> parse_registry_uri('models:/mnist/3'), parse_registry_uri('models:/mnist@champion')
    (('mnist', '3', None), ('mnist', None, 'champion'))
    """
    rest = uri[len(MODELS_SCHEME) :].strip("/")
    if "@" in rest:
        name, alias = rest.split("@", 1)
        return name, None, alias
    name, _, version = rest.partition("/")
    if not name or not version:
        raise ValueError(f"{uri!r}: a model URI is models:/NAME/VERSION or models:/NAME@ALIAS")
    return name, version, None


def version_of(uri: str, tracking_uri: str) -> str:
    """The version number a ``models:/`` URI names now: its number, its alias's version, or the newest version
    in a (deprecated) stage or ``latest``."""
    name, version, alias = parse_registry_uri(uri)
    if alias is not None:
        found = alias_version(name, alias, tracking_uri)
        if found is None:
            raise ValueError(f"{uri}: no version of {name!r} has the alias {alias!r} in {tracking_uri}")
        return found
    assert version is not None  # parse_registry_uri gives one of the two
    if version.isdigit():
        return version
    newest = client(tracking_uri).get_latest_versions(name, stages=None if version == "latest" else [version])
    if not newest:
        raise ValueError(f"{uri}: no version of {name!r} in {version!r} in {tracking_uri}")
    return str(newest[0].version)


def download_uri(uri: str, tracking_uri: str) -> str:
    """Where the version a ``models:/`` URI names keeps its artifacts, asked of ``tracking_uri``'s registry
    (MLflow itself resolves ``models:/`` through the process's default registry, whatever store it is given)."""
    name, _, _ = parse_registry_uri(uri)
    return str(client(tracking_uri).get_model_version_download_uri(name, version_of(uri, tracking_uri)))


def resolve_model(uri: str, tracking_uri: str) -> tuple[Path, str]:
    """``(a local path to the version's model.onnx, its version)`` for a ``models:/`` URI."""
    import mlflow
    from mlflow.exceptions import MlflowException

    name, _, _ = parse_registry_uri(uri)
    version = version_of(uri, tracking_uri)
    try:
        source = download_uri(f"{MODELS_SCHEME}{name}/{version}", tracking_uri)
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri))
    except MlflowException as err:
        raise ValueError(
            f"{uri}: cannot read version {version} of {name!r} from the registry at {tracking_uri} ({err}); "
            "pass an exported model file instead"
        ) from err
    model = folder / "model.onnx"
    if not (model.is_file() and (folder / "model.onnx.json").is_file()):
        raise ValueError(
            f"{uri}: version {version} holds no served model (model.onnx and model.onnx.json); register it "
            "with deepseek_ray.tracking.register_model"
        )
    return model, version


def set_alias(name: str, alias: str, version: str, tracking_uri: str) -> None:
    """Point ``alias`` at ``version`` of ``name`` (moving it from wherever it was)."""
    client(tracking_uri).set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str, tracking_uri: str) -> None:
    """Remove ``alias`` from ``name`` (nothing happens when no version has it)."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client(tracking_uri).delete_registered_model_alias(name, alias)


def alias_version(name: str, alias: str, tracking_uri: str) -> str | None:
    """The version ``alias`` points at, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client(tracking_uri).get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "alias_version",
    "delete_alias",
    "download_uri",
    "is_registry_uri",
    "parse_registry_uri",
    "register_model",
    "resolve_model",
    "set_alias",
    "version_of",
]
