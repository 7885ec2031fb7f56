"""The main job: data → search → train → export → serve, tracked in MLflow.

Each stage is a function that reads the previous stage's artifact from the run folder
(``output_dir/name``), so each also runs alone (``deepseek-ray search|train|export|serve``):

==============================  =========================================
``search/best.json``             the search result (best config + trial table)
``model/``                       the model bundle (loadable without Ray)
``export/model.onnx(.json)``     the ONNX model and its metadata
``summary.json``                 the final table, as data
==============================  =========================================
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import ExperimentConfig
from .data import DatasetSplits, load_dataset
from .report import Reporter, table

TARGET_ACCURACY, TARGET_WALL_S = 0.97, 600.0


@dataclass
class RunFolder:
    """Where each stage's artifact lives inside ``output_dir/name``."""

    root: Path

    @property
    def best(self) -> Path:
        return self.root / "search" / "best.json"

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def bundle(self) -> Path:
        return self.root / "model"

    @property
    def onnx(self) -> Path:
        return self.root / "export" / "model.onnx"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


@dataclass
class Summary:
    """The final table, as data (also written to ``summary.json``)."""

    name: str
    values: dict[str, Any] = field(default_factory=dict)
    walls: dict[str, float] = field(default_factory=dict)

    def render(self) -> str:
        rows = [(key, _fmt(value)) for key, value in self.values.items()]
        rows += [(f"wall: {stage}", f"{wall:.1f} s") for stage, wall in self.walls.items()]
        return table(rows, header=[f"experiment {self.name}", "result"])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if value < 10 else f"{value:,.1f}"
    return str(value)


# ------------------------------------------------------------------------------------- stages
def load_data(cfg: ExperimentConfig) -> DatasetSplits:
    """The experiment's dataset, split by its seed."""
    split = (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test)
    return load_dataset(cfg.data.dataset, split, cfg.seed, cfg.data.limit, label=cfg.data.label)


def search_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any, resume: bool = False) -> Any:
    """The search (Ray Tune searchers, trials as Ray tasks); writes ``search/best.json``.

    ``resume=True`` continues an interrupted search of the same name and run folder.
    """
    from .hpo import run_search

    folder = RunFolder(cfg.run_dir)
    result = run_search(
        cfg.search, data, name=cfg.name, storage_path=folder.search, seed=cfg.seed, augment=cfg.data.augment,
        weight_decay=cfg.train.optimizer.weight_decay, progress=reporter.line, resume=resume,
    )
    result.save(folder.best)
    reporter.line(f"{len(result.trials)} trials, {result.stop_reason}; best {result.best_architecture} "
                  f"{result.metric}={result.best_metric:.4f}")
    tracker.log_trials(result.trials, result.metric)
    tracker.log_metrics({"best_" + result.metric: result.best_metric, "trials": len(result.trials), "wall_s": result.wall_s}, stage="search")
    tracker.log_dict({"trials": result.trials, "best": result.best_params}, "search/trials.json")
    return result


def train_settings(cfg: ExperimentConfig, search: Any) -> Any:
    """The final training recipe: the file's ``train`` section plus what the search chose."""
    from .train import TrainSettings

    params = search.best_params
    return TrainSettings(
        model_spec=search.model_spec, epochs=cfg.train.epochs,
        lr=cfg.train.optimizer.lr or params.get("lr", 1e-3), optimizer=cfg.train.optimizer.type,
        weight_decay=params.get("weight_decay", cfg.train.optimizer.weight_decay), precision=cfg.train.precision,
        compile=cfg.train.compile, batch_size=cfg.train.per_device_train_batch_size,
        accumulation=cfg.train.gradient_accumulation, clip_grad_norm=cfg.train.clip_grad_norm,
        schedule=cfg.train.scheduler.type, warmup_steps=cfg.train.scheduler.warmup_steps,
        patience=cfg.train.early_stopping_patience,
        augment=[a.model_dump() for a in cfg.data.augment], seed=cfg.seed, metric="val_accuracy", mode="max",
    )


def train_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> dict[str, Any]:
    """Retrain the best configuration from scratch with Ray Train; write the model bundle."""
    from .hpo import SearchResult
    from .models import save_bundle
    from .train import train

    folder = RunFolder(cfg.run_dir)
    search = SearchResult.load(folder.best)
    settings = train_settings(cfg, search)
    reporter.line(f"{search.best_architecture} lr={settings.lr:.2e} on {cfg.train.workers} worker(s), "
                  f"{'GPU' if cfg.train.use_gpu else 'CPU'}, {cfg.train.precision}")
    result = train(settings, data, name=cfg.name, storage_path=folder.train, workers=cfg.train.workers,
                   use_gpu=cfg.train.use_gpu, max_failures=cfg.train.max_failures, progress=reporter.line)
    for report in result.history:
        tracker.log_metrics({k: v for k, v in report.items() if k.startswith(("train_", "val_"))}, stage="train", step=int(report["epoch"]))
    test_accuracy = _test_accuracy(settings.model_spec, result.best_weights, data)
    metrics = {"val_accuracy": result.best_metric, "test_accuracy": test_accuracy, "epochs": result.epochs_run, "wall_s": result.wall_s}
    save_bundle(
        folder.bundle, result.best_weights, settings.model_spec, labels=data.labels, input_shape=data.input_shape,
        preprocessing=data.preprocessing, seed=cfg.seed, config=cfg.model_dump(mode="json"), metrics=metrics,
    )
    tracker.log_metrics(metrics, stage="train")
    reporter.line(f"best val_accuracy={result.best_metric:.4f}, test_accuracy={test_accuracy:.4f}; bundle in {folder.bundle}")
    return metrics


