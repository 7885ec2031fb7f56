"""The main job: data → search → train → baseline → export → serve, tracked in MLflow.

Each stage is a function that reads the previous stage's artifact from the run folder
(``output_dir/name``), so each also runs alone (``deepseek-ray search|train|export|serve``):

==============================  =========================================
``search/best.json``             the search result (best config + trial table)
``model/``                       the model bundle (loadable without Ray)
``export/model.onnx(.json)``     the ONNX model and its metadata (+ ``model.pt2``, quantized variants,
                                 the text tokenizer the endpoint uses)
``summary.json``                 the final table, as data
==============================  =========================================

The job follows the dataset's kind and task (``DatasetSplits.kind`` / ``.task``):

==============  ================  ==================  =============================================
kind            task              metric (val, test)  baseline (``train.baseline``)
==============  ================  ==================  =============================================
image           classification    accuracy            a plain 2-conv CNN, same recipe (Ray task)
tabular         either            accuracy or MAE     scikit-learn logistic / ridge regression
text            classification    accuracy            the majority class of the training split
timeseries      regression        MAE                 the last observed value (persistence)
==============  ================  ==================  =============================================

MAE is in the target's units: it is measured on the bundle's :class:`InferenceModel` (raw inputs in,
un-scaled predictions out), the same graph that is exported and served.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import OPTIONS_KIND, ExperimentConfig
from .data import DatasetSplits, load_dataset
from .report import Reporter, table
from .runtime import quiet_logger

TARGET_ACCURACY, TARGET_WALL_S = 0.97, 600.0
# What the final training (and each trial) reports, and which way is better.
TRAINING_METRICS = {"classification": {"val_accuracy": "max", "val_loss": "min"},
                    "regression": {"val_mae": "min", "val_loss": "min"}}
# The test metric of each task: (summary name, metrics key).
TEST_METRIC = {"classification": ("accuracy", "test_accuracy"), "regression": ("MAE", "test_mae")}
EXPORT_SUFFIX = {"onnx": ".onnx", "torch_export": ".pt2", "tensorrt": ".engine"}


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

    def served(self, model: str = "onnx") -> Path:
        """The ONNX file the endpoint serves: ``export/model.onnx`` or a quantized ``model.<type>.onnx``."""
        return self.onnx if model == "onnx" else self.onnx.with_name(f"model.{model}.onnx")

    def export(self, fmt: str) -> Path:
        """The exported file of one format: ``export/model.onnx``, ``model.pt2``, ``model.engine``."""
        return self.root / "export" / f"model{EXPORT_SUFFIX[fmt]}"

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
        return f"{value:.4f}" if abs(value) < 10 else f"{value:,.1f}"
    return str(value)


# ------------------------------------------------------------------------------------- the data
def _dataset_kind(cfg: ExperimentConfig) -> str | None:
    """The kind of ``data.dataset``: the registry's, else ``data.kind`` (``None``: inferred from the file)."""
    from .data import available_datasets, dataset_kind

    return dataset_kind(cfg.data.dataset) if cfg.data.dataset in available_datasets() else cfg.data.kind


def data_options(cfg: ExperimentConfig) -> dict[str, Any]:
    """The keyword options ``load_dataset`` passes to the kind's splitter, from ``data.text`` /
    ``data.window`` / ``data.tabular``; a section that does not fit the dataset's kind is an error.

    >>> from deepseek_ray.config import ExperimentConfig
    >>> data_options(ExperimentConfig(name='x', data={'dataset': 'co2', 'window': {'lookback': 12}}))
    {'lookback': 12, 'horizon': 1}
    """
    data = cfg.data
    kind = _dataset_kind(cfg)
    misfit = data.misfit(kind)  # the config checks data.kind itself; this checks a registered dataset's kind
    if misfit == "augment":
        raise ValueError(f"data.augment: {data.dataset} is a {kind} dataset; random_shift, mixup and cutmix are for images"
                         + (" (use data.text.augmentation)" if kind == "text" else ""))
    if misfit is not None:
        where = ", ".join(f"{section_kind} → data.{key}" for key, section_kind in OPTIONS_KIND.items())
        raise ValueError(f"data.{misfit}: {data.dataset} is a {kind} dataset; data.{misfit} is for "
                         f"{OPTIONS_KIND[misfit]} datasets ({where})")
    key = data.options_key
    return getattr(data, key).model_dump(exclude_none=True) if key else {}


