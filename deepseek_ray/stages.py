"""The pipeline's stages: each reads the previous stage's artifact from the run folder and returns a typed result.

Each stage also runs alone (``deepseek-ray search|train|export|serve``), reading what came before from
``output_dir/name``:

==============================  =========================================
``search/best.json``             the search result (best config + trial table)
``model/``                       the model bundle (loadable without Ray)
``export/model.onnx(.json)``     the ONNX model and its metadata (+ ``model.pt2``, quantized variants,
                                 the text tokenizer the endpoint uses)
``summary.json``                 the final table, as data
==============================  =========================================

What differs per kind of data (the baseline, the export's input spec, what a request looks like) is the
data's kind class's (:mod:`deepseek_ray.data.kinds`); what differs per task is the metric: accuracy, or MAE in
the target's units, measured on the bundle's :class:`~deepseek_ray.models.bundle.InferenceModel` (raw inputs in,
un-scaled predictions out), the same graph that is exported and served.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .config import METRICS, ExperimentConfig
from .config.registries import EXPORT_FORMATS
from .data import DatasetSplits
from .report import Reporter
from .runtime import quiet_logger

METRIC_NAME = {"classification": "accuracy", "regression": "MAE"}  # the test metric of each task


@dataclass
class RunFolder:
    """Where each stage's artifact lives inside ``output_dir/name``.

    >>> RunFolder(Path('runs/x')).export('torch_export').as_posix()
    'runs/x/export/model.pt2'
    """

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
        """The file the endpoint serves: ``export/model.onnx``, ``model.pt2`` or a quantized ``model.<type>.onnx``."""
        if model == "torch_export":
            return self.export(model)
        return self.onnx if model == "onnx" else self.onnx.with_name(f"model.{model}.onnx")

    def export(self, fmt: str) -> Path:
        """The exported file of one format: ``export/model.onnx``, ``model.pt2``, ``model.engine``."""
        return self.root / "export" / f"model{EXPORT_FORMATS[fmt]}"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"


# -------------------------------------------------------------------------------- evaluation
def objective(cfg: ExperimentConfig, data: DatasetSplits) -> tuple[str, str]:
    """The final training's metric and mode: the search's first objective that training reports for the
    data's task (:data:`~deepseek_ray.config.METRICS`), else the task's own (``val_accuracy``, ``val_mae``).

    A training metric that the task does not report is an error naming ``search.metric`` and what is allowed.

    >>> from deepseek_ray.config import ExperimentConfig
    >>> from deepseek_ray.data import load_dataset
    >>> cfg = ExperimentConfig(name='x', data={'dataset': 'sunspots'}, search={'metric': 'val_mae', 'mode': 'min'})
    >>> objective(cfg, load_dataset('sunspots'))
    ('val_mae', 'min')
    """
    reported = {name: m for name, m in METRICS.items() if m.by_training and m.reported_for(data.task)}
    metrics, _ = cfg.search.objectives()
    for metric in metrics:
        if metric in METRICS and METRICS[metric].by_training and metric not in reported:
            allowed = ", ".join(f"{m} (mode {r.mode})" for m, r in reported.items())
            raise ValueError(
                f"search.metric: {metric} is not reported for {data.name}, a {data.task} dataset; allowed: {allowed}"
            )
    own = next(name for name, m in reported.items() if data.task in m.tasks)
    chosen = next((m for m in metrics if m in reported), own)  # e.g. a latency-only search
    return chosen, reported[chosen].mode


def score(outputs: Any, y: Any, task: str) -> float:
    """Accuracy (classification: argmax of ``outputs``) or MAE (regression, over every horizon step).

    >>> score(np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0]), 'classification')
    0.5
    >>> score(np.array([[1.0], [3.0]]), np.array([[2.0], [2.0]]), 'regression')
    1.0
    """
    if task == "regression":
        return float(np.abs(np.asarray(outputs).reshape(np.shape(y)) - y).mean())
    return float((np.asarray(outputs).argmax(1) == y).mean())


def predict(model: Any, inputs: Any, batch_size: int = 512) -> np.ndarray:
    """Outputs of a bundle's ``InferenceModel`` (probabilities, or predictions in target units), in batches."""
    import torch

    with torch.no_grad():
        return _run_all(lambda batch: model(batch).float().numpy(), inputs, batch_size)