def _test_accuracy(model_spec: dict[str, Any], weights: dict[str, Any], data: DatasetSplits) -> float:
    import torch

    from .models import build_model

    model = build_model(model_spec)
    model.load_state_dict(weights)
    model.eval()
    with torch.no_grad():
        predictions = model(data.test.x).argmax(1)
    return float((predictions == data.test.y).float().mean())


def baseline_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> float:
    """A plain 2-conv CNN trained with the same recipe (fixed lr 1e-3), for comparison; its test accuracy."""
    import ray

    cpus = max(1, min(2, int(ray.cluster_resources().get("CPU", 1))))
    remote = ray.remote(_baseline_remote).options(num_cpus=cpus, name=f"{cfg.name}-baseline")
    accuracy = ray.get(remote.remote(cfg.model_dump(mode="json"), data, cpus))
    reporter.line(f"plain 2-conv CNN: test_accuracy={accuracy:.4f}")
    tracker.log_metrics({"test_accuracy": accuracy}, stage="baseline")
    return accuracy


def _baseline_remote(config: dict[str, Any], data: DatasetSplits, threads: int) -> float:
    import torch

    from .train import TrainSettings, build_trainer

    cfg = ExperimentConfig.model_validate(config)
    spec = {"type": "plain_cnn", "in_channels": data.input_shape[0], "num_classes": data.num_classes, "image_size": data.input_shape[-1]}
    settings = TrainSettings(
        model_spec=spec, epochs=cfg.train.epochs, lr=1e-3, weight_decay=cfg.train.optimizer.weight_decay,
        batch_size=cfg.train.per_device_train_batch_size * cfg.train.workers, clip_grad_norm=cfg.train.clip_grad_norm,
        schedule=cfg.train.scheduler.type, warmup_steps=cfg.train.scheduler.warmup_steps,
        augment=[a.model_dump() for a in cfg.data.augment], seed=cfg.seed,
    )
    torch.set_num_threads(threads)
    trainer = build_trainer(settings, data.num_classes, distributed=False)
    best, best_state = -1.0, None

    def keep_best(epoch: int, metrics: dict[str, float]) -> None:
        nonlocal best, best_state
        if metrics["val_accuracy"] > best:
            best, best_state = metrics["val_accuracy"], {k: v.clone() for k, v in trainer.model.state_dict().items()}

    trainer.fit(data.train, data.val, epochs=settings.epochs, on_epoch_end=keep_best)
    return _test_accuracy(spec, best_state, data)


def export_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> dict[str, Any]:
    """ONNX export of the bundle, checked against torch on every test image."""
    import numpy as np
    import torch

    from .export import ModelExporter, onnx_predict, onnx_session
    from .models import load_bundle

    folder = RunFolder(cfg.run_dir)
    model, meta = load_bundle(folder.bundle)
    exporter = ModelExporter(format="onnx", optimize_level=cfg.export.optimize_level, opset=cfg.export.opset)
    raw_test = data.raw("test")
    result = exporter.export(model, folder.onnx, example_input=raw_test[:2],
                             metadata={"labels": meta["labels"], "input_shape": meta["input_shape"], "architecture": meta["architecture"]})
    max_diff = exporter.parity(model, folder.onnx, raw_test)
    with torch.no_grad():
        torch_classes = model(raw_test).argmax(1).numpy()
    onnx_classes = onnx_predict(onnx_session(folder.onnx, cfg.export.optimize_level), raw_test.numpy()).argmax(1)
    agree = bool((torch_classes == onnx_classes).all())
    if max_diff > cfg.export.parity_tolerance or not agree:
        raise RuntimeError(f"ONNX Runtime disagrees with torch: max |Δp|={max_diff:.2e}, identical classes: {agree}")
    accuracy = float((onnx_classes == data.test.y.numpy()).mean())
    metrics = {"max_abs_diff": max_diff, "identical_classes": agree, "onnx_test_accuracy": accuracy,
               "size_bytes": result.size_bytes, "parameters": int(sum(np.prod(p.shape) for p in model.parameters()))}
    tracker.log_metrics(metrics, stage="export")
    tracker.log_artifact(folder.onnx, "export")
    tracker.log_artifact(result.metadata_path, "export")
    reporter.line(f"{folder.onnx} ({result.size_bytes / 1e3:.0f} kB): max |Δp|={max_diff:.1e} over {len(raw_test)} "
                  f"test images, classes identical, ONNX test_accuracy={accuracy:.4f}")
    return metrics


