"""Ray Train start-up: from ``fit()`` to the first step on every worker, where the time goes, and what it costs.

Three settings, interleaved on one already running Ray (started here, in-process), ``--repeats`` times each:

* **Ray Train defaults** — a bare ``TorchTrainer`` whose function all-reduces its entry time and reports once;
* **deepseek_ray settings, bare function** — the same function with what ``deepseek_ray.train`` changes in
  Ray Train (``TRAIN_ENV``: a 0.5 s controller poll, no preemption-watcher actor; ``torch_trainer_class()``:
  no Ray Data shard-manager actor when no ``datasets`` are given; ``TorchBackendConfig``: no torch import in
  the controller);
* **deepseek_ray.train.train()** — the whole path (data through the object store, model built under DDP,
  progress relay, per-epoch checkpoint), one epoch of 8×8 digits; "first step" is the ``startup_s`` it reports.

For each run the phases come from Ray's task events (``ray.util.state.list_tasks``): when the Train controller
actor starts running (its process is up) and finishes ``__init__`` (imports: Ray Train, and torch to unpickle
``TorchConfig``), when the worker actors run and finish ``__init__``, when ``init_train_context`` finishes on
every worker (torch is imported there), when the torch process group is up, and when the train function is
launched. "CPU-s" sums user+system CPU of the processes this Ray spawned during the run, up to the first step:
it tells work from waiting, and stays comparable when other jobs load the machine.

    python bench/bench_train_startup.py --repeats 3 [--workers 2] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import ray

import psutil  # isort: skip  (after ray: Ray puts its bundled psutil on sys.path when imported)

# Phase boundaries, in order: (label, task name(s) split by "|", event); the latest matching task marks the end.
PHASES = [
    ("controller process", "TrainController.__init__", "RUNNING"),
    ("controller imports + init", "TrainController.__init__", "FINISHED"),
    ("worker processes", "RayTrainWorker.__init__", "RUNNING"),
    ("worker imports + init", "RayTrainWorker.__init__", "FINISHED"),
    ("train context (torch import)", "RayTrainWorker.init_train_context", "FINISHED"),
    # Ray's TorchConfig runs _setup_torch_process_group; our TorchBackendConfig, _join_process_group.
    ("process group", "execute._setup_torch_process_group|execute._join_process_group", "FINISHED"),
    ("train fn launched", "RayTrainWorker.run_train_fn", "FINISHED"),
]


def probe_loop(config: dict) -> None:
    """The bare function: the slowest rank's entry time (all-reduced MAX) is the first step."""
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist

    entered = time.time()
    # Ready for a first step = device context up and the communicator connected (NCCL connects lazily).
    ready = torch.zeros(1, dtype=torch.float64, device=ray.train.torch.get_device())
    if dist.is_initialized():
        dist.all_reduce(ready)
    first = ready + torch.tensor([time.time(), entered], dtype=torch.float64, device=ready.device)
    if dist.is_initialized():
        dist.all_reduce(first, op=dist.ReduceOp.MAX)
    if ray.train.get_context().get_world_rank() == 0:  # Result.metrics is None without a checkpoint: use a file
        with open(config["record"], "w") as handle:
            handle.write(f"{float(first[0])} {float(first[1])}")
    ray.train.report({"done": 1})


class CpuSampler:
    """Samples the CPU time of every process this Ray spawned after ``since`` (they are our descendants)."""

    def __init__(self, since: float, interval: float = 0.2):
        self.since, self.interval = since, interval
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        me = psutil.Process()
        while not self.stop.is_set():
            now, cpu = time.time(), {}
            for proc in me.children(recursive=True):
                try:
                    if proc.create_time() >= self.since - 0.05:
                        times = proc.cpu_times()
                        cpu[proc.pid] = times.user + times.system
                except psutil.Error:  # exited between listing and reading
                    continue
            self.samples.append((now, cpu))
            self.stop.wait(self.interval)

    def cpu_until(self, until: float) -> float:
        """CPU-seconds of the spawned processes up to ``until`` (each process's last sample before it)."""
        self.stop.set()
        self.thread.join()
        last: dict[int, float] = {}
        for when, cpu in self.samples:
            if when <= until:
                last.update(cpu)
        return sum(last.values())


def phase_times(start: float, end: float) -> dict[str, float]:
    """Seconds after ``start`` at which each phase ended, from Ray's task events (tasks of this run only)."""
    from ray.util.state import list_tasks

    address = ray.get_runtime_context().gcs_address  # other Ray instances may run on this machine
    out: dict[str, float] = {}
    for label, name, state in PHASES:
        stamps = []
        tasks = [task for one in name.split("|") for task in list_tasks(
            address=address, filters=[("name", "=", one)], detail=True, limit=10_000, raise_on_missing_output=False)]
        for task in tasks:
            events = {e["state"]: e["created_ms"] / 1000 for e in task.get("events") or []}
            created = min(events.values(), default=0)
            if start <= created <= end and state in events:
                stamps.append(events[state])
        if stamps:
            out[label] = max(stamps) - start
    return out