def load_data(cfg: ExperimentConfig) -> DatasetSplits:
    """The experiment's dataset, split by its seed, with the options of its kind."""
    split = (cfg.data.split.train, cfg.data.split.val, cfg.data.split.test)
    options = data_options(cfg)
    # A file dataset with kind-specific options is of that kind (a CSV with `window:` is a time series).
    kind = cfg.data.kind or cfg.data.options_kind
    return load_dataset(cfg.data.dataset, split, cfg.seed, cfg.data.limit, label=cfg.data.label, kind=kind, **options)


def objective(cfg: ExperimentConfig, data: DatasetSplits) -> tuple[str, str]:
    """The final training's metric and mode: the search's first objective that training reports
    (``val_accuracy``/``val_loss`` for classification, ``val_mae``/``val_loss`` for regression).

    A training metric that does not fit the task, or a mode against its direction, is an error naming
    ``search.metric`` / ``search.mode`` and what is allowed.

    >>> from deepseek_ray.config import ExperimentConfig
    >>> cfg = ExperimentConfig(name='x', data={'dataset': 'sunspots'}, search={'metric': 'val_mae', 'mode': 'min'})
    >>> objective(cfg, load_dataset('sunspots'))
    ('val_mae', 'min')
    """
    allowed = TRAINING_METRICS[data.task]
    every = {m for metrics in TRAINING_METRICS.values() for m in metrics}
    metrics, modes = cfg.search.objectives()
    choices = ", ".join(f"{m} (mode {d})" for m, d in allowed.items())
    for metric, mode in zip(metrics, modes):
        if metric in every and metric not in allowed:
            raise ValueError(f"search.metric: {metric} is not reported for {data.name}, a {data.task} dataset; "
                             f"allowed: {choices}")
        if metric in allowed and mode != allowed[metric]:
            raise ValueError(f"search.mode: {metric} is better when {'higher' if allowed[metric] == 'max' else 'lower'}: "
                             f"use mode {allowed[metric]}, got {mode}")
    chosen = next((m for m in metrics if m in allowed), next(iter(allowed)))  # e.g. a latency-only search
    return chosen, allowed[chosen]


# -------------------------------------------------------------------------------- evaluation
def predict(model: Any, inputs: Any, batch_size: int = 512) -> Any:
    """Outputs of a bundle's ``InferenceModel`` (probabilities, or predictions in target units), in batches."""
    import torch

    with torch.no_grad():
        return _run_all(lambda batch: model(batch).float().numpy(), inputs, batch_size)


def targets(data: DatasetSplits, split: str = "test") -> Any:
    """A split's labels as a served model's outputs are compared with them: class indices, or
    regression targets in the target's units (un-scaled by the training split's mean and std)."""
    y = getattr(data, split).y.numpy()
    return in_target_units(y, data) if data.task == "regression" else y


def in_target_units(values: Any, data: DatasetSplits) -> Any:
    """Standardised regression values back in the target's units (the training split's mean and std)."""
    prep = data.preprocessing
    return values * float(prep.get("target_std", 1.0)) + float(prep.get("target_mean", 0.0))


def score(outputs: Any, y: Any, task: str) -> float:
    """Accuracy (classification: argmax of ``outputs``) or MAE (regression, over every horizon step).

    >>> import numpy as np
    >>> score(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), 'classification')
    0.5
    >>> score(np.array([[1.0], [3.0]]), np.array([[2.0], [2.0]]), 'regression')
    1.0
    """
    import numpy as np

    if task == "regression":
        return float(np.abs(np.asarray(outputs).reshape(np.shape(y)) - y).mean())
    return float((np.asarray(outputs).argmax(1) == y).mean())


def _inference_model(model_spec: dict[str, Any], weights: dict[str, Any], data: DatasetSplits) -> Any:
    from .models import build_model
    from .models.bundle import InferenceModel

    network = build_model(model_spec)
    network.load_state_dict(weights)
    return InferenceModel(network, data.preprocessing).eval()


# ------------------------------------------------------------------------------------- stages
def search_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any, resume: bool = False) -> Any:
    """The search (Ray Tune searchers, trials as Ray tasks); writes ``search/best.json``.

    ``resume=True`` continues an interrupted search of the same name and run folder.
    """
    from .hpo import run_search

    objective(cfg, data)  # a metric that does not fit the task fails here, before any trial
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