def _run_all(run: Callable[[Any], Any], inputs: Any, batch_size: int = 512) -> np.ndarray:
    """``run`` over ``inputs`` in batches, the outputs concatenated."""
    return np.concatenate([run(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)])


def _inference_model(model_spec: dict[str, Any], weights: dict[str, Any], data: DatasetSplits) -> Any:
    from .models import build_model
    from .models.bundle import InferenceModel

    network = build_model(model_spec)
    network.load_state_dict(weights)
    return InferenceModel(network, data.preprocessing).eval()


# ------------------------------------------------------------------------------------ search
def search_stage(
    cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any, resume: bool = False
) -> Any:
    """The search (``Tuner.fit``: Tune searchers and schedulers); writes ``search/best.json``; returns the
    :class:`~deepseek_ray.hpo.SearchResult`. ``resume=True`` continues an interrupted search of the same
    name and run folder."""
    from .hpo import run_search

    objective(cfg, data)  # a metric that does not fit the task fails here, before any trial
    folder = RunFolder(cfg.run_dir)
    result = run_search(
        cfg.search,
        data,
        name=cfg.name,
        storage_path=folder.search,
        seed=cfg.seed,
        augment=cfg.data.augment,
        recipe=cfg.train,
        progress=reporter.line,
        resume=resume,
    )
    result.save(folder.best)
    reporter.line(
        f"{len(result.trials)} trials, {result.stop_reason}; best {result.best_architecture} "
        f"{result.metric}={result.best_metric:.4f}"
    )
    tracker.log_trials(result.trials, result.metric)
    tracker.log_metrics(
        {"best_" + result.metric: result.best_metric, "trials": len(result.trials), "wall_s": result.wall_s},
        stage="search",
    )
    tracker.log_dict({"trials": result.trials, "best": result.best_params}, "search/trials.json")
    return result


# ------------------------------------------------------------------------------------- train
@dataclass
class Trained:
    """The train stage's result: the metric Ray Train picked the best epoch by, and the bundle's scores."""

    task: str
    metric: str  # val_accuracy, or val_mae on the standardised target
    best_metric: float
    val_score: float  # accuracy, or MAE in the target's units, of the bundle's model
    test_score: float
    epochs: int
    wall_s: float

    def metrics(self) -> dict[str, float]:
        """What MLflow and the bundle record: ``val_accuracy``/``test_accuracy``, or for regression the
        training's ``val_mae`` beside ``val_mae_target_units`` and ``test_mae``."""
        short = METRIC_NAME[self.task].lower()
        units = "_target_units" if self.task == "regression" else ""
        return {
            self.metric: self.best_metric,
            f"val_{short}{units}": self.val_score,
            f"test_{short}": self.test_score,
            "epochs": self.epochs,
            "wall_s": self.wall_s,
        }


