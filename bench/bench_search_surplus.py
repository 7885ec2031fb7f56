"""What free CPUs cost a search: the same 8-trial search with and without room for a surplus trial actor.

When a trial ends, Tune 2.60 creates the next trial and asks for an actor for it before it hands the finished
trial's actor on (``reuse_actors``). With CPUs free, that actor is started and then thrown away: a process
start per trial, and ``Tuner.fit`` waits for the last of them at its end. Here the search runs on a local Ray of
4 logical CPUs, two trials at once, at 0.5 CPU a trial (room for more actors) and at 1.5 (none), rounds
alternating; the table gives each setting's median wall and trial actors started per search.

    python bench/bench_search_surplus.py --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import ray

from deepseek_ray.config import SearchConfig
from deepseek_ray.hpo import SearchSpace, run_trials

SPACE = SearchSpace.from_mapping({"type": "params", "x": {"uniform": [0.0, 1.0]}, "y": {"uniform": [0.0, 1.0]}})


def bowl(params, seed):
    yield {"loss": (params["x"] - 0.3) ** 2 + (params["y"] - 0.6) ** 2}


def trial_actors_since(start_ms: float) -> int:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("class_name", "=", "SearchTrial")], limit=10_000, detail=True)
    return sum((a.start_time_ms or 0) >= start_ms for a in actors)


def one_search(cpus: float, name: str, storage: str) -> tuple[float, int]:
    config = SearchConfig(strategy={"type": "tpe", "n_startup_trials": 2}, scheduler={"type": "fifo", "max_t": 1},
                          metric="loss", mode="min", budget={"trials": 8}, concurrency=2, cpus_per_trial=cpus)
    started_ms = time.time() * 1000
    start = time.perf_counter()
    run_trials(bowl, SPACE, config, name=name, storage_path=storage)
    wall = time.perf_counter() - start
    time.sleep(1.0)  # the state API lists the last actors a moment later
    return wall, trial_actors_since(started_ms)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--storage", default="/tmp/bench_search_surplus")
    opts = parser.parse_args()
    ray.init(num_cpus=4, log_to_driver=False, logging_level="ERROR")
    from deepseek_ray.runtime import quiet

    quiet(False)
    one_search(1.5, "warm-up", opts.storage)  # imports and Ray's first worker processes
    runs: dict[float, list[tuple[float, int]]] = {0.5: [], 1.5: []}
    for round_ in range(opts.rounds):
        for cpus in (0.5, 1.5) if round_ % 2 == 0 else (1.5, 0.5):
            runs[cpus].append(one_search(cpus, f"r{round_}-{cpus}", opts.storage))
            print(f"round {round_}, {cpus} CPU a trial: {runs[cpus][-1][0]:.2f} s, "
                  f"{runs[cpus][-1][1]} trial actors", flush=True)
    print("\n| CPUs a trial (4 on the node, 2 trials at once) | median wall, 8-trial search | trial actors started |")
    print("|---|---|---|")
    for cpus, rows in runs.items():
        print(f"| {cpus} | {statistics.median(w for w, _ in rows):.2f} s | {', '.join(str(n) for _, n in rows)} |")


if __name__ == "__main__":
    main()
