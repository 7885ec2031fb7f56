"""Search overhead on Ray Tune: deepseek_ray's search against standalone Optuna and plain Tune, in one run.

Three workloads, interleaved per repeat so that every arm sees the same machine load:

* ``short``: 40 trials that sleep 0.2 s (one report each);
* ``long``: 20 trials that sleep 2 s (one report each);
* ``asha``: 20 trials of 5 reports × 0.4 s; ours under ASHA (grace 1, η 2) against Optuna with its
  ``SuccessiveHalvingPruner`` (same rungs), epochs run by each reported.

Arms: sequential Optuna TPE (the baseline of every ratio); plain ``Tuner.fit`` with OptunaSearch, a function
trainable, 2 concurrent, Tune's defaults (a new actor per trial); the same with ``reuse_actors=True``; and
``run_trials`` (TPE through OptunaSearch, 2 concurrent, a class Trainable, ``reuse_actors``, state saved at
every step). Goals (issue 14): short ≤ 0.70×, long ≤ 0.55×, asha ≤ 0.70× of Optuna's wall.

    python bench/bench_search_overhead.py [--repeats 2] [--workloads short,long,asha] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import optuna

from deepseek_ray.config import SearchConfig
from deepseek_ray.hpo import SearchSpace, run_trials
from search_session import quiet_search_session

SPACE = {"type": "params", "x": {"uniform": [-5.0, 5.0]}, "y": {"loguniform": [1e-4, 1.0]}}
WORKLOADS = {"short": (40, 0.2, 1), "long": (20, 2.0, 1), "asha": (20, 0.4, 5)}  # trials, s per report, reports


def loss(x: float, y: float, report: int) -> float:
    return x * x + y + 1.0 / report


def optuna_alone(trials: int, sleep: float, reports: int) -> tuple[float, int]:
    epochs = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal epochs
        x, y = trial.suggest_float("x", -5, 5), trial.suggest_float("y", 1e-4, 1.0, log=True)
        for report in range(1, reports + 1):
            time.sleep(sleep)
            epochs += 1
            value = loss(x, y, report)
            if reports > 1:
                trial.report(value, report)
                if trial.should_prune():
                    raise optuna.TrialPruned()
        return value

    pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2) if reports > 1 else None
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10), pruner=pruner)
    start = time.perf_counter()
    study.optimize(objective, n_trials=trials)
    return time.perf_counter() - start, epochs


def plain_tune(trials: int, sleep: float, storage: str, name: str, reuse: bool) -> float:
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    def trainable(config: dict) -> None:
        time.sleep(sleep)
        tune.report({"loss": loss(config["x"], config["y"], 1)})

    space = {"x": tune.uniform(-5, 5), "y": tune.loguniform(1e-4, 1.0)}
    searcher = OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=10))
    tuner = tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(metric="loss", mode="min", search_alg=searcher, num_samples=trials,
                                    max_concurrent_trials=2, reuse_actors=reuse),
        run_config=tune.RunConfig(name=name, storage_path=storage, verbose=0),
    )
    start = time.perf_counter()
    grid = tuner.fit()
    assert len(grid) == trials and not grid.errors
    return time.perf_counter() - start


def idle(timeout_s: float = 10.0) -> None:
    """Wait until the previous arm's trial actors have given their CPUs back, so that every arm starts on an
    idle cluster (plain Tune returns before Ray frees them; a search that starts then finds one slot)."""
    import ray

    deadline = time.monotonic() + timeout_s
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.05)


def ours(trials: int, sleep: float, reports: int, storage: str, name: str) -> tuple[float, int, int]:
    def objective(params: dict, seed: int):
        for report in range(1, reports + 1):
            time.sleep(sleep)
            yield {"loss": loss(params["x"], params["y"], report)}

    scheduler = {"type": "asha", "max_t": reports, "grace_period": 1, "reduction_factor": 2} if reports > 1 \
        else {"type": "fifo", "max_t": 1}
    config = SearchConfig(strategy={"type": "tpe", "n_startup_trials": 10}, scheduler=scheduler, metric="loss",
                          mode="min", budget={"trials": trials}, concurrency=2)
    start = time.perf_counter()
    result = run_trials(objective, SearchSpace.from_mapping(SPACE), config, name=name, storage_path=storage)
    wall = time.perf_counter() - start
    assert len(result.trials) == trials and all(t["status"] in ("TERMINATED", "PRUNED") for t in result.trials)
    return wall, sum(t["epochs"] for t in result.trials), actors(Path(result.path))


def actors(folder: Path) -> int:
    """How many trial actors reported (Tune's result rows carry the pid): 1 when the trials collapsed."""
    return len({json.loads(line)["pid"] for result in folder.glob("*/result.json") for line in result.open()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workloads", default="short,long,asha")
    parser.add_argument("--out", type=Path, default=None, help="also write the raw rows as JSON here")
    args = parser.parse_args()
    storage = quiet_search_session("bench-overhead-")
    rows = []
    print(f"{'workload':<8}{'repeat':>7}{'arm':>22}{'wall s':>9}{'÷ Optuna':>10}{'epochs':>8}{'actors':>8}")
    for repeat in range(args.repeats):
        for workload in args.workloads.split(","):
            trials, sleep, reports = WORKLOADS[workload]
            base, base_epochs = optuna_alone(trials, sleep, reports)
            arms = {"optuna (sequential)": (base, base_epochs, 0)}
            if reports == 1:
                for reuse in (False, True):
                    label = "tune reuse_actors" if reuse else "tune defaults"
                    idle()
                    wall = plain_tune(trials, sleep, storage, f"{workload}-{repeat}-{reuse}", reuse)
                    arms[label] = (wall, trials, 0)
            idle()
            arms["deepseek_ray"] = ours(trials, sleep, reports, storage, f"{workload}-{repeat}-ours")
            for arm, (wall, epochs, pids) in arms.items():
                rows.append({"workload": workload, "repeat": repeat, "arm": arm, "wall_s": round(wall, 3),
                             "ratio": round(wall / base, 3), "epochs": epochs, "actors": pids or None})
                print(f"{workload:<8}{repeat:>7}{arm:>22}{wall:>9.2f}{wall / base:>10.2f}{epochs:>8}{pids or '':>8}")
    print("\nmedian ratio to sequential Optuna (goals: short ≤ 0.70, long ≤ 0.55, asha ≤ 0.70; floor 0.50)")
    for workload in args.workloads.split(","):
        for arm in dict.fromkeys(r["arm"] for r in rows if r["workload"] == workload):
            ratios = [r["ratio"] for r in rows if r["workload"] == workload and r["arm"] == arm]
            print(f"  {workload:<6} {arm:<22} {statistics.median(ratios):.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
