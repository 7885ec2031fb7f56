"""Population-based training on Tune's PopulationBasedTraining and PB2: config checks, weights and optimizer state carried
over, perturbation inside the domains (its resume after SIGKILL is in test_hpo.py)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import pytest
import torch

from deepseek_ray.config import ConfigError, SearchConfig
from deepseek_ray.data import load_dataset
from deepseek_ray.hpo import SearchSpace, TrainingObjective, TrialSettings, check_pbt, run_search, run_trials
from deepseek_ray.models import build_model
from deepseek_ray.nas import NASConfig

FIXED_NAS = {"type": "nas", "ops": ["conv3x3"], "cells": 1, "channels": 8, "lr": {"loguniform": [1e-3, 1e-2]}}
X = SearchSpace.from_mapping({"type": "params", "x": {"uniform": [0.0, 1.0]}})


def population(kind: str, **scheduler) -> SearchConfig:
    spec = {"type": kind, "max_t": 3, "perturbation_interval": 1, "quantile_fraction": 0.5}
    return SearchConfig(strategy={"type": "random"}, scheduler={**spec, **scheduler}, metric="score", mode="max",
                        budget={"trials": 4}, concurrency=2, cpus_per_trial=0.5)


def pbt(**scheduler) -> SearchConfig:
    return population("pbt", **{"resample_probability": 0.0, **scheduler})


def pb2(**scheduler) -> SearchConfig:
    return population("pb2", **scheduler)


# ----------------------------------------------------------------------------- without Ray
def test_pbt_refuses_varying_architectures_several_metrics_and_unknown_keys(tmp_path):
    varying = SearchSpace.from_mapping({**FIXED_NAS, "ops": ["conv3x3", "identity"], "cells": {"choice": [1, 2]}})
    with pytest.raises(ConfigError) as err:  # raised before Ray starts
        run_trials(lambda p, s: iter(()), varying, pbt(), storage_path=tmp_path)
    assert [line.split(";")[1].split("(")[0].strip() for line in err.value.errors] == ["cells varies", "ops varies"]
    mlp = SearchSpace.from_mapping({"type": "hpo", "model": "mlp", "hidden": {"choice": [32, 64]}})
    with pytest.raises(ConfigError, match="hidden varies"):
        run_trials(lambda p, s: iter(()), mlp, pbt(), storage_path=tmp_path)
    with pytest.raises(ConfigError, match="cannot perturb 'batch_size'; allowed here: lr"):
        space = SearchSpace.from_mapping({**FIXED_NAS, "batch_size": {"choice": [16, 32]}})
        run_trials(lambda p, s: iter(()), space, pbt(hyperparameters=["batch_size"]), storage_path=tmp_path)
    shipped = SearchSpace.load(Path(__file__).resolve().parent.parent / "search_spaces" / "mnist_cnn_fixed.yaml")
    check_pbt(shipped, pbt())  # the shipped PBT space passes
    assert sorted(shipped.perturbable()) == ["dropout", "lr", "weight_decay"]
    with pytest.raises(ValueError, match="pbt ranks trials by one metric"):
        SearchConfig(scheduler={"type": "pbt"}, metric=["val_accuracy", "latency_ms"], mode=["max", "min"])
    with pytest.raises(ValueError, match="strategy 'tpe' cannot run under scheduler pbt: Tune's population-based"):
        SearchConfig(strategy={"type": "tpe"}, scheduler={"type": "pbt"})
    assert SearchConfig(scheduler={"type": "pbt"}).scheduler.type == "pbt"  # no strategy given: Tune's own
    with pytest.raises(ValueError, match=r"perturbation_interval \(3\) must be below max_t \(3\)"):
        SearchConfig(scheduler={"type": "pbt", "max_t": 3, "perturbation_interval": 3})
    # PB2 takes the same checks, and chooses values within bounds: a choice cannot be one of them.
    with pytest.raises(ConfigError, match="cells varies"):
        run_trials(lambda p, s: iter(()), varying, pb2(), storage_path=tmp_path)
    with pytest.raises(ConfigError, match=r"pb2 chooses values within bounds; x is choice \[0.1, 0.2\]"):
        choice = SearchSpace.from_mapping({"type": "params", "x": {"choice": [0.1, 0.2]}})
        run_trials(lambda p, s: iter(()), choice, pb2(hyperparameters=["x"]), storage_path=tmp_path)
    with pytest.raises(ValueError, match="strategy 'tpe' cannot run under scheduler pb2"):
        SearchConfig(strategy={"type": "tpe"}, scheduler={"type": "pb2"})


def _parameters(checkpoint: bytes) -> dict[str, torch.Tensor]:
    model = torch.load(io.BytesIO(checkpoint), weights_only=True)["model"]
    return {k: v for k, v in model.items() if "running_" not in k and "num_batches" not in k}


def test_a_trial_continues_from_another_trials_weights_with_its_own_hyperparameters():
    data = load_dataset("digits", limit=300)
    space = SearchSpace.from_mapping(FIXED_NAS)
    objective = TrainingObjective(data, space, TrialSettings(model_inputs=data.model_inputs(), max_t=3, checkpoints=True))
    arch = {"cells": 1, "nodes": 1, "channels": 8, "cell0_op0": "conv3x3"}
    first_epoch = lambda results: next(iter(results))  # noqa: E731
    donor = first_epoch(objective({**arch, "lr": 5e-3, "weight_decay": 0.0}, seed=0))
    assert donor["epoch"] == 1 and "checkpoint" in donor

    # lr ≈ 0: if the donor's weights were loaded, one more epoch leaves them where they were.
    frozen = first_epoch(objective({**arch, "lr": 1e-12, "weight_decay": 0.05}, seed=5, checkpoint=donor["checkpoint"]))
    assert frozen["epoch"] == 2  # the epoch count travels with the state
    before, after = _parameters(donor["checkpoint"]), _parameters(frozen["checkpoint"])
    assert max((before[k] - after[k]).abs().max().item() for k in before) < 1e-6
    # The donor's own lr (5e-3) moves them visibly; a fresh model is elsewhere altogether.
    moved = first_epoch(objective({**arch, "lr": 5e-3, "weight_decay": 0.0}, seed=5, checkpoint=donor["checkpoint"]))
    assert max((before[k] - v).abs().max().item() for k, v in _parameters(moved["checkpoint"]).items()) > 1e-3
    fresh = first_epoch(objective({**arch, "lr": 1e-12, "weight_decay": 0.0}, seed=5))
    assert max((before[k] - v).abs().max().item() for k, v in _parameters(fresh["checkpoint"]).items()) > 1e-2
    # The optimizer state travels too (Adam's step count goes on from the donor's), with this trial's settings.
    optimizer = lambda blob: torch.load(io.BytesIO(blob), weights_only=True)["optimizer"]  # noqa: E731
    assert optimizer(frozen["checkpoint"])["state"][0]["step"] == 2 * optimizer(donor["checkpoint"])["state"][0]["step"]
    assert optimizer(frozen["checkpoint"])["param_groups"][0]["weight_decay"] == 0.05
    assert optimizer(frozen["checkpoint"])["param_groups"][0]["lr"] <= 1e-12


# --------------------------------------------------------------------------------- on Ray
def accumulate():
    """An objective whose state is a running sum of ``x``: a copied checkpoint shows in the next score.
    (A closure, so that Ray pickles it by value: trial actors cannot import this test module.)"""

    def objective(params, seed, checkpoint=None):
        total, done = pickle.loads(checkpoint) if checkpoint else (0.0, 0)
        for epoch in range(done + 1, 4):
            total += params["x"]
            yield {"score": total, "x": params["x"], "checkpoint": pickle.dumps((total, epoch))}

    return objective


def check_exploits(result, barriers: int, per_barrier: int, factors: tuple[float, ...] | None = (0.8, 1.2)) -> None:
    """Every exploit copied the donor's state and gave the recipient a new x in [0, 1]: the donor's times one of
    ``factors`` (PBT, clipped to the domain), or the bandit's pick (PB2, ``factors=None``)."""
    trials = {t["trial_id"]: t for t in result.trials}
    assert len(trials) == 4 and all(t["status"] == "TERMINATED" and t["epochs"] == 3 for t in trials.values())
    lineage = [(tid, step) for tid, t in trials.items() for step in t["lineage"]]
    assert sorted(step["epoch"] for _, step in lineage) == sorted(e for e in range(1, barriers + 1) for _ in range(per_barrier))
    for trial_id, step in lineage:
        epoch, donor, recipient = step["epoch"], trials[step["from"]], trials[trial_id]
        donor_x, new_x = step["donor_params"]["x"], recipient["history"][epoch]["x"]
        assert donor["history"][epoch - 1]["score"] >= recipient["history"][epoch - 1]["score"]  # bottom copies top
        assert new_x == step["params"]["x"] and 0.0 <= new_x <= 1.0
        if factors is not None:
            assert new_x != donor_x or donor_x == 1.0  # equal only where 1.2x is clipped back to the bound
            assert any(new_x == pytest.approx(min(donor_x * f, 1.0)) for f in factors)
        # Copied state: the next score is the donor's sum plus the new x, not the recipient's own sum.
        assert recipient["history"][epoch]["score"] == pytest.approx(donor["history"][epoch - 1]["score"] + new_x)
    assert result.best_metric == max(t["history"][-1]["score"] for t in trials.values())