def train_settings(cfg: ExperimentConfig, search: Any, data: DatasetSplits) -> Any:
    """The final training recipe: the file's ``train`` section plus what the search chose; the metric,
    mode and task follow ``data``."""
    from .train import TrainSettings

    params = search.best_params
    metric, mode = objective(cfg, data)
    return TrainSettings(
        model_spec=search.model_spec, epochs=cfg.train.epochs,
        lr=cfg.train.optimizer.lr or params.get("lr", 1e-3), optimizer=cfg.train.optimizer.type,
        weight_decay=params.get("weight_decay", cfg.train.optimizer.weight_decay), precision=cfg.train.precision,
        compile=cfg.train.compile, batch_size=cfg.train.per_device_train_batch_size,
        accumulation=cfg.train.gradient_accumulation, clip_grad_norm=cfg.train.clip_grad_norm,
        schedule=cfg.train.scheduler.type, warmup_steps=cfg.train.scheduler.warmup_steps,
        patience=cfg.train.early_stopping_patience,
        augment=[a.model_dump() for a in cfg.data.augment], seed=cfg.seed, metric=metric, mode=mode,
        task=data.task,
    )


def train_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> dict[str, Any]:
    """Retrain the best configuration from scratch with Ray Train; write the model bundle.

    Returns the metrics: the training metric as Ray Train saw it (``val_accuracy``, or ``val_mae`` on the
    standardised target), and ``val_``/``test_`` accuracy or MAE (in the target's units) of the bundle's model.
    """
    from .hpo import SearchResult
    from .models import save_bundle
    from .train import train

    folder = RunFolder(cfg.run_dir)
    search = SearchResult.load(folder.best)
    settings = train_settings(cfg, search, data)
    reporter.line(f"{search.best_architecture} lr={settings.lr:.2e} on {cfg.train.workers} worker(s), "
                  f"{'GPU' if cfg.train.use_gpu else 'CPU'}, {cfg.train.precision}, best by {settings.metric}")
    result = train(settings, data, name=cfg.name, storage_path=folder.train, workers=cfg.train.workers,
                   use_gpu=cfg.train.use_gpu, max_failures=cfg.train.max_failures, progress=reporter.line)
    for report in result.history:
        tracker.log_metrics({k: v for k, v in report.items() if k.startswith(("train_", "val_"))}, stage="train", step=int(report["epoch"]))
    model = _inference_model(settings.model_spec, result.best_weights, data)
    name, key = TEST_METRIC[data.task]
    val_score = score(predict(model, data.raw("val")), targets(data, "val"), data.task)
    test_score = score(predict(model, data.raw("test")), targets(data, "test"), data.task)
    metrics = {settings.metric: result.best_metric, key.replace("test_", "val_") + ("_target_units" if data.task == "regression" else ""): val_score,
               key: test_score, "epochs": result.epochs_run, "wall_s": result.wall_s}
    save_bundle(
        folder.bundle, result.best_weights, settings.model_spec, labels=data.labels, input_shape=data.input_shape,
        preprocessing=data.preprocessing, seed=cfg.seed, config=cfg.model_dump(mode="json"), metrics=metrics,
    )
    tracker.log_metrics(metrics, stage="train")
    units = " (target units)" if data.task == "regression" else ""
    reporter.line(f"best {settings.metric}={result.best_metric:.4f}; val {name}={val_score:.4f}, test {name}={test_score:.4f}"
                  f"{units}; bundle in {folder.bundle}")
    return metrics


# ----------------------------------------------------------------------------------- baselines
def baseline_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> tuple[str, float]:
    """A simple baseline scored on the same test split; returns ``(what it is, its test accuracy or MAE)``.

    Images: a plain 2-conv CNN trained with the same recipe (fixed lr 1e-3), as a Ray task. Tabular:
    scikit-learn's logistic regression (classification) or ridge regression on the same features.
    Time series: the last observed value of the target, repeated over the horizon (persistence).
    Text: the most frequent class of the training split.
    """
    name, key = TEST_METRIC[data.task]
    described, value = {"image": _cnn_baseline, "tabular": _linear_baseline, "timeseries": _persistence_baseline,
                        "text": _majority_baseline}[data.kind](cfg, data)
    reporter.line(f"{described}: test {name}={value:.4f}")
    tracker.log_metrics({key: value}, stage="baseline")
    return described, value


