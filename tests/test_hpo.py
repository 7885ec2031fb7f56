"""The search stage: spaces, strategies, schedulers, budgets, failures, multi-objective, resume after SIGKILL."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from deepseek_ray.config import STRATEGIES, ConfigError, SearchConfig
from deepseek_ray.data import load_dataset
from deepseek_ray.hpo import SearchSpace, make_searcher, run_search, run_trials, sampler_of
from deepseek_ray.hpo.trainable import unnest
from deepseek_ray.models import MODELS, Architecture, build_model
from deepseek_ray.nas import NASConfig

ROOT = Path(__file__).resolve().parent.parent
NAS = {"type": "nas", "ops": ["conv3x3", "identity", "maxpool3x3"], "cells": {"choice": [1, 2, 3]},
       "channels": {"choice": [8, 16]}, "lr": {"loguniform": [1e-3, 1e-2]}}
XY = SearchSpace.from_mapping({"type": "params", "x": {"uniform": [0.0, 1.0]}, "y": {"uniform": [0.0, 1.0]}})
# The builder signatures agreed with the models engineer (models may land after this file).
AGREED = {
    "mlp": ["hidden", "layers", "dropout"],
    "transformer_classifier": ["dim", "heads", "layers", "dropout"],
    "tcn": ["channels", "levels", "kernel_size", "dropout"],
    "lstm": ["hidden", "layers", "cell", "dropout"],
    "pretrained": ["name_or_dir", "dropout", "pretrained"],
}


def search(**overrides) -> SearchConfig:
    base = dict(strategy={"type": "random"}, scheduler={"type": "fifo", "max_t": 1}, metric="loss", mode="min",
                budget={"trials": 6}, concurrency=2, cpus_per_trial=0.5)
    return SearchConfig(**{**base, **overrides})


# ----------------------------------------------------------------------------- without Ray
def test_each_strategy_is_a_distinct_library_sampler():
    space = SearchSpace.from_mapping({**NAS, "lr": {"choice": [1e-3, 1e-2]}})
    expected = {"random": "optuna.RandomSampler", "grid": "optuna.GridSampler", "tpe": "optuna.TPESampler",
                "gp": "optuna.GPSampler", "cmaes": "optuna.CmaEsSampler", "nsga2": "deepseek_ray.PicklableNSGAIISampler",
                "evolution": "deepseek_ray.RegularizedEvolutionSampler", "hyperopt": "hyperopt.suggest"}
    found = {}
    for name in STRATEGIES:
        sampler = sampler_of(make_searcher(search(strategy={"type": name}), space, seed=0))
        while hasattr(sampler, "func"):  # HyperOptSearch wraps hyperopt.tpe.suggest in partials
            sampler = sampler.func
        kind = sampler if callable(sampler) and not hasattr(sampler, "sample_independent") else type(sampler)
        found[name] = f"{kind.__module__.split('.')[0]}.{kind.__name__}"
    assert found == expected and len(set(found.values())) == len(STRATEGIES)


def test_hyperopt_nested_choice_gives_consistent_architectures():
    space = SearchSpace.from_mapping(NAS)
    searcher = make_searcher(search(strategy={"type": "hyperopt"}, metric="val_accuracy", mode="max"), space, seed=0)
    for index in range(12):
        params = unnest(searcher.suggest(str(index)))
        arch = Architecture.decode(space.architecture(params))
        assert len(arch.cells) == params["cells"] and arch.channels in (8, 16)
        assert not any(f"cell{c}_op0" in params for c in range(params["cells"], 3))  # no inactive ops


@pytest.mark.parametrize("raw, key", [
    ({**NAS, "cellz": 2}, "cellz: unknown key"),
    ({**NAS, "ops": ["conv3x3", "conv9x9"]}, "ops: got ['conv9x9']"),
    ({**NAS, "lr": {"logunif": [1, 2]}}, "lr: got"),
    ({**NAS, "lr": {"uniform": [2, 1]}}, "lr.uniform: low (2) must be below high (1)"),
    ({**NAS, "cells": {"uniform": [1, 3]}}, "cells: got uniform"),
    ({"type": "hpo", "model": "no_such_model"}, "model: unknown 'no_such_model'"),
    ({"type": "hpo"}, "model: required"),
    ({"type": "hpo", "model": "plain_cnn", "hidden": {"choice": [8]}}, "hidden: unknown key for model 'plain_cnn'"),
    ({"type": "hpo", "model": "plain_cnn", "num_classes": 3}, "num_classes: comes from the data"),
    ({"type": "tabular"}, "type: got 'tabular'; allowed: nas, hpo, params"),
])
def test_space_errors_name_the_key(raw, key):
    with pytest.raises(ConfigError) as err:
        SearchSpace.from_mapping(raw, "space.yaml")
    assert any(key in line for line in err.value.errors), err.value.errors


def test_grid_needs_finite_domains_and_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="lr: grid search needs"):
        SearchSpace.from_mapping(NAS).grid()
    with pytest.raises(ValueError, match="needs scheduler type fifo"):
        SearchConfig(metric=["val_accuracy", "latency_ms"], mode=["max", "min"])
    with pytest.raises(ValueError, match="strategy.type"):
        SearchConfig(strategy={"type": "annealing"})


def test_shipped_search_spaces_are_valid():
    assert SearchSpace.load(ROOT / "search_spaces" / "mnist_cnn.yaml").kind == "nas"
    hpo_files = sorted((ROOT / "search_spaces").glob("*.yaml"))
    models = set()
    for path in hpo_files:
        raw = yaml.safe_load(path.read_text())
        if raw["type"] != "hpo":
            continue
        models.add(raw["model"])
        keys = set(raw) - {"type", "model", "lr", "weight_decay", "batch_size", "warmup_steps"}
        assert keys <= set(AGREED[raw["model"]]), (path.name, keys - set(AGREED[raw["model"]]))
        if raw["model"] in MODELS:  # once the builder is registered, the full check against its signature
            assert SearchSpace.load(path).model == raw["model"]
    assert {"mlp", "transformer_classifier", "tcn"} <= models



def test_an_hpo_space_passes_every_builder_argument_it_searches():
    # `channels` is cell structure in a NAS space, but a plain builder argument of the TCN.
    space = SearchSpace.load(ROOT / "search_spaces" / "timeseries_tcn.yaml")
    spec = space.model_spec({"channels": 8, "levels": 2, "kernel_size": 3, "lr": 1e-3, "batch_size": 16},
                            {"in_channels": 1, "out_features": 1})
    assert spec["channels"] == 8 and spec["levels"] == 2 and "lr" not in spec
    assert sum(p.numel() for p in build_model(spec).parameters()) < sum(
        p.numel() for p in build_model({**spec, "channels": 32}).parameters())


def test_a_trial_trains_with_the_files_recipe_and_its_searched_hyperparameters():
    import torch

    from deepseek_ray.config import TrainConfig
    from deepseek_ray.hpo import TrainingObjective, TrialSettings

    data = load_dataset("digits", limit=120)
    recipe = TrainConfig(optimizer={"type": "sgd", "weight_decay": 0.0}, scheduler={"type": "linear", "warmup_steps": 3},
                         precision="bf16", gradient_accumulation=2, clip_grad_norm=0.5, compile=True)
    space = SearchSpace.from_mapping({"type": "nas", "ops": ["conv3x3"], "cells": 1, "channels": 8, "lr": 0.05,
                                      "batch_size": {"choice": [8, 16]}, "weight_decay": {"uniform": [0, 1]}})
    objective = TrainingObjective(data, space, TrialSettings(model_inputs=data.model_inputs(), max_t=1, recipe=recipe))
    params = {"cells": 1, "channels": 8, "cell0_op0": "conv3x3", "lr": 0.05, "batch_size": 16, "weight_decay": 0.25}
    trainer = objective.trainer(params, seed=0)
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.25 and trainer.optimizer.defaults["lr"] == 0.05
    assert (trainer.schedule, trainer.warmup_steps, trainer.clip_grad_norm) == ("linear", 3, 0.5)
    assert (trainer.amp_dtype, trainer.accumulation, trainer.batch_size) == (torch.bfloat16, 2, 16)
    assert trainer.forward is trainer.model  # trials do not compile
    epoch = next(objective(params, seed=0))
    assert epoch["epoch"] == 1 and epoch["train_loss"] > 0


def test_the_final_recipe_takes_what_the_search_chose_and_splits_its_batch_across_workers():
    from types import SimpleNamespace

    from deepseek_ray.config import ExperimentConfig
    from deepseek_ray.stages import train_settings

    raw = {"name": "x", "data": {"dataset": "digits"}, "train": {"workers": 2, "scheduler": {"type": "linear"}}}
    chose = SimpleNamespace(best_params={"lr": 0.02, "weight_decay": 0.1, "warmup_steps": 7, "batch_size": 64})
    recipe = train_settings(ExperimentConfig.model_validate(raw), chose)
    assert (recipe.optimizer.lr, recipe.optimizer.weight_decay, recipe.scheduler.warmup_steps) == (0.02, 0.1, 7)
    assert (recipe.per_device_train_batch_size, recipe.scheduler.type) == (32, "linear")
    raw["train"]["optimizer"] = {"lr": 0.003}  # the file's lr wins over the searched one
    assert train_settings(ExperimentConfig.model_validate(raw), chose).optimizer.lr == 0.003


# --------------------------------------------------------------------------------- on Ray
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs_a_search(ray_address, tmp_path, strategy):
    space = SearchSpace.from_mapping({"type": "params", "x": {"choice": [0.1, 0.4, 0.7]}, "y": {"randint": [0, 1]}}) \
        if strategy == "grid" else XY

    def bowl(params, seed):
        yield {"loss": (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2, "y": params["y"]}

    multi = strategy == "nsga2"
    config = search(strategy={"type": strategy, "n_startup_trials": 2, "population": 4}, budget={"trials": 8},
                    **({"metric": ["loss", "y"], "mode": ["min", "max"]} if multi else {}))
    result = run_trials(bowl, space, config, name=f"s-{strategy}", storage_path=tmp_path)
    ids = [t["trial_id"] for t in result.trials]
    assert len(ids) == len(set(ids)) and all(t["status"] == "TERMINATED" for t in result.trials)
    if strategy == "grid":
        assert len(ids) == 6 and result.stop_reason == "grid exhausted (6 configurations)"
        assert {(t["params"]["x"], t["params"]["y"]) for t in result.trials} == {(x, y) for x in (0.1, 0.4, 0.7) for y in (0, 1)}
    else:
        assert len(ids) == 8 and result.stop_reason == "trial budget (8 trials) reached"
    assert result.best_metric == min(t["loss"] for t in (result.pareto_front or result.trials))
    if strategy == "tpe":  # the folder is Tune's own: Tune's tools open it without deepseek_ray's help
        from ray import tune

        from deepseek_ray.hpo import SearchTrial

        frame = tune.ExperimentAnalysis(result.path).dataframe()
        assert sorted(frame["trial_id"]) == sorted(ids) and frame["loss"].min() == result.best_metric
        restored = tune.Tuner.restore(result.path, tune.with_parameters(SearchTrial, objective=bowl, plan=None))
        grid = restored.get_results()
        assert len(grid) == 8 and grid.get_best_result("loss", "min").metrics["loss"] == result.best_metric


def test_failed_killed_and_nan_trials_are_recorded_retried_and_the_search_goes_on(ray_address, tmp_path):
    calls = tmp_path / "calls.jsonl"

    def fragile(params, seed):
        if params["x"] < 0.25:
            raise RuntimeError(f"boom at x={params['x']:.2f}")
        pid_file = tmp_path / f"{params['x']!r}.pid"
        dies = params["x"] < 0.5 and not pid_file.exists()  # the first attempt only
        with calls.open("a") as file:
            file.write(json.dumps({"params": params, "seed": seed, "pid": os.getpid()}) + "\n")
        for epoch in (1, 2):
            if epoch == 2 and dies:  # the worker dies mid-trial (SIGKILL, as the OOM killer would)
                pid_file.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
            yield {"loss": float("nan") if params["x"] > 0.75 else params["x"] / epoch}

    config = search(scheduler={"type": "fifo", "max_t": 2}, budget={"trials": 12}, max_failures=1)
    result = run_trials(fragile, XY, config, name="fail", storage_path=tmp_path)
    by_status = {s: [t for t in result.trials if t["status"] == s] for s in ("ERROR", "TERMINATED")}
    assert len(result.trials) == 12 and by_status["ERROR"] and by_status["TERMINATED"]
    assert all(t["attempts"] == 2 for t in by_status["ERROR"])  # retried once, as configured
    assert all(t["error"].startswith("RuntimeError: boom") or "is nan" in t["error"] for t in by_status["ERROR"])
    assert any("is nan" in t["error"] for t in by_status["ERROR"]) == any(t["params"]["x"] > 0.75 for t in result.trials)
    killed = [t for t in result.trials if 0.25 <= t["params"]["x"] < 0.5]
    assert killed and all(t["status"] == "TERMINATED" and t["attempts"] == 2 for t in killed)
    runs = [json.loads(line) for line in calls.read_text().splitlines()]
    for trial in killed:  # retried with the same configuration in a new process; only the retry's epochs count
        first, again = [r for r in runs if r["params"] == trial["params"]]
        assert first["seed"] == again["seed"] and first["pid"] != again["pid"]
        assert (tmp_path / f"{trial['params']['x']!r}.pid").read_text() == str(first["pid"])
        assert [h["loss"] for h in trial["history"]] == [trial["params"]["x"], trial["params"]["x"] / 2]
    assert result.best_metric == min(t["loss"] for t in by_status["TERMINATED"])


def test_nan_loss_in_training_fails_the_trial(ray_address, tmp_path):
    space = {"type": "hpo", "model": "plain_cnn", "image_size": 8, "lr": {"choice": [1e-3, 1e9]}}
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    config = SearchConfig(space=tmp_path / "space.yaml", strategy={"type": "grid"}, scheduler={"type": "fifo", "max_t": 2},
                          budget={"trials": 2}, max_failures=0)
    result = run_search(config, load_dataset("digits", limit=300), name="nan", storage_path=tmp_path)
    failed = [t for t in result.trials if t["status"] == "ERROR"]
    assert [t["params"]["lr"] for t in failed] == [1e9]
    assert "FloatingPointError" in failed[0]["error"] or "is nan" in failed[0]["error"]
    assert result.best_params["lr"] == 1e-3 and result.best_architecture.startswith("plain_cnn(")
    assert build_model(result.model_spec).num_parameters() > 0


def test_budgets_stop_the_search_and_say_which(ray_address, tmp_path):
    def slow(params, seed):
        for epoch in range(3):
            time.sleep(0.3)
            yield {"loss": params["x"] / (epoch + 1)}

    timed = run_trials(slow, XY, search(scheduler={"type": "fifo", "max_t": 3}, budget={"trials": 50, "time": 6}),
                       name="time", storage_path=tmp_path)
    assert timed.stop_reason == "time budget (6 s) reached" and len(timed.trials) < 50
    epochs = run_trials(slow, XY, search(scheduler={"type": "fifo", "max_t": 3}, budget={"trials": 50, "epochs": 7}),
                        name="epochs", storage_path=tmp_path)
    assert epochs.stop_reason == "epoch budget (7 epochs) reached"
    assert 7 <= sum(t["epochs"] for t in epochs.trials) <= 8  # the other running trial may finish its epoch


@pytest.mark.parametrize("scheduler", ["asha", "hyperband"])
def test_schedulers_stop_weak_trials_early(ray_address, tmp_path, scheduler):
    def curve(params, seed, checkpoint=None):  # HyperBand pauses trials: it checkpoints and continues
        for epoch in range(pickle.loads(checkpoint) + 1 if checkpoint else 1, 5):
            time.sleep(0.1)  # trials overlap, so that HyperBand's brackets fill before their first trials end
            yield {"loss": params["x"] + 1.0 / epoch, "checkpoint": pickle.dumps(epoch)}

    rungs = {"grace_period": 1} if scheduler == "asha" else {}  # Tune's HyperBand derives its brackets' rungs
    config = search(strategy={"type": "random"}, scheduler={"type": scheduler, "max_t": 4, "reduction_factor": 2,
                                                             **rungs}, budget={"trials": 12})
    result = run_trials(curve, XY, config, name=scheduler, storage_path=tmp_path)
    pruned = [t for t in result.trials if t["status"] == "PRUNED"]
    assert pruned and all(t["epochs"] < 4 for t in pruned)
    assert result.best_metric == min(t["loss"] for t in result.trials if t["loss"] is not None)
    for trial in pruned:
        if scheduler == "asha":  # one rung ladder for all trials
            assert _sat_below_its_rungs_median(trial, result.trials), trial["trial_id"]
        else:  # HyperBand halves each bracket apart, and Tune does not report which bracket a trial was in
            assert _a_trial_that_went_on_was_as_good(trial, result.trials), trial["trial_id"]


def _sat_below_its_rungs_median(trial: dict, trials: list[dict]) -> bool:
    """At the epoch it was pruned, the trial's loss was no better than the median of the losses recorded at
    that epoch until then (its own included): what asynchronous successive halving with η = 2 prunes."""
    epoch, last = trial["epochs"], trial["history"][-1]
    rung = [t["history"][epoch - 1] for t in trials if len(t["history"]) >= epoch]
    seen = sorted(r["loss"] for r in rung if r["at_s"] <= last["at_s"])
    return last["loss"] >= seen[(len(seen) - 1) // 2]


def _a_trial_that_went_on_was_as_good(trial: dict, trials: list[dict]) -> bool:
    """Some trial trained past the epoch this one was stopped at, with a loss at that epoch no worse: what any
    successive halving keeps (each bracket promotes its best), whichever bracket the trial was in."""
    epoch, loss = trial["epochs"], trial["history"][-1]["loss"]
    return any(len(t["history"]) > epoch and t["history"][epoch - 1]["loss"] <= loss for t in trials)


def test_multi_objective_returns_the_pareto_front_and_a_plot(ray_address, tmp_path):
    space = {"type": "nas", "ops": ["conv3x3", "identity"], "cells": {"choice": [1, 2]}, "channels": {"choice": [4, 16]},
             "lr": {"loguniform": [3e-3, 1e-2]}}
    (tmp_path / "nas.yaml").write_text(yaml.safe_dump(space))
    config = SearchConfig(space=tmp_path / "nas.yaml", strategy={"type": "nsga2", "population": 4},
                          scheduler={"type": "fifo", "max_t": 1}, budget={"trials": 6},
                          metric=["val_accuracy", "latency_ms"], mode=["max", "min"])
    result = run_search(config, load_dataset("digits", limit=300), name="pareto", storage_path=tmp_path)
    front = result.pareto_front
    assert front and Path(result.pareto_plot).stat().st_size > 1000
    assert all(t["latency_ms"] > 0 for t in result.trials)
    for row in front:  # nothing in the table dominates a front member
        assert not any(t["val_accuracy"] >= row["val_accuracy"] and t["latency_ms"] <= row["latency_ms"]
                       and (t["val_accuracy"], t["latency_ms"]) != (row["val_accuracy"], row["latency_ms"])
                       for t in result.trials)
    assert result.best_architecture in {r["architecture"] for r in front}


def test_nas_config_with_hyperopt_rebuilds_the_best_architecture_exactly(ray_address, tmp_path):
    config = NASConfig(search_space=["sep_conv3x3", "dilated_conv3x3", "zero"], budget=3, strategy="hyperopt",
                       cells=[1, 2], channels=8, scheduler={"type": "fifo", "max_t": 1})
    result = run_search(config, load_dataset("digits", limit=300), name="nas-hyperopt", storage_path=tmp_path)
    assert Architecture.decode(result.best_architecture).encode() == result.best_architecture
    assert result.model_spec["arch"] == result.best_architecture
    assert build_model(result.model_spec).num_parameters() > 0


DRIVER = '''
import pickle, sys, time
from deepseek_ray.runtime import connect
from deepseek_ray.config import SearchConfig
from deepseek_ray.hpo import SearchSpace, run_trials

connect(sys.argv[1])
log, scheduler = sys.argv[3], sys.argv[4]

def objective(params, seed, checkpoint=None):
    for epoch in range(pickle.loads(checkpoint) + 1 if checkpoint else 1, 5):
        with open(log, "a") as f:
            f.write(f"{params['x']!r} {epoch}\\n")
        time.sleep(0.25)
        yield {"loss": (params["x"] - 0.3) ** 2 + 1 / epoch, "checkpoint": pickle.dumps(epoch)}

space = SearchSpace.from_mapping({"type": "params", "x": {"uniform": [0.0, 1.0]}})
schedulers = {"fifo": {"type": "fifo", "max_t": 4}, "asha": {"type": "asha", "max_t": 4, "grace_period": 1},
              "pbt": {"type": "pbt", "max_t": 4, "perturbation_interval": 1, "quantile_fraction": 0.5},
              "pb2": {"type": "pb2", "max_t": 4, "perturbation_interval": 1, "quantile_fraction": 0.5}}
config = SearchConfig(scheduler=schedulers[scheduler], metric="loss", mode="min", concurrency=2, cpus_per_trial=0.5,
                      **({"budget": {"trials": 4}} if scheduler in ("pbt", "pb2") else
                         {"strategy": {"type": "tpe", "n_startup_trials": 3}, "budget": {"trials": 10}}))
run_trials(objective, space, config, name="resumable", storage_path=sys.argv[2], seed=7, resume=len(sys.argv) > 5)
'''


def _trials_on_disk(folder: Path) -> dict[str, Any]:
    """The trials Tune's experiment state lists (opened as a user would, outside deepseek_ray), by id."""
    from ray.tune import ExperimentAnalysis, register_trainable

    from deepseek_ray.hpo import SearchTrial

    register_trainable("SearchTrial", SearchTrial)  # Tune checks a paused trial's trainable by name on reading it
    try:
        return {t.trial_id: t for t in ExperimentAnalysis(str(folder)).trials}
    except (ValueError, OSError, json.JSONDecodeError):  # not written yet
        return {}