def train_settings(cfg: ExperimentConfig, search: Any) -> Any:
    """The final training recipe: the file's ``train`` section with the hyperparameters the search chose in
    place (:meth:`TrainConfig.with_params`, as in each trial), except that a ``lr`` the file gives wins. A
    searched ``batch_size`` was one trial's batch: the run splits it across its workers.

    >>> from types import SimpleNamespace
    >>> from deepseek_ray.config import ExperimentConfig
    >>> cfg = ExperimentConfig.model_validate({'name': 'x', 'data': {'dataset': 'digits'}, 'train': {'workers': 2}})
    >>> recipe = train_settings(cfg, SimpleNamespace(best_params={'lr': 0.01, 'batch_size': 32, 'cells': 2}))
    >>> recipe.optimizer.lr, recipe.per_device_train_batch_size
    (0.01, 16)
    """
    params = {"lr": 1e-3, **search.best_params}
    if cfg.train.optimizer.lr:
        params["lr"] = cfg.train.optimizer.lr
    if "batch_size" in params:
        params["batch_size"] = max(1, int(params["batch_size"]) // cfg.train.workers)
    return cfg.train.with_params(params)


def train_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> Trained:
    """Retrain the best configuration from scratch with Ray Train; write the model bundle."""
    from .hpo import SearchResult
    from .models import save_bundle
    from .train import train

    folder = RunFolder(cfg.run_dir)
    search = SearchResult.load(folder.best)
    recipe = train_settings(cfg, search)
    metric, mode = objective(cfg, data)
    reporter.line(
        f"{search.best_architecture} lr={recipe.optimizer.lr:.2e} on {recipe.workers} worker(s), "
        f"{'GPU' if recipe.use_gpu else 'CPU'}, {recipe.precision}, best by {metric}"
    )
    result = train(
        recipe,
        data,
        model_spec=search.model_spec,
        name=cfg.name,
        storage_path=folder.train,
        metric=metric,
        mode=mode,
        seed=cfg.seed,
        augment=[a.model_dump() for a in cfg.data.augment],
        progress=reporter.line,
    )
    for report in result.history:
        epoch_metrics = {k: v for k, v in report.items() if k.startswith(("train_", "val_"))}
        tracker.log_metrics(epoch_metrics, stage="train", step=int(report["epoch"]))
    model = _inference_model(search.model_spec, result.best_weights, data)
    val_score, test_score = (
        score(predict(model, data.raw(split)), data.targets(split), data.task) for split in ("val", "test")
    )
    trained = Trained(data.task, metric, result.best_metric, val_score, test_score, result.epochs_run, result.wall_s)
    save_bundle(
        folder.bundle,
        result.best_weights,
        search.model_spec,
        labels=data.labels,
        input_shape=data.input_shape,
        preprocessing=data.preprocessing,
        seed=cfg.seed,
        kind=data.kind,
        config=cfg.model_dump(mode="json"),
        metrics=trained.metrics(),
    )
    tracker.log_metrics(trained.metrics(), stage="train")
    name, units = METRIC_NAME[data.task], " (target units)" if data.task == "regression" else ""
    reporter.line(
        f"best {metric}={result.best_metric:.4f}; val {name}={val_score:.4f}, test {name}={test_score:.4f}"
        f"{units}; bundle in {folder.bundle}"
    )
    return trained


# ---------------------------------------------------------------------------------- baseline
@dataclass
class BaselineResult:
    """A simple baseline (its kind's :meth:`~deepseek_ray.data.DataKind.baseline`) scored on the test split."""

    description: str
    test_score: float


def baseline_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> BaselineResult:
    """The data kind's baseline, scored on the same test split: a plain CNN trained with the run's recipe
    (images, as a Ray task), a scikit-learn linear model (tables), persistence (time series), the majority
    class (text)."""
    baseline = data.kind.baseline(data)
    spec = baseline.model_spec
    outputs = baseline.outputs if spec is None else _trained_baseline(cfg, data, spec)
    result = BaselineResult(baseline.description, score(outputs, data.targets("test"), data.task))
    reporter.line(f"{result.description}: test {METRIC_NAME[data.task]}={result.test_score:.4f}")
    tracker.log_metrics({f"test_{METRIC_NAME[data.task].lower()}": result.test_score}, stage="baseline")
    return result


def _trained_baseline(cfg: ExperimentConfig, data: DatasetSplits, model_spec: dict[str, Any]) -> np.ndarray:
    """The test outputs of ``model_spec`` trained with the run's recipe (fixed lr 1e-3), in a Ray task."""
    import ray

    cpus = max(1, min(2, int(ray.cluster_resources().get("CPU", 1))))
    remote = ray.remote(_baseline_remote).options(num_cpus=cpus, name=f"{cfg.name}-baseline")
    return ray.get(remote.remote(cfg.model_dump(mode="json"), data, model_spec, cpus))


def _baseline_remote(config: dict[str, Any], data: DatasetSplits, model_spec: dict[str, Any], threads: int) -> Any:
    import torch

    from .optim import BestWeights
    from .train import build_trainer

    cfg = ExperimentConfig.model_validate(config)
    # The run's recipe with the baseline's own fixed parts: AdamW at lr 1e-3 in fp32, one process taking
    # every worker's examples per step.
    recipe = cfg.train.model_copy(
        update={
            "optimizer": cfg.train.optimizer.model_copy(update={"type": "adamw", "lr": 1e-3}),
            "precision": "fp32",
            "compile": False,
            "gradient_accumulation": 1,
            "per_device_train_batch_size": cfg.train.per_device_train_batch_size * cfg.train.workers,
        }
    )
    torch.set_num_threads(threads)
    best = BestWeights(*objective(cfg, data))
    trainer = build_trainer(
        recipe, model_spec, data, seed=cfg.seed, augment=[a.model_dump() for a in cfg.data.augment], callbacks=[best]
    )
    trainer.fit(data.train, data.val, epochs=recipe.epochs)
    if best.weights is None:
        raise RuntimeError("the baseline's training reported no epoch")
    return predict(_inference_model(model_spec, best.weights, data), data.raw("test"))


# ------------------------------------------------------------------------------------ export
@dataclass
class Variant:
    """One exported or quantized model file, scored on the whole test split (``error``: why it was not built)."""

    name: str  # an export format (onnx, torch_export, tensorrt) or "onnx <quantization>"
    path: str = ""
    size_bytes: int = 0
    test_score: float = float("nan")
    max_abs_diff: float = float("nan")  # vs torch, over the test split
    class_agreement: float | None = None  # quantized classifiers: share of test examples classed as torch does
    size_ratio: float | None = None  # quantized: its size ÷ the fp32 file's
    error: str = ""

    @property
    def label(self) -> str:
        """How the final table names it."""
        names = {"onnx": "ONNX Runtime", "torch_export": "torch.export", "tensorrt": "TensorRT"}
        return names.get(self.name, self.name.replace("onnx ", "ONNX Runtime "))

    def metrics(self) -> dict[str, float]:
        """What MLflow records of it (prefixed with the variant's name)."""
        values = {
            "size_bytes": self.size_bytes,
            "test_score": self.test_score,
            "max_abs_diff": self.max_abs_diff,
            "class_agreement": self.class_agreement,
            "size_ratio": self.size_ratio,
        }
        tag = self.name.replace(" ", "_")
        return {f"{tag}_{key}": float(value) for key, value in values.items() if value is not None}


@dataclass
class Exported:
    """The export stage's result: every variant, and the model's parameter count."""

    variants: list[Variant]
    parameters: int

    @property
    def onnx(self) -> Variant | None:
        """The fp32 ONNX file: the one that is served and registered."""
        return next((v for v in self.variants if v.name == "onnx" and not v.error), None)


def export_stage(cfg: ExperimentConfig, data: DatasetSplits, reporter: Reporter, tracker: Any) -> Exported:
    """Export the bundle in every ``export.formats`` and each ``export.quantize`` variant, each scored on the
    whole test split. The fp32 formats are held to parity with torch by the exporter, in the same pass
    (classes identical and max |Δp| ≤ ``parity_tolerance``; for regression max |Δ| ≤ ``parity_tolerance`` ×
    max(1, max |prediction|)); quantized variants differ by design, so their class agreement is reported.
    The inputs are the test split's raw inputs: images, feature rows, windows or int64 token ids.
    """
    from .data import kind_metadata
    from .export import ModelExporter
    from .models import load_bundle

    folder = RunFolder(cfg.run_dir)
    model, meta = load_bundle(folder.bundle)
    raw_test, y = data.raw("test"), data.targets("test")
    folder.onnx.parent.mkdir(parents=True, exist_ok=True)
    metadata = {
        "labels": meta["labels"],
        "input_shape": meta["input_shape"],
        "architecture": meta["architecture"] or meta["model"].get("type"),
        **kind_metadata(data.kind),
        "task": data.task,
        "input_spec": data.kind.input_spec(data, folder.onnx.parent),
    }
    variants: list[Variant] = []
    expected = None  # torch's outputs on the test split, from the first export
    for fmt in cfg.export.formats:
        if fmt == "tensorrt" and (missing := _tensorrt_missing()):
            reporter.line(f"tensorrt not built: {missing}")  # say so, and keep the other formats
            variants.append(Variant(fmt, error="no TensorRT or ONNX Runtime GPU provider here (see the export log)"))
            continue
        exporter = ModelExporter(
            format=fmt,
            optimize_level=cfg.export.optimize_level,
            opset=cfg.export.opset,
            parity_tolerance=cfg.export.parity_tolerance,
            task=data.task,
        )
        result = exporter.export(
            model, folder.export(fmt), example_input=raw_test[:2], metadata=metadata, parity_inputs=raw_test
        )
        expected = result.expected
        variants.append(
            Variant(
                fmt,
                result.path,
                result.size_bytes,
                score(result.outputs, y, data.task),
                float(result.max_abs_diff or 0.0),
            )
        )
        tracker.log_artifact(result.path, "export")
        tracker.log_artifact(result.metadata_path, "export")
    if cfg.export.quantize:
        expected = predict(model, raw_test) if expected is None else expected
        variants += [_quantized(cfg, spec, raw_test, expected, data, tracker) for spec in cfg.export.quantize]
    exported = Exported(variants, int(sum(np.prod(p.shape) for p in model.parameters())))
    for variant in variants:
        if not variant.error:
            tracker.log_metrics(variant.metrics(), stage="export")
            reporter.line(_variant_line(variant, data, len(raw_test)))
    if exported.onnx is not None:
        tracker.log_metrics(
            {
                "max_abs_diff": exported.onnx.max_abs_diff,
                "size_bytes": exported.onnx.size_bytes,
                "parameters": exported.parameters,
            },
            stage="export",
        )
    return exported


def _tensorrt_missing() -> str:
    """Why TensorRT cannot build here ('' when it can): a failed build on a machine that has it is an error."""
    from .export import tensorrt_backend

    try:
        tensorrt_backend()
    except RuntimeError as err:
        return str(err)
    return ""


def _quantized(
    cfg: ExperimentConfig, spec: Any, raw_test: Any, expected: np.ndarray, data: DatasetSplits, tracker: Any
) -> Variant:
    """One ``export.quantize`` variant of the ONNX file, scored on the test split against torch's ``expected``."""
    from .export import ModelExporter
    from .quantization import quantize

    folder = RunFolder(cfg.run_dir)
    calibration = data.raw("train").numpy() if spec.type == "int8_static" else None
    # onnxruntime.quantization warns through the root logger ("consider pre-processing"): stray lines
    with quiet_logger():
        result = quantize(folder.onnx, method=spec.type, calibration=calibration, **spec.model_dump(exclude={"type"}))
    outputs = _run_all(ModelExporter(optimize_level=cfg.export.optimize_level).runner(result.path), raw_test.numpy())
    agreement = float((outputs.argmax(1) == expected.argmax(1)).mean()) if data.task == "classification" else None
    tracker.log_artifact(result.path, "export")
    return Variant(
        f"onnx {spec.type}",
        result.path,
        result.size_bytes,
        score(outputs, data.targets("test"), data.task),
        float(np.abs(outputs - expected).max()),
        agreement,
        result.size_ratio,
    )


def _variant_line(variant: Variant, data: DatasetSplits, count: int) -> str:
    agreement = "" if variant.class_agreement is None else f", classes agree {variant.class_agreement:.1%}"
    same = ", classes identical" if data.task == "classification" and variant.class_agreement is None else ""
    return (
        f"{variant.name}: {Path(variant.path).name} ({variant.size_bytes / 1e3:.0f} kB), test "
        f"{METRIC_NAME[data.task]}={variant.test_score:.4f}, max |Δ| vs torch={variant.max_abs_diff:.1e} over "
        f"{count} test examples{same}{agreement}"
    )


# ------------------------------------------------------------------------------------- serve
def check_servable(cfg: ExperimentConfig) -> None:
    """The endpoint serves the ONNX model: an experiment that exports none cannot serve."""
    if "onnx" not in cfg.export.formats:
        raise ValueError(
            "serve: the endpoint serves the ONNX model; add onnx to export.formats (or run with --no-serve)"
        )


def serve_stage(cfg: ExperimentConfig, reporter: Reporter, version: str | None = None) -> str:
    """Deploy the exported model on Ray Serve; return the endpoint URL. ``version``: the model's version in the
    registry, which becomes ``champion``. When the app is already live (and ``serve.shadow.new_model`` is
    ``shadow``) the new model becomes its shadow candidate instead, and the live one keeps serving."""
    from .data import kind_of
    from .deploy import deploy
    from .deploy.app import local_model_path, tracking_uri_of
    from .deploy.shadow import is_live, start_shadow
    from .export import read_metadata
    from .tracking.registry import CHAMPION, is_registry_uri, set_alias

    folder = RunFolder(cfg.run_dir)
    check_servable(cfg)
    serve_cfg, shadow = cfg.serve, cfg.serve.shadow
    store = tracking_uri_of(cfg.tracking.tracking_uri)
    registry_name = cfg.tracking.registered_model_name or cfg.name
    path: str | Path = serve_cfg.model if is_registry_uri(serve_cfg.model) else folder.served(serve_cfg.model)
    if not is_registry_uri(path) and not Path(path).is_file():
        raise FileNotFoundError(f"no exported model at {path}; run `deepseek-ray export` first")
    url = f"http://{serve_cfg.host}:{serve_cfg.port}{serve_cfg.route}"
    options = shadow.model_dump(exclude={"candidate", "new_model"})
    if is_live(cfg.name) and shadow.new_model == "shadow" and not is_registry_uri(path):
        candidate = f"models:/{registry_name}/{version}" if version else path
        session = start_shadow(cfg.name, candidate, registered_model=registry_name, tracking_uri=store, **options)
        reporter.line(
            f"{cfg.name} is live: the new model (v{session['version']}) is its shadow candidate, "
            f"{shadow.fraction:.0%} of requests mirrored; labels: POST {url}/feedback; "
            f"`deepseek-ray shadow status {cfg.name}`, `deepseek-ray promote {cfg.name}`"
        )
        return url
    url = deploy(
        path,
        name=cfg.name,
        route=serve_cfg.route,
        host=serve_cfg.host,
        port=serve_cfg.port,
        tracking_uri=store,
        registered_model=registry_name,
        **serve_cfg.model_dump(exclude={"route", "host", "port", "model"}),
    )
    if version is not None and serve_cfg.model in ("onnx", "torch_export"):  # the registered model itself
        set_alias(registry_name, CHAMPION, version, store)
    served = "" if serve_cfg.model == "onnx" else f" [{serve_cfg.model}]"
    meta = read_metadata(local_model_path(str(path), store))
    reporter.line(f"endpoint up{served}: POST {url}  (JSON {kind_of(meta).request_hint(meta)})")
    return url
