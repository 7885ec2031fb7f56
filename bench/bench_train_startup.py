"""Ray Train start-up: time from ``TorchTrainer.fit()`` to the first step on every worker, and to ``fit()``'s return.

Interleaves Ray Train's defaults with the settings ``deepseek_ray.train`` applies (a 0.5 s controller poll
instead of 2 s), on one already running Ray, several times each.

    python bench/bench_train_startup.py --repeats 3 [--gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import ray


def loop(config: dict) -> None:
    import ray.train
    import torch
    import torch.distributed as dist

    first = torch.tensor([time.time()], dtype=torch.float64)
    if dist.is_initialized() and dist.get_backend() == "gloo":
        dist.all_reduce(first, op=dist.ReduceOp.MAX)
    if ray.train.get_context().get_world_rank() == 0:  # Result.metrics is None without a checkpoint: use a file
        with open(config["record"], "w") as handle:
            handle.write(str(float(first)))
    ray.train.report({"done": 1})


def one_fit(workers: int, gpu: bool, tuned: bool) -> tuple[float, float]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from deepseek_ray.train.distributed import TRAIN_ENV

    for key, value in TRAIN_ENV.items():
        if tuned:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    record = f"/tmp/bench_startup_{os.getpid()}.txt"
    start = time.time()
    TorchTrainer(loop, train_loop_config={"record": record}, scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpu),
                 run_config=RunConfig(name=f"startup-{time.time()}", storage_path="/tmp/bench_startup")).fit()
    wall = time.time() - start
    with open(record) as handle:
        return float(handle.read()) - start, wall


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gpu", action="store_true")
    args = parser.parse_args()
    ray.init(log_to_driver=False, logging_level="ERROR")
    results: dict[str, list[tuple[float, float]]] = {"Ray Train defaults": [], "deepseek_ray.train settings": []}
    one_fit(args.workers, args.gpu, tuned=False)  # warm the cluster (first actor imports)
    for _ in range(args.repeats):
        for label, tuned in (("Ray Train defaults", False), ("deepseek_ray.train settings", True)):
            results[label].append(one_fit(args.workers, args.gpu, tuned))
    print("| settings | fit() → first step on every worker (median s) | fit() wall, 1-report loop (median s) |")
    print("|---|---|---|")
    for label, rows in results.items():
        print(f"| {label} | {statistics.median(r[0] for r in rows):.1f} | {statistics.median(r[1] for r in rows):.1f} |")


if __name__ == "__main__":
    main()