@pytest.mark.parametrize("scheduler", ["fifo", "asha", "pbt", "pb2"])
def test_resume_after_sigkill_finishes_the_budget_without_rerunning_finished_trials(ray_address, tmp_path, scheduler):
    script, log, folder = tmp_path / "driver.py", tmp_path / "epochs.log", tmp_path / "resumable"
    population = scheduler in ("pbt", "pb2")
    script.write_text(DRIVER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, str(script), ray_address, str(tmp_path), str(log), scheduler]
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    on_disk: dict[str, Any] = {}
    deadline = time.monotonic() + 240

    def ready() -> bool:  # on disk: Tune syncs its experiment state in the background, so it lags the driver
        finished = sum(t.status == "TERMINATED" for t in on_disk.values())
        if population:  # an exploit is recorded and the population is still training
            return (folder / "pbt_global.txt").is_file() and len(on_disk) == 4 and finished < 4
        return finished >= 3

    while not ready() and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
        on_disk = _trials_on_disk(folder)
    assert driver.poll() is None, "the driver ended before it could be killed"
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    killed = _trials_on_disk(folder)  # the last experiment state the driver wrote
    finished = {i: t.config["x"] for i, t in killed.items() if t.status == "TERMINATED"}
    assert len(finished) < len(killed) or not population
    if not population:  # the searcher's state in the folder is of the same save: it counts the same trials
        (searcher_state,) = folder.glob("search_gen_state-*.json")  # a pickle, despite its name
        assert pickle.loads(searcher_state.read_bytes())["counter"] == len(killed)
    epochs_before = len(log.read_text().splitlines())
    time.sleep(1.0)  # let Ray clean up the dead driver's actors

    resumed = subprocess.run([*argv, "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    trials = json.loads((folder / "trials.json").read_text())
    budget = 4 if population else 10
    ids = [t["trial_id"] for t in trials]
    assert len(ids) == budget and len(set(ids)) == budget and set(killed) <= set(ids)
    assert all(t["status"] in ("TERMINATED", "PRUNED") for t in trials)
    after_kill = [line.split()[0] for line in log.read_text().splitlines()[epochs_before:]]
    for trial_id, x in finished.items():  # a trial finished before the kill did not train again
        assert repr(x) not in after_kill, f"trial {trial_id} ran again"
        assert next(t for t in trials if t["trial_id"] == trial_id)["params"]["x"] == x
    if population:  # the scheduler's state came back: its exploits before the kill are in the lineage
        exploits = len((folder / "pbt_global.txt").read_text().splitlines())
        assert sum(len(t["lineage"]) for t in trials) == exploits > 0
        assert all(t["epochs"] == 4 for t in trials)
        return
    # The searcher was restored, not re-seeded (a fresh TPE with seed 7 would propose the first trials again),
    # and its study holds every trial, the pre-kill ones included.
    xs = [t["params"]["x"] for t in trials]
    assert len(set(xs)) == budget
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch()
    searcher.restore_from_dir(str(folder))
    told = {round(t.params["x"], 12) for t in searcher._ot_study.trials if t.state.name == "COMPLETE"}
    assert {round(x, 12) for x in finished.values()} <= told and len(told) == budget
