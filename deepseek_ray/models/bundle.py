"""The model bundle: everything needed to use a trained model, loadable without Ray.

A bundle is a folder with ``weights.pt`` (a plain ``state_dict``, no DDP ``module.`` prefix) and
``bundle.json`` (model spec with its architecture string, labels, preprocessing, input shape,
experiment config, seed, metrics and package versions).
"""

from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.kinds import DataKind, kind_metadata
from .build import build_model

WEIGHTS, META = "weights.pt", "bundle.json"


class InferenceModel(nn.Module):
    """Raw inputs in, predictions out: the scaling fitted on the training split, the network, and a
    softmax (classification) or the target's un-scaling (regression) — the graph that is exported and served.
    Inputs without a fitted scaling (text's token ids) pass to the network unchanged.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> probs = InferenceModel(net, {'type': 'normalize', 'mean': 0.0, 'std': 1.0})(torch.zeros(2, 1, 2, 2))
    >>> torch.allclose(probs.sum(1), torch.ones(2))
    True
    >>> regression = {'task': 'regression', 'target_mean': 10.0, 'target_std': 2.0}
    >>> InferenceModel(nn.Linear(2, 1), regression)(torch.zeros(1, 2)).shape
    torch.Size([1, 1])
    """

    mean: torch.Tensor
    std: torch.Tensor
    target_mean: torch.Tensor
    target_std: torch.Tensor

    def __init__(self, network: nn.Module, preprocessing: dict[str, Any]):
        super().__init__()
        self.network = network
        self.scales_input = "mean" in preprocessing  # token ids have no mean: they stay integers
        self.regression = preprocessing.get("task") == "regression"
        self.register_buffer("mean", torch.tensor(preprocessing.get("mean", 0.0), dtype=torch.float32))
        self.register_buffer("std", torch.tensor(preprocessing.get("std", 1.0), dtype=torch.float32))
        self.register_buffer("target_mean", torch.tensor(float(preprocessing.get("target_mean", 0.0))))
        self.register_buffer("target_std", torch.tensor(float(preprocessing.get("target_std", 1.0))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.network((x - self.mean) / self.std if self.scales_input else x)
        if self.regression:
            return output * self.target_std + self.target_mean
        return torch.softmax(output, dim=-1)


def strip_ddp_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove DDP's ``module.`` and torch.compile's ``_orig_mod.`` prefixes from parameter names.

    >>> list(strip_ddp_prefix({'module.fc.weight': 1}))
    ['fc.weight']
    """
    clean = {}
    for key, value in state_dict.items():
        for prefix in ("module.", "_orig_mod."):
            while key.startswith(prefix):
                key = key[len(prefix) :]
        clean[key] = value
    return clean


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a bundle computes."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("deepseek-ray", "torch", "ray", "onnx", "onnxruntime", "optuna", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


def save_bundle(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    model_spec: dict[str, Any],
    *,
    labels: list[str],
    input_shape: tuple[int, ...] | list[int],
    preprocessing: dict[str, Any],
    seed: int,
    kind: DataKind | None = None,
    config: dict[str, Any] | None = None,
    metrics: dict[str, float] | None = None,
) -> Path:
    """Write a bundle folder and return it; ``kind`` (the data's) is recorded by name and import path."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(strip_ddp_prefix(state_dict), path / WEIGHTS)
    meta = {
        "model": model_spec,
        "architecture": model_spec.get("arch"),
        "labels": list(labels),
        "input_shape": list(input_shape),
        "preprocessing": preprocessing,
        **(kind_metadata(kind) if kind is not None else {}),
        "seed": seed,
        "config": config or {},
        "metrics": metrics or {},
        "versions": package_versions(),
    }
    (path / META).write_text(json.dumps(meta, indent=2, default=str))
    return path


def load_bundle(path: str | Path) -> tuple[InferenceModel, dict[str, Any]]:
    """Load a bundle: the :class:`InferenceModel` (eval mode, CPU) and its metadata.

    >>> import tempfile
    >>> spec = {'type': 'mlp', 'in_features': 4, 'out_features': 3}
    >>> folder = save_bundle(tempfile.mkdtemp(), build_model(spec).state_dict(), spec, labels=['a', 'b', 'c'],
    ...                      input_shape=(4,), preprocessing={'mean': 0.0, 'std': 1.0}, seed=0)
    >>> model, meta = load_bundle(folder)
    >>> meta['labels'], model(torch.zeros(2, 4)).shape, model.training
    (['a', 'b', 'c'], torch.Size([2, 3]), False)
    """
    path = Path(path)
    if not (path / META).is_file():
        raise FileNotFoundError(
            f"no model bundle at {path} (expected {META} and {WEIGHTS}); run `deepseek-ray train` first"
        )
    meta = json.loads((path / META).read_text())
    network = build_model(meta["model"])
    network.load_state_dict(torch.load(path / WEIGHTS, map_location="cpu", weights_only=True))
    return InferenceModel(network, meta["preprocessing"]).eval(), meta