def serve_stage(cfg: ExperimentConfig, reporter: Reporter) -> str:
    """Deploy the exported model on Ray Serve; return the endpoint URL."""
    from .deploy import deploy

    folder = RunFolder(cfg.run_dir)
    if not folder.onnx.is_file():
        raise FileNotFoundError(f"no exported model at {folder.onnx}; run `deepseek-ray export` first")
    url = deploy(
        folder.onnx, name=cfg.name, route=cfg.serve.route, host=cfg.serve.host, port=cfg.serve.port,
        batching=cfg.serve.batching.model_dump(), autoscaling=cfg.serve.autoscaling.model_dump(), num_cpus=cfg.serve.num_cpus,
    )
    reporter.line(f"endpoint up: POST {url}  (JSON {{\"inputs\": <28×28 pixel values>}})")
    return url


# -------------------------------------------------------------------------------- main job
def run_pipeline(cfg: ExperimentConfig, *, serve: bool = True, reporter: Reporter | None = None, resume: bool = False) -> Summary:
    """Every stage in order, one MLflow run around them; returns the final table.

    >>> from deepseek_ray.config import load                          # doctest: +SKIP
    >>> print(run_pipeline(load('examples/quickstart.yaml')).render())  # doctest: +SKIP
    """
    from .models import package_versions
    from .tracking import Tracker, config_hash, git_commit

    reporter = reporter or Reporter()
    folder = RunFolder(cfg.run_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    tracker = Tracker.from_config(cfg.tracking, cfg.name)
    config_dict = cfg.model_dump(mode="json")
    values: dict[str, Any] = {}
    with tracker.run(cfg.name, tags={"deepseek_ray.stage": "pipeline"}):
        with reporter.stage("data"):
            data = load_data(cfg)
            reporter.line(", ".join(f"{k}={v}" for k, v in data.summary().items()))
        tracker.log_params({"config": config_dict, "config_hash": config_hash(config_dict), "data_hash": data.fingerprint,
                            "git_commit": git_commit(Path(__file__).parent), "versions": package_versions()})
        with reporter.stage("search"):
            search = search_stage(cfg, data, reporter, tracker, resume=resume)
        with reporter.stage("train"):
            trained = train_stage(cfg, data, reporter, tracker)
        if cfg.train.baseline:
            with reporter.stage("baseline"):
                values["baseline test accuracy (plain 2-conv CNN)"] = baseline_stage(cfg, data, reporter, tracker)
        with reporter.stage("export"):
            exported = export_stage(cfg, data, reporter, tracker)
            version = tracker.register_onnx(folder.onnx, cfg.tracking.registered_model_name or cfg.name)
        url = None
        if serve:
            with reporter.stage("serve"):
                url = serve_stage(cfg, reporter)
        total = time.perf_counter() - reporter.start  # from the command's start: Ray's start-up counts
        values = {
            "best architecture": search.best_architecture,
            "best lr": f"{search.best_params.get('lr', 0):.2e}",
            f"search: best {search.metric}": search.best_metric,
            "search: trials / stop": f"{len(search.trials)} / {search.stop_reason}",
            "val accuracy (final)": trained["val_accuracy"],
            "test accuracy (torch)": trained["test_accuracy"],
            "test accuracy (ONNX Runtime)": exported["onnx_test_accuracy"],
            **values,
            "max |Δp| torch vs ONNX": f"{exported['max_abs_diff']:.1e}",
            "model size": f"{exported['parameters']:,} parameters, {exported['size_bytes'] / 1e3:.0f} kB ONNX",
            "MLflow": f"{tracker.tracking_uri} run {tracker.run_id} model v{version}" if tracker.enabled else "off",
            "endpoint": url or "not served (--no-serve)",
            "total wall": f"{total:.1f} s (target ≤ {TARGET_WALL_S:.0f} s: {'met' if total <= TARGET_WALL_S else 'MISSED'})",
        }
        baseline = values.get("baseline test accuracy (plain 2-conv CNN)")
        met = trained["test_accuracy"] >= TARGET_ACCURACY and (baseline is None or trained["test_accuracy"] >= baseline)
        values["accuracy target (≥ 0.97 and ≥ baseline)"] = "met" if met else "MISSED"
        tracker.log_metrics({"total_wall_s": total}, stage="pipeline")
    summary = Summary(cfg.name, values, dict(reporter.walls))
    folder.summary.write_text(json.dumps(asdict(summary), indent=2, default=str))
    return summary
