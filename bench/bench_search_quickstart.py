"""The quickstart's search stage on Ray Tune against the runner it replaced, on the same 12 configurations.

Each arm runs ``run_search`` on ``examples/quickstart.yaml``'s data and space in a fresh process with its
own embedded Ray (2 CPUs), interleaved per repeat. Both draw the 12 configurations from the same seeded
random searcher (OptunaSearch over ``RandomSampler``) and train each for ``max_t`` epochs (FIFO), so the
work is the same and the walls compare the engines. The old runner is a checkout of the commit before
issue 14 (``git worktree add /tmp/old-runner 6ecd6cd``). Goal (issue 14): Tune's wall ≤ 1.05× the old one.

    python bench/bench_search_quickstart.py --old-tree /tmp/old-runner [--repeats 2] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, sys, time
import ray
import deepseek_ray
from deepseek_ray.config import load
from deepseek_ray.data import from_config
from deepseek_ray.hpo import run_search

cfg = load(sys.argv[1], overrides={"search.strategy": {"type": "random"}, "search.scheduler": {"type": "fifo", "max_t": 4},
                                   "search.budget": {"trials": 12}})
data = from_config(cfg.data, cfg.seed)
ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
result = run_search(cfg.search, data, name="qs", storage_path=sys.argv[2], seed=cfg.seed, augment=cfg.data.augment)
print(json.dumps({"package": deepseek_ray.__file__, "wall_s": result.wall_s, "trials": len(result.trials),
                  "epochs": sum(t["epochs"] for t in result.trials), "best": result.best_metric,
                  "params": sorted(round(t["params"]["lr"], 12) for t in result.trials)}))
"""


def run_arm(tree: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    with tempfile.TemporaryDirectory(prefix="bench-qs-") as storage:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(ROOT / "examples" / "quickstart.yaml"), storage],
                              cwd=tree, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["package"].startswith(str(tree)), f"{row['package']} is not from {tree}"
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old-tree", type=Path, required=True, help="a checkout of the runner before Tune")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    print(f"{'repeat':<8}{'arm':<14}{'search wall s':>15}{'trials':>8}{'epochs':>8}{'best val':>10}")
    for repeat in range(args.repeats):
        for arm, tree in (("old runner", args.old_tree.resolve()), ("Tuner.fit", ROOT)):
            row = {"repeat": repeat, "arm": arm, **run_arm(tree)}
            rows.append(row)
            print(f"{repeat:<8}{arm:<14}{row['wall_s']:>15.1f}{row['trials']:>8}{row['epochs']:>8}{row['best']:>10.4f}")
    same = len({json.dumps(r["params"]) for r in rows}) == 1
    old = statistics.median(r["wall_s"] for r in rows if r["arm"] == "old runner")
    new = statistics.median(r["wall_s"] for r in rows if r["arm"] == "Tuner.fit")
    print(f"median: old {old:.1f} s, Tuner.fit {new:.1f} s, ratio {new / old:.3f} (goal ≤ 1.05); "
          f"same 12 configurations in every run: {same}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
