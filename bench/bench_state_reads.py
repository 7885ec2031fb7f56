"""Reads of Tune's experiment folder while a search writes it, through Ray's default filesystem and through
deepseek_ray's (``hpo/storage.py``) with and without its copy gate, interleaved in one Ray session.

A read that finds half a file, or a searcher state that counts other trials than the trial list beside it,
is what a SIGKILL at that moment would leave for ``Tuner.restore`` (it would fail, or lose the trials in
between). Each run is a 10-trial TPE search (4 under PBT/PB2) of 0.25 s epochs, two at a time, in a driver
subprocess; this process reads the newest ``experiment_state-*.json`` (and, under a searcher,
``search_gen_state-*.json``) every 0.5 ms until the driver ends. The driver counts the copies of the
experiment state that ``hpo/storage.py`` refused because they were cut short.

    python bench/bench_state_reads.py --schedulers fifo,pbt,pb2 --repeats 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEDULERS = {
    "fifo": {"type": "fifo", "max_t": 4},
    "asha": {"type": "asha", "max_t": 4, "grace_period": 1},
    "pbt": {"type": "pbt", "max_t": 4, "perturbation_interval": 1, "quantile_fraction": 0.5},
    "pb2": {"type": "pb2", "max_t": 4, "perturbation_interval": 1, "quantile_fraction": 0.5},
}


ARMS = ("ray default", "no gate", "deepseek_ray")


def drive(address: str, storage: str, scheduler: str, arm: str) -> None:
    """The search whose experiment state is read (run in a subprocess); prints the refused copies."""
    from deepseek_ray.config import SearchConfig
    from deepseek_ray.hpo import SearchSpace, run_trials
    from deepseek_ray.hpo import storage as tune_storage
    from deepseek_ray.runtime import connect

    if arm == "ray default":  # Ray's own local filesystem
        tune_storage.atomic_local_filesystem = lambda: None  # type: ignore[assignment]
    if arm == "no gate":  # each save may start while the copy of the last one runs, which puts files in place
        from deepseek_ray.hpo import monitor

        monitor.copy_gate = lambda folder: tune_storage.CopyGate()  # type: ignore[assignment] (a gate of none)
    refused = 0
    is_json = tune_storage._is_json

    def counted(data: bytes) -> bool:
        nonlocal refused
        whole = is_json(data)
        refused += not whole
        return whole

    tune_storage._is_json = counted
    connect(address)

    def objective(params, seed, checkpoint=None):
        for epoch in range(int(checkpoint or 0) + 1, 5):
            time.sleep(0.25)
            yield {"loss": (params["x"] - 0.3) ** 2 + 1 / epoch, "checkpoint": str(epoch).encode()}

    population = scheduler in ("pbt", "pb2")
    config = SearchConfig(
        scheduler=SCHEDULERS[scheduler], metric="loss", mode="min", concurrency=2, cpus_per_trial=0.5,
        **({"budget": {"trials": 4}} if population else
           {"strategy": {"type": "tpe", "n_startup_trials": 3}, "budget": {"trials": 10}}),
    )
    space = SearchSpace.from_mapping({"type": "params", "x": {"uniform": [0.0, 1.0]}})
    run_trials(objective, space, config, name="reads", storage_path=storage, seed=7)
    print(json.dumps({"refused": refused}))


def stamp(path: Path) -> tuple[int, int, int]:
    """A file's version: a replaced file has a new inode; one rewritten in place a new size or time."""
    info = path.stat()
    return info.st_ino, info.st_size, info.st_mtime_ns


def read_folder(folder: Path) -> str | None:
    """``whole``, ``cut`` (half a state file) or ``disagree`` (the searcher counts other trials than the list
    beside it); None before the first state, or when a copy replaced a file between the reads."""
    states, searchers = list(folder.glob("experiment_state-*.json")), list(folder.glob("search_gen_state-*.json"))
    if not states:
        return None
    try:
        stamps = [stamp(path) for path in states + searchers]
        listed = len(json.loads(states[0].read_bytes())["trial_data"])
        counters = [pickle.loads(path.read_bytes())["counter"] for path in searchers]
        if stamps != [stamp(path) for path in states + searchers]:
            return None
    except (ValueError, EOFError, pickle.UnpicklingError):
        return "cut"
    return "disagree" if counters and counters[0] != listed else "whole"


def watch(address: str, scheduler: str, arm: str) -> dict:
    storage = tempfile.mkdtemp(prefix="state-reads-")
    argv = [sys.executable, __file__, "--drive", address, storage, scheduler, arm]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reads = Counter()
    folder = Path(storage, "reads")
    while driver.poll() is None:
        with contextlib.suppress(OSError):  # a file replaced while it was listed
            reads[read_folder(folder)] += 1
        time.sleep(0.0005)
    out, err = driver.communicate()
    if driver.returncode:
        raise RuntimeError(err[-2000:])
    refused = json.loads(out.strip().splitlines()[-1])["refused"]
    return {**reads, "refused": refused, "wall_s": round(time.perf_counter() - start, 2)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(*sys.argv[2:6])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedulers", default="fifo,pbt,pb2")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import ray

    address = ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR").address_info["address"]
    print(f"{'scheduler':<10}{'repeat':>7}{'filesystem':>14}{'reads':>8}{'half a file':>13}{'disagree':>10}"
          f"{'refused':>9}{'driver s':>10}")
    for repeat in range(args.repeats):
        for scheduler in args.schedulers.split(","):
            for arm in ARMS:
                row = watch(address, scheduler, arm)
                reads = sum(row.get(k, 0) for k in ("whole", "cut", "disagree"))
                print(f"{scheduler:<10}{repeat:>7}{arm:>14}{reads:>8}{row.get('cut', 0):>13}"
                      f"{row.get('disagree', 0):>10}{row['refused']:>9}{row['wall_s']:>10}", flush=True)


if __name__ == "__main__":
    main()
