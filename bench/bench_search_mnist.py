"""MNIST NAS quality: TPE + ASHA against random search (random sampler, FIFO), at equal budget, over seeds.

Both arms search ``search_spaces/mnist_cnn.yaml`` on mnist5k (4,000 train / 500 val / 500 test) through
``run_search``, with the same trial budget (``--trials`` configurations of at most ``--max-t`` epochs,
2 at a time, one CPU thread each); ASHA may stop a trial early, so its epoch count is printed too.
The arms run interleaved, seed by seed, so they see the same machine load.

For each search: the best configuration by validation accuracy; its **test accuracy with the trial's
own weights** at the epoch of its best validation accuracy (every trial also evaluates the test
split each epoch, unseen by the search); and the search time until any trial first reached
``--target`` validation accuracy.

    python bench/bench_search_mnist.py [--seeds 3] [--trials 8] [--max-t 3] [--target 0.97]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


from deepseek_ray.config import SearchConfig
from deepseek_ray.data import load_dataset
from deepseek_ray.hpo import SearchResult, run_search
from search_session import quiet_search_session

SPACE = Path(__file__).resolve().parent.parent / "search_spaces" / "mnist_cnn.yaml"
ARMS = {
    "tpe+asha": ({"type": "tpe"}, {"type": "asha", "grace_period": 1, "reduction_factor": 2}),
    "random+fifo": ({"type": "random"}, {"type": "fifo"}),
}


def search(arm: str, seed: int, args: argparse.Namespace, data, storage: str, name: str = "") -> SearchResult:
    strategy, scheduler = ARMS[arm]
    config = SearchConfig(space=SPACE, strategy=strategy, scheduler={**scheduler, "max_t": args.max_t},
                          budget={"trials": args.trials}, concurrency=2, cpus_per_trial=1)
    return run_search(config, data, name=name or f"{arm}-{seed}", storage_path=storage, seed=seed, extra_splits=("test",))


def summary(result: SearchResult, target: float) -> dict[str, float | None]:
    """Best val accuracy, the test accuracy of that epoch's weights, time to ``target``, epochs, wall."""
    epochs = [(epoch, trial) for trial in result.trials for epoch in trial["history"]]
    best_epoch, best_trial = max(epochs, key=lambda e: e[0]["val_accuracy"])
    reached = [epoch["at_s"] for epoch, _ in epochs if epoch["val_accuracy"] >= target]
    return {"val": best_epoch["val_accuracy"], "test": best_epoch["test_accuracy"], "arch": best_trial["architecture"],
            "to_target": min(reached) if reached else None, "epochs": len(epochs), "wall": result.wall_s}


def median_of(rows: list[dict], key: str) -> str:
    values = [row[key] for row in rows if row[key] is not None]
    shown = f"{statistics.median(values):.4g}" if values else "-"
    return shown if len(values) == len(rows) else f"{shown} ({len(values)}/{len(rows)} reached)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--max-t", type=int, default=3)
    parser.add_argument("--target", type=float, default=0.97)
    args = parser.parse_args()
    storage = quiet_search_session("bench-mnist-")
    data = load_dataset("mnist5k", seed=0)
    # Warm-up, not reported: the pooled workers import torch once, so no arm pays for it.
    search("random+fifo", 0, argparse.Namespace(trials=2, max_t=1), load_dataset("mnist5k", seed=0, limit=200), storage,
           name="warm-up")
    print(f"mnist5k {len(data.train)}/{len(data.val)}/{len(data.test)}; {args.trials} trials × ≤{args.max_t} epochs, "
          f"2 concurrent; test accuracy = the best trial's weights at its best-val epoch")
    print(f"{'seed':<5}{'arm':<13}{'best val':>9}{'its test':>9}{f's to {args.target:.0%}':>10}{'epochs':>7}"
          f"{'wall s':>8}  best architecture")
    rows: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for seed in range(args.seeds):
        for arm in ARMS:  # interleaved: both arms see the same machine load
            start = time.perf_counter()
            row = summary(search(arm, seed, args, data, storage), args.target)
            rows[arm].append(row)
            to_target = f"{row['to_target']:.1f}" if row["to_target"] is not None else "-"
            print(f"{seed:<5}{arm:<13}{row['val']:>9.4f}{row['test']:>9.4f}{to_target:>10}{row['epochs']:>7}"
                  f"{time.perf_counter() - start:>8.1f}  {row['arch']}", flush=True)
    print(f"\nmedian over {args.seeds} seeds")
    print(f"{'arm':<13}{'best val':>10}{'its test':>10}{'epochs':>8}{'wall s':>8}  s to {args.target:.0%}")
    for arm, arm_rows in rows.items():
        print(f"{arm:<13}{median_of(arm_rows, 'val'):>10}{median_of(arm_rows, 'test'):>10}{median_of(arm_rows, 'epochs'):>8}"
              f"{median_of(arm_rows, 'wall'):>8}  {median_of(arm_rows, 'to_target')}")
    tpe, rnd = (statistics.median(r["wall"] for r in rows[a]) for a in ARMS)
    print(f"wall ratio tpe+asha ÷ random+fifo: {tpe / rnd:.2f}")


if __name__ == "__main__":
    main()
