"""Reads of Tune's experiment state while a search writes it: how many find half a file, through Ray's
default filesystem and through deepseek_ray's (``hpo/storage.py``), interleaved in one Ray session.

A read that finds half a file is what a SIGKILL at that moment would leave for ``Tuner.restore``. Each run
is a 10-trial TPE search (4 under PBT/PB2) of 0.25 s epochs, two at a time, in a driver subprocess; this
process reads the newest ``experiment_state-*.json`` every 0.5 ms until the driver ends.

    python bench/bench_state_reads.py --schedulers fifo,pbt,pb2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEDULERS = {
    "fifo": {"type": "fifo", "max_t": 4},
    "asha": {"type": "asha", "max_t": 4, "grace_period": 1},
    "pbt": {"type": "pbt", "max_t": 4, "perturbation_interval": 1, "quantile_fraction": 0.5},
    "pb2": {"type": "pb2", "max_t": 4, "perturbation_interval": 1, "quantile_fraction": 0.5},
}


def drive(address: str, storage: str, scheduler: str, plain: bool) -> None:
    """The search whose experiment state is read (run in a subprocess)."""
    from deepseek_ray.config import SearchConfig
    from deepseek_ray.hpo import SearchSpace, run_trials
    from deepseek_ray.hpo import storage as tune_storage
    from deepseek_ray.runtime import connect

    if plain:  # Ray's own local filesystem
        tune_storage.atomic_local_filesystem = lambda: None  # type: ignore[assignment]
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


def watch(address: str, scheduler: str, plain: bool) -> dict:
    storage = tempfile.mkdtemp(prefix="state-reads-")
    argv = [sys.executable, __file__, "--drive", address, storage, scheduler, *(["--plain"] if plain else [])]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    start = time.perf_counter()
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    whole = cut = 0
    folder = Path(storage, "reads")
    while driver.poll() is None:
        for state in folder.glob("experiment_state-*.json"):
            try:
                json.loads(state.read_bytes())
                whole += 1
            except ValueError:
                cut += 1
        time.sleep(0.0005)
    if driver.returncode:
        raise RuntimeError(driver.stderr.read()[-2000:])
    return {"whole": whole, "cut": cut, "wall_s": round(time.perf_counter() - start, 2)}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--drive":
        drive(sys.argv[2], sys.argv[3], sys.argv[4], "--plain" in sys.argv)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedulers", default="fifo,pbt,pb2")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    import ray

    address = ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR").address_info["address"]
    print(f"{'scheduler':<10}{'repeat':>7}{'filesystem':>14}{'reads':>8}{'half a file':>13}{'driver s':>10}")
    for repeat in range(args.repeats):
        for scheduler in args.schedulers.split(","):
            for plain in (True, False):
                row = watch(address, scheduler, plain)
                name = "ray default" if plain else "deepseek_ray"
                reads = row["whole"] + row["cut"]
                print(f"{scheduler:<10}{repeat:>7}{name:>14}{reads:>8}{row['cut']:>13}{row['wall_s']:>10}", flush=True)


if __name__ == "__main__":
    main()
