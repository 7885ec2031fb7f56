"""MLflow tracking, written from the driver only (one sqlite file does not like many writers).

>>> from deepseek_ray.tracking import Tracker
>>> tracker = Tracker(enabled=False)          # a no-op tracker: every call is accepted and ignored
>>> with tracker.run('demo'):
...     tracker.log_metrics({'val_accuracy': 0.9}, stage='search')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def config_hash(config: dict[str, Any]) -> str:
    """A short sha256 of a JSON-able config: the same file gives the same hash.

    >>> config_hash({'a': 1}) == config_hash({'a': 1})
    True
    """
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def git_commit(path: str | Path = ".") -> str:
    """The git commit of ``path``'s repository, with ``-dirty`` when it has changes, or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        if commit.returncode:
            return "unknown"
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Tracker:
    """One MLflow run per pipeline run; nested runs per search trial; the model registry at the end.

    Every stage logs ``stage/metric`` names, so one run holds the whole pipeline.
    """

    def __init__(
        self,
        tracking_uri: str = "sqlite:///mlflow.db",
        experiment_name: str = "deepseek_ray",
        artifacts_location: str | None = None,
        enabled: bool = True,
    ):
        self.enabled = enabled
        self.tracking_uri, self.experiment_name, self.artifacts_location = (
            tracking_uri,
            experiment_name,
            artifacts_location,
        )
        self.run_id: str | None = None
        self._mlflow: Any = None

    @classmethod
    def from_config(cls, tracking: Any, default_name: str) -> Tracker:
        """From the experiment file's ``tracking`` section (already merged with mlflow_config.yaml)."""
        return cls(
            tracking.tracking_uri,
            tracking.experiment_name or default_name,
            tracking.artifacts_location,
            tracking.enabled,
        )

    def _client(self) -> Any:
        if self._mlflow is None:
            import mlflow

            logging.getLogger("mlflow").setLevel(logging.ERROR)
            logging.getLogger("alembic").setLevel(logging.ERROR)
            mlflow.set_tracking_uri(self.tracking_uri)
            if mlflow.get_experiment_by_name(self.experiment_name) is None:
                mlflow.create_experiment(self.experiment_name, artifact_location=self.artifacts_location)
            mlflow.set_experiment(self.experiment_name)
            self._mlflow = mlflow
        return self._mlflow

    @contextlib.contextmanager
    def run(self, run_name: str, tags: dict[str, str] | None = None) -> Iterator[Tracker]:
        """The pipeline's run; everything logged inside goes to it."""
        if not self.enabled:
            yield self
            return
        mlflow = self._client()
        with mlflow.start_run(run_name=run_name, tags=tags) as active:
            self.run_id = active.info.run_id
            yield self

    def log_params(self, params: dict[str, Any], prefix: str = "") -> None:
        if self.enabled:
            flat = {f"{prefix}{k}": str(v)[:6000] for k, v in _flatten(params).items()}
            self._client().log_params(flat)

    def log_metrics(self, metrics: dict[str, Any], stage: str = "", step: int | None = None) -> None:
        if self.enabled:
            numbers = {
                f"{stage}/{k}" if stage else k: float(v)
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)
            }
            self._client().log_metrics(numbers, step=step)

    def log_dict(self, data: dict[str, Any] | list[Any], name: str) -> None:
        if self.enabled:
            self._client().log_dict(data, name)

    def log_artifact(self, path: str | Path, folder: str | None = None) -> None:
        if self.enabled:
            self._client().log_artifact(str(path), folder)

    def log_trials(self, trials: list[dict[str, Any]], metric: str) -> None:
        """One nested run per search trial: its configuration, metric, epochs and status."""
        if not self.enabled:
            return
        mlflow = self._client()
        for trial in trials:
            with mlflow.start_run(run_name=f"trial-{trial['trial_id']}", nested=True):
                mlflow.log_params({**trial["params"], "architecture": trial["architecture"]})
                mlflow.set_tags({"status": trial["status"], "error": trial.get("error") or ""})
                if trial.get(metric) is not None:
                    mlflow.log_metrics({metric: trial[metric], "epochs": trial["epochs"], "time_s": trial["time_s"]})

    def register_onnx(self, onnx_path: str | Path, model_name: str, alias: str | None = None) -> str | None:
        """Register the exported model (with what serving needs beside it) as a new version of ``model_name``,
        logged to this run; return the version (:func:`~deepseek_ray.tracking.registry.register_model`)."""
        if not self.enabled:
            return None
        from .registry import register_model

        self._client()  # the experiment exists
        return register_model(onnx_path, model_name, self.tracking_uri, alias=alias, run_id=self.run_id)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


__all__ = ["Tracker", "config_hash", "git_commit"]