def set_env(tuned: bool) -> None:
    """Apply ``deepseek_ray.train``'s Ray Train environment, or clear it for Ray's defaults."""
    from deepseek_ray.ray_compat import TRAIN_ENV

    for key, value in TRAIN_ENV.items():
        if tuned:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)


def bare_fit(workers: int, gpu: bool, tuned: bool) -> tuple[float, float, float]:
    """One bare ``TorchTrainer.fit()``: (start, first step, end) as wall-clock times."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from deepseek_ray.ray_compat import torch_trainer_class
    from deepseek_ray.train.backend import TorchBackendConfig

    trainer_class = torch_trainer_class() if tuned else TorchTrainer
    backend = {"torch_config": TorchBackendConfig()} if tuned else {}
    set_env(tuned)
    record = f"/tmp/bench_startup_{os.getpid()}.txt"
    start = time.time()
    trainer_class(probe_loop, train_loop_config={"record": record}, scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
                  **backend, run_config=RunConfig(name=f"startup-{start}", storage_path="/tmp/bench_startup")).fit()
    end = time.time()
    with open(record) as handle:
        first, entered = map(float, handle.read().split())
    ENTERED[start] = entered - start
    return start, first, end


ENTERED: dict[float, float] = {}  # fit() start → seconds until the train function ran on every worker


def make_ours(workers: int, gpu: bool) -> Callable[[], tuple[float, float, float]]:
    """The whole ``deepseek_ray.train.train()`` path on digits, one epoch; its first step is ``startup_s``."""
    from deepseek_ray.config import TrainConfig
    from deepseek_ray.data import load_dataset
    from deepseek_ray.train import train

    data = load_dataset("digits", seed=0)
    spec = {"type": "cellnet", "arch": "c8|conv3x3", "in_channels": 1, "num_classes": 10}
    config = TrainConfig(epochs=1, workers=workers, use_gpu=gpu, max_failures=0, optimizer={"lr": 5e-3},
                         per_device_train_batch_size=32, early_stopping_patience=None)

    def ours() -> tuple[float, float, float]:
        set_env(True)
        start = time.time()
        result = train(config, data, model_spec=spec, name=f"startup-ours-{start}", storage_path="/tmp/bench_startup")
        return start, start + result.startup_s, time.time()

    return ours


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    ray.init(log_to_driver=False, logging_level="ERROR")
    runs: dict[str, Callable[[], tuple[float, float, float]]] = {
        "Ray Train defaults": lambda: bare_fit(args.workers, args.gpu, tuned=False),
        "deepseek_ray settings, bare function": lambda: bare_fit(args.workers, args.gpu, tuned=True),
    }
    try:
        runs["deepseek_ray.train.train()"] = make_ours(args.workers, args.gpu)
    except ImportError as err:  # e.g. a GPU host without scikit-learn (the digits data): the bare rows still say a lot
        print(f"deepseek_ray.train.train() left out: {err}")
    runs["Ray Train defaults"]()  # warm the cluster: the first run also starts Ray's own helper actors
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label in runs}
    load: list[float] = []
    for repeat in range(args.repeats):
        for label, run in runs.items():
            load.append(os.getloadavg()[0])
            sampler = CpuSampler(time.time())
            start, first, end = run()
            row = {"first": first - start, "wall": end - start, "cpu": sampler.cpu_until(first)}
            if start in ENTERED:
                row["train fn entered"] = ENTERED[start]
            time.sleep(2.5)  # task events reach the GCS about once a second
            try:
                row.update(phase_times(start, end))
            except Exception as err:  # a Ray without the dashboard has no state API: first-step figures only
                if not repeat and label == "Ray Train defaults":
                    print(f"phases from Ray's task events unavailable: {type(err).__name__}")
            rows[label].append(row)
            print(f"[{repeat + 1}/{args.repeats}] {label}: first step {row['first']:.1f} s, wall {row['wall']:.1f} s, "
                  f"CPU {row['cpu']:.1f} s, load {load[-1]:.1f}", flush=True)

    def med(label: str, key: str) -> str:
        values = [r[key] for r in rows[label] if key in r]
        return f"{statistics.median(values):.1f}" if values else "–"

    base = statistics.median(r["first"] for r in rows["Ray Train defaults"])
    print(f"\nload average (1 min) during the runs: {min(load):.1f}–{max(load):.1f}; {os.cpu_count()} cores")
    print("| settings | fit() → first step on every worker | ratio to defaults | fit() wall | CPU-s to first step |")
    print("|---|---|---|---|---|")
    for label in rows:
        ratio = statistics.median(r["first"] for r in rows[label]) / base
        print(f"| {label} | {med(label, 'first')} s | {ratio:.2f} | {med(label, 'wall')} s | {med(label, 'cpu')} |")
    print("\nPhase ends, seconds after fit() (median):")
    print("| settings | " + " | ".join(label for label, _, _ in PHASES) + " | train fn entered | first step |")
    print("|---|" + "---|" * (len(PHASES) + 2))
    for label in rows:
        print(f"| {label} | " + " | ".join(med(label, phase) for phase, _, _ in PHASES)
              + f" | {med(label, 'train fn entered')} | {med(label, 'first')} |")


if __name__ == "__main__":
    main()