def test_pbt_copies_the_state_of_better_trials_and_perturbs_their_hyperparameters(ray_address, tmp_path):
    lines: list[str] = []
    result = run_trials(accumulate(), X, pbt(), name="pbt", storage_path=tmp_path, seed=3, progress=lines.append)
    check_exploits(result, barriers=2, per_barrier=2)
    assert result.stop_reason == "trial budget (4 trials) reached"
    assert sum(line.startswith("pbt epoch ") for line in lines) == 4  # each exploit on a progress line
    # Tune's own record of the exploits agrees with the trial table's lineage.
    assert len((Path(result.path) / "pbt_global.txt").read_text().splitlines()) == 4


def test_pb2_copies_the_state_of_better_trials_and_picks_their_hyperparameters_within_bounds(ray_address, tmp_path):
    lines: list[str] = []
    result = run_trials(accumulate(), X, pb2(), name="pb2", storage_path=tmp_path, seed=3, progress=lines.append)
    check_exploits(result, barriers=2, per_barrier=2, factors=None)  # x: the bandit's pick, within the domain
    assert sum(line.startswith("pb2 epoch ") for line in lines) == 4


def test_pbt_search_trains_one_shared_architecture(ray_address, tmp_path):
    nas = NASConfig(search_space=["conv3x3"], cells=1, channels=8, budget=4, strategy="random",
                    scheduler={"type": "pbt", "max_t": 2, "perturbation_interval": 1, "quantile_fraction": 0.5})
    result = run_search(nas, load_dataset("digits", limit=300), name="pbt-nas", storage_path=tmp_path)
    assert len(result.trials) == 4 and all(t["status"] == "TERMINATED" and t["epochs"] == 2 for t in result.trials)
    exploited = [t for t in result.trials if t["lineage"]]
    assert len(exploited) == 2 and all(t["params"]["lr"] != t["lineage"][0]["donor_params"]["lr"] for t in exploited)
    assert {t["architecture"] for t in result.trials} == {"c8|conv3x3"} == {result.best_architecture}
    best = next(t for t in result.trials if t["val_accuracy"] == result.best_metric)
    model = build_model(result.model_spec)
    model.load_state_dict(torch.load(best["checkpoint"], weights_only=True)["model"])  # the best trial's weights