def _cnn_baseline(cfg: ExperimentConfig, data: DatasetSplits) -> tuple[str, float]:
    import ray

    cpus = max(1, min(2, int(ray.cluster_resources().get("CPU", 1))))
    remote = ray.remote(_baseline_remote).options(num_cpus=cpus, name=f"{cfg.name}-baseline")
    return "plain 2-conv CNN", ray.get(remote.remote(cfg.model_dump(mode="json"), data, cpus))


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
    model = _inference_model(spec, best_state, data)
    return score(predict(model, data.raw("test")), targets(data, "test"), data.task)


def _linear_baseline(cfg: ExperimentConfig, data: DatasetSplits) -> tuple[str, float]:
    from sklearn.linear_model import LogisticRegression, Ridge

    x_train, x_test = data.train.x.numpy(), data.test.x.numpy()  # the model's own (scaled) features
    if data.task == "regression":
        fitted = Ridge(alpha=1.0).fit(x_train, data.train.y.numpy().ravel())
        outputs = in_target_units(fitted.predict(x_test), data)
        return "scikit-learn ridge regression", score(outputs[:, None], targets(data, "test"), "regression")
    fitted = LogisticRegression(max_iter=2000).fit(x_train, data.train.y.numpy())
    return "scikit-learn logistic regression", score(fitted.predict_proba(x_test), targets(data, "test"), "classification")


def _persistence_baseline(cfg: ExperimentConfig, data: DatasetSplits) -> tuple[str, float]:
    import numpy as np

    prep = data.preprocessing
    channel = prep["channels"].index(prep["target"])
    last = data.raw("test")[:, channel, -1].numpy()  # the last observed value of each raw window
    y = targets(data, "test")
    return "persistence: last value", score(np.repeat(last[:, None], y.shape[1], axis=1), y, "regression")


def _majority_baseline(cfg: ExperimentConfig, data: DatasetSplits) -> tuple[str, float]:
    import numpy as np

    majority = int(np.bincount(data.train.y.numpy(), minlength=data.num_classes).argmax())
    return f"majority class: {data.labels[majority]}", float((targets(data, "test") == majority).mean())


# -------------------------------------------------------------------------------------- export
def _save_tokenizer(preprocessing: dict[str, Any], export_dir: Path) -> str | None:
    """Put the text tokenizer beside the exported model, so the endpoint can take raw strings;
    returns its name relative to the export folder."""
    source = preprocessing.get("tokenizer")
    if not source:
        return None
    source_path = Path(source)
    if source_path.is_file():  # a trained wordpiece/bpe tokenizer.json, or a user's file
        shutil.copyfile(source_path, export_dir / "tokenizer.json")
        return "tokenizer.json"
    from .data import load_tokenizer

    target = export_dir / "tokenizer"
    if target.exists():
        shutil.rmtree(target)
    load_tokenizer(source).save_pretrained(str(target))  # a local folder or a hub name: a self-contained copy
    return "tokenizer"


def input_spec(data: DatasetSplits, export_dir: Path | None = None) -> dict[str, Any]:
    """What the endpoint needs to turn a request into model inputs, by kind (kept in the export metadata):
    text: ``max_len``, ``pad_id``, ``vocab_size`` and the tokenizer (copied into ``export_dir``);
    tabular: the raw columns and the fitted transform (so raw rows are accepted); time series: the
    channels, target, ``lookback`` and ``horizon``.

    >>> input_spec(load_dataset('sunspots'))['lookback']
    24
    """
    prep = data.preprocessing
    if data.kind == "text":
        tokenizer = _save_tokenizer(prep, export_dir) if export_dir is not None else None
        return {"max_len": prep["max_len"], "pad_id": prep.get("pad_id", 0), "vocab_size": prep["vocab_size"],
                "tokenizer": tokenizer}
    if data.kind == "tabular":
        return {"columns": [rule["name"] for rule in prep["transform"]["columns"]], "transform": prep["transform"],
                "features": prep["features"]}
    if data.kind == "timeseries":
        return {key: prep[key] for key in ("channels", "target", "lookback", "horizon")}
    return {}


def _tensorrt_missing() -> str:
    """Why TensorRT cannot build here ('' when it can): a failed build on a machine that has it is an error."""
    from .export import tensorrt_backend

    try:
        tensorrt_backend()
    except RuntimeError as err:
        return str(err)
    return ""


