"""Search overhead: 40 trials of an objective that sleeps 0.2 s, 2 concurrent, against standalone Optuna.

Prints the wall of sequential Optuna (TPE) and of deepseek_ray's runner (TPE through Ray Tune's
OptunaSearch, each configuration a Ray task, the state checkpointed at every trial start and end),
measured in the same run, and their ratio. Goal (../shared/ANCHORS.md): ≤ 0.6×.

    python bench/bench_search_overhead.py [--trials 40] [--sleep 0.2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import optuna

from deepseek_ray.config import SearchConfig
from deepseek_ray.hpo import SearchSpace, run_trials
from search_session import quiet_search_session

SPACE = {"type": "params", "x": {"uniform": [-5.0, 5.0]}, "y": {"loguniform": [1e-4, 1.0]}}


def optuna_alone(trials: int, sleep: float) -> float:
    def objective(trial: optuna.Trial) -> float:
        x, y = trial.suggest_float("x", -5, 5), trial.suggest_float("y", 1e-4, 1.0, log=True)
        time.sleep(sleep)
        return x * x + y

    start = time.perf_counter()
    optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0)).optimize(objective, n_trials=trials)
    return time.perf_counter() - start


def ours(trials: int, sleep: float, name: str, storage: str) -> float:
    def objective(params: dict, seed: int):
        time.sleep(sleep)
        yield {"loss": params["x"] ** 2 + params["y"]}

    config = SearchConfig(strategy={"type": "tpe", "n_startup_trials": 10}, scheduler={"type": "fifo", "max_t": 1},
                          metric="loss", mode="min", budget={"trials": trials}, concurrency=2)
    start = time.perf_counter()
    result = run_trials(objective, SearchSpace.from_mapping(SPACE), config, name=name, storage_path=storage)
    wall = time.perf_counter() - start
    assert len(result.trials) == trials and all(t["status"] == "TERMINATED" for t in result.trials)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--sleep", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    storage = quiet_search_session("bench-overhead-")
    print(f"{args.trials} trials × {args.sleep} s sleep; ours: 2 concurrent, TPE; Optuna: sequential, TPE")
    print(f"{'run':<8}{'Optuna s':>10}{'ours s':>10}{'ratio':>8}")
    ratios = []
    for repeat in range(args.repeats):  # interleaved, so both see the same machine load
        base = optuna_alone(args.trials, args.sleep)
        wall = ours(args.trials, args.sleep, f"overhead-{repeat}", storage)
        ratios.append(wall / base)
        label = "cold" if repeat == 0 else f"warm {repeat}"
        print(f"{label:<8}{base:>10.2f}{wall:>10.2f}{wall / base:>8.2f}")
    print(f"median ratio {statistics.median(ratios):.2f} (goal ≤ 0.60; ideal with 2-way parallelism 0.50; "
          f"anchors: Tune defaults 9.33, reuse_actors 1.64)")


if __name__ == "__main__":
    main()
