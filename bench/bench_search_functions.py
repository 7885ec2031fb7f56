"""Search quality on Branin and Hartmann6: median regret after N evaluations, each strategy vs random.

Every strategy runs through deepseek_ray's search (``run_trials``: ``Tuner.fit`` with the strategy's Tune
searcher, one Tune trial per evaluation), one evaluation at a time, over several seeds. Regret = best value found − known
optimum (Branin 0.397887, Hartmann6 −3.32237). ``grid`` is left out: these domains are continuous.

    python bench/bench_search_functions.py [--evals 50] [--seeds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from deepseek_ray.config import STRATEGIES, SearchConfig
from deepseek_ray.hpo import SearchSpace, run_trials
from search_session import quiet_search_session

HARTMANN_A = np.array([[10, 3, 17, 3.5, 1.7, 8], [0.05, 10, 17, 0.1, 8, 14], [3, 3.5, 1.7, 10, 17, 8],
                       [17, 8, 0.05, 10, 0.1, 14]])
HARTMANN_P = 1e-4 * np.array([[1312, 1696, 5569, 124, 8283, 5886], [2329, 4135, 8307, 3736, 1004, 9991],
                              [2348, 1451, 3522, 2883, 3047, 6650], [4047, 8828, 8732, 5743, 1091, 381]])
HARTMANN_ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


def branin(p: dict) -> float:
    x1, x2 = p["x1"], p["x2"]
    b, c, t = 5.1 / (4 * np.pi**2), 5 / np.pi, 1 / (8 * np.pi)
    return float((x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * np.cos(x1) + 10)


def hartmann6(p: dict) -> float:
    x = np.array([p[f"x{i}"] for i in range(6)])
    return float(-np.sum(HARTMANN_ALPHA * np.exp(-np.sum(HARTMANN_A * (x - HARTMANN_P) ** 2, axis=1))))


PROBLEMS = {
    "branin": (branin, {"x1": {"uniform": [-5.0, 10.0]}, "x2": {"uniform": [0.0, 15.0]}}, 0.397887),
    "hartmann6": (hartmann6, {f"x{i}": {"uniform": [0.0, 1.0]} for i in range(6)}, -3.32237),
}


def regret(problem: str, strategy: str, seed: int, evals: int, storage: str) -> float:
    function, domains, optimum = PROBLEMS[problem]

    def objective(params: dict, seed: int):
        yield {"value": function(params)}

    config = SearchConfig(strategy={"type": strategy, "n_startup_trials": 10, "population": 10},
                          scheduler={"type": "fifo", "max_t": 1}, metric="value", mode="min",
                          budget={"trials": evals}, concurrency=1, cpus_per_trial=1)
    space = SearchSpace.from_mapping({"type": "params", **domains})
    result = run_trials(objective, space, config, name=f"{problem}-{strategy}-{seed}", storage_path=storage, seed=seed)
    return result.best_metric - optimum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evals", type=int, default=50)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    storage = quiet_search_session("bench-functions-")
    strategies = [s for s in STRATEGIES if s != "grid"]
    print(f"median regret after {args.evals} evaluations over {args.seeds} seeds (lower is better)")
    print(f"{'problem':<10}{'strategy':<11}{'median regret':>14}{'÷ random':>10}{'wall s':>8}")
    for problem in PROBLEMS:
        baseline = None
        for strategy in ["random"] + [s for s in strategies if s != "random"]:
            start = time.perf_counter()
            median = statistics.median(regret(problem, strategy, seed, args.evals, storage) for seed in range(args.seeds))
            baseline = median if baseline is None else baseline
            verdict = "" if strategy == "random" else ("  beats random" if median < baseline else "  no better")
            print(f"{problem:<10}{strategy:<11}{median:>14.4f}{median / baseline:>10.2f}{time.perf_counter() - start:>8.1f}{verdict}",
                  flush=True)


if __name__ == "__main__":
    main()