def _run_all(run: Callable[[Any], Any], inputs: Any, batch_size: int = 512) -> Any:
    import numpy as np

    return np.concatenate([run(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def export_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> dict[str, Any]:
    """Export the bundle in every ``export.formats`` and each ``export.quantize`` variant; check each on
    the whole test split against torch; return one row per variant (size, test metric, max |Δ|).

    The example inputs are the test split's raw inputs: images, float feature rows, float windows, or
    int64 token ids. Parity (fp32 formats): classes identical and max |Δp| ≤ ``parity_tolerance`` for
    classification; max |Δ| ≤ ``parity_tolerance`` × max(1, max |prediction|) for regression. Quantized
    variants are not held to parity (they differ by design): their test metric and class agreement are
    reported instead.
    """
    import numpy as np

    from .export import ModelExporter
    from .models import load_bundle
    from .quantization import quantize

    folder = RunFolder(cfg.run_dir)
    model, meta = load_bundle(folder.bundle)
    raw_test, y = data.raw("test"), targets(data, "test")
    expected = predict(model, raw_test)
    classification = data.task == "classification"
    bound = cfg.export.parity_tolerance * (1.0 if classification else max(1.0, float(np.abs(expected).max())))
    folder.onnx.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"labels": meta["labels"], "input_shape": meta["input_shape"],
                "architecture": meta["architecture"] or meta["model"].get("type"),
                "kind": data.kind, "task": data.task, "input_spec": input_spec(data, folder.onnx.parent)}
    name, key = TEST_METRIC[data.task]
    variants: list[dict[str, Any]] = []
    for fmt in cfg.export.formats:
        path = folder.export(fmt)
        if fmt == "tensorrt" and (missing := _tensorrt_missing()):
            reporter.line(f"tensorrt not built: {missing}")  # say so, and keep the other formats
            variants.append({"variant": fmt, "error": "no TensorRT or ONNX Runtime GPU provider here (see the export log)"})
            continue
        exporter = ModelExporter(format=fmt, optimize_level=cfg.export.optimize_level, opset=cfg.export.opset,
                                 parity_tolerance=bound)
        result = exporter.export(model, path, example_input=raw_test[:2], metadata=metadata)
        run = result.runner  # the session (program, engine) export's parity check loaded: not loaded again
        outputs = _run_all(lambda x: run(x.numpy()), raw_test)
        max_diff = float(np.abs(outputs - expected).max())
        agree = bool((outputs.argmax(1) == expected.argmax(1)).all()) if classification else None
        if max_diff > bound or agree is False:
            raise RuntimeError(f"{fmt} disagrees with torch on the test split: max |Δ|={max_diff:.2e} (bound {bound:.1e})"
                               + (f", identical classes: {agree}" if classification else ""))
        variants.append({"variant": fmt, "path": str(path), "size_bytes": result.size_bytes, key: score(outputs, y, data.task),
                         "max_abs_diff": max_diff, **({"identical_classes": agree} if classification else {})})
        tracker.log_artifact(path, "export")
        tracker.log_artifact(result.metadata_path, "export")
    for spec in cfg.export.quantize:
        options = spec.model_dump(exclude={"type"})
        calibration = data.raw("train").numpy() if spec.type == "int8_static" else None
        # onnxruntime.quantization warns through the root logger ("consider pre-processing"): stray lines
        with quiet_logger():
            result = quantize(folder.onnx, method=spec.type, calibration=calibration, **options)
        run = ModelExporter(optimize_level=cfg.export.optimize_level).runner(result.path)
        outputs = _run_all(lambda x: run(x.numpy()), raw_test)
        row = {"variant": f"onnx {spec.type}", "path": result.path, "size_bytes": result.size_bytes,
               key: score(outputs, y, data.task), "max_abs_diff": float(np.abs(outputs - expected).max()),
               "size_ratio": result.size_ratio}
        if classification:
            row["class_agreement"] = float((outputs.argmax(1) == expected.argmax(1)).mean())
        variants.append(row)
        tracker.log_artifact(result.path, "export")
    parameters = int(sum(np.prod(p.shape) for p in model.parameters()))
    for row in variants:
        if "error" not in row:
            tag = row["variant"].replace(" ", "_")
            tracker.log_metrics({f"{tag}_{k}": v for k, v in row.items() if k not in ("variant", "path")}, stage="export")
            reporter.line(f"{row['variant']}: {Path(row['path']).name} ({row['size_bytes'] / 1e3:.0f} kB), test {name}="
                          f"{row[key]:.4f}, max |Δ| vs torch={row['max_abs_diff']:.1e} over {len(raw_test)} test examples"
                          + (", classes identical" if row.get("identical_classes") else "")
                          + (f", classes agree {row['class_agreement']:.1%}" if "class_agreement" in row else ""))
    onnx_row = next((r for r in variants if r["variant"] == "onnx"), None)
    metrics = {"variants": variants, "parameters": parameters, "task": data.task}
    if onnx_row is not None:  # the file that is served and registered
        metrics |= {"max_abs_diff": onnx_row["max_abs_diff"], "size_bytes": onnx_row["size_bytes"],
                    f"onnx_{key}": onnx_row[key]}
        # onnx_<metric> was logged with its row above
        tracker.log_metrics({"max_abs_diff": onnx_row["max_abs_diff"], "size_bytes": onnx_row["size_bytes"],
                             "parameters": parameters}, stage="export")
    return metrics


# --------------------------------------------------------------------------------------- serve
def _payload_hint(meta: dict[str, Any]) -> str:
    """What a request body looks like, for the log line."""
    shape = "×".join(str(d) for d in meta.get("input_shape", []))
    kind = meta.get("kind", "image")
    if kind == "text":
        raw = "a string or a list of strings, or " if meta.get("input_spec", {}).get("tokenizer") else ""
        return f'{{"inputs": {raw}<{shape} token ids>}}'
    if kind == "tabular":
        return f'{{"inputs": {{column: value, ...}} or <{shape} feature values>}}'
    if kind == "timeseries":
        return f'{{"inputs": <{shape} window: channels × lookback steps>}}'
    return f'{{"inputs": <{shape} pixel values>}}'


def _check_servable(cfg: ExperimentConfig) -> None:
    if "onnx" not in cfg.export.formats:
        raise ValueError("serve: the endpoint serves the ONNX model; add onnx to export.formats (or run with --no-serve)")


def serve_stage(cfg: ExperimentConfig, reporter: Reporter) -> str:
    """Deploy the exported model on Ray Serve; return the endpoint URL."""
    from .deploy import deploy
    from .export import read_metadata

    folder = RunFolder(cfg.run_dir)
    _check_servable(cfg)
    path = folder.served(cfg.serve.model)
    if not path.is_file():
        raise FileNotFoundError(f"no exported model at {path}; run `deepseek-ray export` first")
    url = deploy(
        path, name=cfg.name, route=cfg.serve.route, host=cfg.serve.host, port=cfg.serve.port,
        batching=cfg.serve.batching.model_dump(), autoscaling=cfg.serve.autoscaling.model_dump(), num_cpus=cfg.serve.num_cpus,
    )
    served = "" if cfg.serve.model == "onnx" else f" [{cfg.serve.model}]"
    reporter.line(f"endpoint up{served}: POST {url}  (JSON {_payload_hint(read_metadata(path))})")
    return url


# -------------------------------------------------------------------------------- main job
def _summary_rows(data: DatasetSplits, search: Any, trained: dict[str, Any], exported: dict[str, Any],
                  baseline: tuple[str, float] | None) -> dict[str, Any]:
    """The task-specific rows of the final table."""
    name, key = TEST_METRIC[data.task]
    units = ", target units" if data.task == "regression" else ""
    scaled = " (standardised target)" if search.metric in ("val_mae", "val_loss") and data.task == "regression" else ""
    rows: dict[str, Any] = {
        "best architecture": search.best_architecture,
        "best lr": f"{search.best_params.get('lr', 0):.2e}",
        f"search: best {search.metric}{scaled}": search.best_metric,
        "search: trials / stop": f"{len(search.trials)} / {search.stop_reason}",
    }
    if data.task == "classification":
        rows["val accuracy (final)"] = trained["val_accuracy"]
        rows["test accuracy (torch)"] = trained["test_accuracy"]
    else:
        rows["val MAE (final, target units)"] = trained["val_mae_target_units"]
        rows[f"test MAE (torch{units})"] = trained["test_mae"]
    for row in exported["variants"]:
        label = {"onnx": "ONNX Runtime", "torch_export": "torch.export", "tensorrt": "TensorRT"}.get(
            row["variant"], row["variant"].replace("onnx ", "ONNX Runtime "))
        if "error" in row:
            rows[f"test {name} ({label})"] = f"not built: {row['error']}"
        else:
            rows[f"test {name} ({label}{units})"] = row[key]
    if baseline is not None:
        rows[f"baseline test {name} ({baseline[0]}{units})"] = baseline[1]
    rows["max |Δp| torch vs ONNX" if data.task == "classification" else "max |Δ| torch vs ONNX (target units)"] = \
        f"{exported.get('max_abs_diff', float('nan')):.1e}"
    sizes = [f"{row['variant']} {row['size_bytes'] / 1e3:.0f} kB" for row in exported["variants"] if "error" not in row]
    rows["model size"] = f"{exported['parameters']:,} parameters; " + ", ".join(sizes)
    return rows


def run_pipeline(cfg: ExperimentConfig, *, serve: bool = True, reporter: Reporter | None = None, resume: bool = False) -> Summary:
    """Every stage in order, one MLflow run around them; returns the final table.

    >>> from deepseek_ray.config import load                          # doctest: +SKIP
    >>> print(run_pipeline(load('examples/quickstart.yaml')).render())  # doctest: +SKIP
    """
    from .models import package_versions
    from .tracking import Tracker, config_hash, git_commit

    if serve:  # fail before the search, not after it
        _check_servable(cfg)
    reporter = reporter or Reporter()
    folder = RunFolder(cfg.run_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    tracker = Tracker.from_config(cfg.tracking, cfg.name)
    config_dict = cfg.model_dump(mode="json")
    with tracker.run(cfg.name, tags={"deepseek_ray.stage": "pipeline"}):
        with reporter.stage("data"):
            data = load_data(cfg)
            reporter.line(", ".join(f"{k}={v}" for k, v in data.summary().items()))
            objective(cfg, data)
        tracker.log_params({"config": config_dict, "config_hash": config_hash(config_dict), "data_hash": data.fingerprint,
                            "git_commit": git_commit(Path(__file__).parent), "versions": package_versions()})
        with reporter.stage("search"):
            search = search_stage(cfg, data, reporter, tracker, resume=resume)
        with reporter.stage("train"):
            trained = train_stage(cfg, data, reporter, tracker)
        baseline = None
        if cfg.train.baseline:
            with reporter.stage("baseline"):
                baseline = baseline_stage(cfg, data, reporter, tracker)
        with reporter.stage("export"):
            exported = export_stage(cfg, data, reporter, tracker)
            # export_stage wrote model.onnx or raised; a stale one from an earlier run must not be registered
            version = tracker.register_onnx(folder.onnx, cfg.tracking.registered_model_name or cfg.name) \
                if "onnx" in cfg.export.formats else None
        url = None
        if serve:
            with reporter.stage("serve"):
                url = serve_stage(cfg, reporter)
        total = time.perf_counter() - reporter.start  # from the command's start: Ray's start-up counts
        values = {
            **_summary_rows(data, search, trained, exported, baseline),
            "MLflow": f"{tracker.tracking_uri} run {tracker.run_id} model v{version}" if tracker.enabled else "off",
            "endpoint": url or "not served (--no-serve)",
            "total wall": f"{total:.1f} s (target ≤ {TARGET_WALL_S:.0f} s: {'met' if total <= TARGET_WALL_S else 'MISSED'})",
        }
        if data.kind == "image":  # the quickstart's promise: ≥ 97% and at least the plain CNN
            met = trained["test_accuracy"] >= TARGET_ACCURACY and (baseline is None or trained["test_accuracy"] >= baseline[1])
            values["accuracy target (≥ 0.97 and ≥ baseline)"] = "met" if met else "MISSED"
        elif baseline is not None:
            at_least = trained["test_accuracy"] >= baseline[1] if data.task == "classification" \
                else trained["test_mae"] <= baseline[1]
            values["at least as good as the baseline"] = "yes" if at_least else "NO"
        tracker.log_metrics({"total_wall_s": total}, stage="pipeline")
    summary = Summary(cfg.name, values, dict(reporter.walls))
    folder.summary.write_text(json.dumps(asdict(summary), indent=2, default=str))
    return summary
