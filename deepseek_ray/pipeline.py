"""The main job: data → search → train → baseline → export → serve, one MLflow run around them.

A short chain of the stages in :mod:`deepseek_ray.stages`, each returning a typed result; the final table
is made from those results.

>>> from deepseek_ray.config import load
>>> print(run_pipeline(load('examples/quickstart.yaml')).render())  # starts Ray, runs minutes  # doctest: +SKIP
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import ExperimentConfig
from .data import DatasetSplits, from_config
from .report import Reporter, table
from .stages import (
    METRIC_NAME,
    BaselineResult,
    Exported,
    RunFolder,
    Trained,
    baseline_stage,
    check_servable,
    export_stage,
    objective,
    search_stage,
    serve_stage,
    train_stage,
)


@dataclass
class Summary:
    """The final table, as data (also written to ``summary.json``).

    >>> print(Summary('x', {'test accuracy (torch)': 0.98123}, {'train': 12.0}).render())
    experiment x          | result
    ----------------------+-------
    test accuracy (torch) | 0.9812
    wall: train           | 12.0 s
    """

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


def run_pipeline(
    cfg: ExperimentConfig, *, serve: bool = True, reporter: Reporter | None = None, resume: bool = False
) -> Summary:
    """Every stage in order, one MLflow run around them; returns the final table (and writes ``summary.json``)."""
    from .models import package_versions
    from .tracking import Tracker, config_hash, git_commit

    if serve:  # fail before the search, not after it
        check_servable(cfg)
    reporter = reporter or Reporter()
    folder = RunFolder(cfg.run_dir)
    folder.root.mkdir(parents=True, exist_ok=True)
    tracker = Tracker.from_config(cfg.tracking, cfg.name)
    config_dict = cfg.model_dump(mode="json")
    with tracker.run(cfg.name, tags={"deepseek_ray.stage": "pipeline"}):
        with reporter.stage("data"):
            data = from_config(cfg.data, cfg.seed)
            reporter.line(", ".join(f"{k}={v}" for k, v in data.summary().items()))
            objective(cfg, data)
        tracker.log_params(
            {
                "config": config_dict,
                "config_hash": config_hash(config_dict),
                "data_hash": data.fingerprint,
                "git_commit": git_commit(Path(__file__).parent),
                "versions": package_versions(),
            }
        )
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
            name = cfg.tracking.registered_model_name or cfg.name
            version = tracker.register_onnx(folder.onnx, name) if exported.onnx is not None else None
        url = None
        if serve:
            with reporter.stage("serve"):
                url = serve_stage(cfg, reporter, version)
        total = time.perf_counter() - reporter.start  # from the command's start: Ray's start-up counts
        values = {
            **summary_rows(data, search, trained, exported, baseline),
            "MLflow": f"{tracker.tracking_uri} run {tracker.run_id} model v{version}" if tracker.enabled else "off",
            "endpoint": url or "not served (--no-serve)",
            "total wall": f"{total:.1f} s",
        }
        tracker.log_metrics({"total_wall_s": total}, stage="pipeline")
    summary = Summary(cfg.name, values, dict(reporter.walls))
    folder.summary.write_text(json.dumps(asdict(summary), indent=2, default=str))
    return summary


def summary_rows(
    data: DatasetSplits, search: Any, trained: Trained, exported: Exported, baseline: BaselineResult | None
) -> dict[str, Any]:
    """The final table's rows from the stages' results (the metric named by the task)."""
    name = METRIC_NAME[data.task]
    regression = data.task == "regression"
    units = ", target units" if regression else ""
    scaled = " (standardised target)" if regression and search.metric in ("val_mae", "val_loss") else ""
    rows: dict[str, Any] = {
        "best architecture": search.best_architecture,
        "best lr": f"{search.best_params.get('lr', 0):.2e}",
        f"search: best {search.metric}{scaled}": search.best_metric,
        "search: trials / stop": f"{len(search.trials)} / {search.stop_reason}",
        f"val {name} (final{units})": trained.val_score,
        f"test {name} (torch{units})": trained.test_score,
    }
    for variant in exported.variants:
        if variant.error:
            rows[f"test {name} ({variant.label})"] = f"not built: {variant.error}"
        else:
            rows[f"test {name} ({variant.label}{units})"] = variant.test_score
    if baseline is not None:
        rows[f"baseline test {name} ({baseline.description}{units})"] = baseline.test_score
    onnx_diff = exported.onnx.max_abs_diff if exported.onnx else float("nan")
    diff_row = "max |Δ| torch vs ONNX (target units)" if regression else "max |Δp| torch vs ONNX"
    rows[diff_row] = f"{onnx_diff:.1e}"
    sizes = [f"{v.name} {v.size_bytes / 1e3:.0f} kB" for v in exported.variants if not v.error]
    rows["model size"] = f"{exported.parameters:,} parameters; " + ", ".join(sizes)
    return rows
