"""The overload drill of ``tests/test_serve.py``, repeated and reported: a model made slow through the replica's
drill hook (batches take ``per_batch + per_example·n`` ms) is sent an open-loop blast at a multiple of what it
can answer; the report gives, per run, the accepted and shed counts, the accepted requests' p99 from the
replica's receipt (its ``Server-Timing``) and end to end, how fast a refusal came, and the batch sizes.

The test asserts the bounds (p99 inside the replica ≤ threshold, refusals at once); this prints the figures.
``--hog`` runs a busy loop on one core meanwhile, as a loaded CI machine would.

    python bench/record.py bench/results/cpu_2026-12-02/overload.txt -- \\
        python bench/bench_overload.py --rates 120,180 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # serve_models, and the test's load generator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="180", help="open-loop arrivals per second, one blast each")
    parser.add_argument("--runs", type=int, default=3, help="blasts per rate")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each blast")
    parser.add_argument("--threshold-ms", type=float, default=500.0)
    parser.add_argument("--per-batch-ms", type=float, default=100.0)
    parser.add_argument("--per-example-ms", type=float, default=8.0)
    parser.add_argument("--learn", choices=("closed", "open"), default="closed",
                        help="before each blast: 64 requests 16 at a time (the test's), or at 32/s")
    parser.add_argument("--hog", action="store_true", help="a busy loop on one core during every blast")
    parser.add_argument("--port", type=int, default=8710)
    parser.add_argument("--workdir", default="/tmp/bench_overload")
    return parser.parse_args(argv)


@contextlib.contextmanager
def busy_core(on: bool) -> Iterator[None]:
    hog = subprocess.Popen(["sh", "-c", "while :; do :; done"]) if on else None
    try:
        yield
    finally:
        if hog is not None:
            hog.kill()


def summarize(answers: list[tuple[int, float, dict, Any]], threshold_ms: float) -> dict[str, Any]:
    accepted = [a for a in answers if a[0] == 200]
    shed = [a for a in answers if a[0] == 503]
    inside = [float(h["server-timing"].removeprefix("replica;dur=")) for *_, h in accepted]
    client = [s * 1000 for _, s, *_ in accepted]
    sizes = Counter(p.get("batch_size") for _, _, p, _ in accepted)
    return {
        "sent": len(answers),
        "accepted": len(accepted),
        "shed": len(shed),
        "other": len(answers) - len(accepted) - len(shed),
        "replica_p99_ms": float(np.percentile(inside, 99)) if inside else float("nan"),
        "client_p95_ms": float(np.percentile(client, 95)) if client else float("nan"),
        "client_p99_ms": float(np.percentile(client, 99)) if client else float("nan"),
        "shed_median_ms": float(np.median([s * 1000 for _, s, *_ in shed])) if shed else float("nan"),
        "within_threshold": sum(ms <= threshold_ms for ms in inside),
        "batch_sizes": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:4]),
    }


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    from serve_models import export_model
    from serve_peers.ray_server import FAST, ISOLATION

    from tests.test_serve import blast  # the drill's own load generator: the same requests as the test

    os.makedirs(ISOLATION["RAY_SERVE_HAPROXY_SERVER_STATE_BASE"], exist_ok=True)
    os.environ.update({**ISOLATION, **FAST})
    import ray
    from ray import serve

    from deepseek_ray.deploy import deploy

    model = export_model("mnist", Path(opts.workdir))
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             logging_level="ERROR")
    url = deploy(model, name="drill", route="/drill", port=opts.port, num_cpus=0.25,
                 autoscaling={"min_replicas": 1, "max_replicas": 1},
                 batching={"max_batch": 32, "latency_threshold_ms": opts.threshold_ms})
    body = {"inputs": np.random.default_rng(2).uniform(0, 255, (1, 28, 28)).round(2).tolist()}
    handle = serve.get_deployment_handle("ModelServer", app_name="drill")
    print(f"threshold {opts.threshold_ms:g} ms; batches take {opts.per_batch_ms:g} + {opts.per_example_ms:g}·n ms;"
          f" hog: {opts.hog}", flush=True)
    rows = []
    try:
        for rate in (float(r) for r in opts.rates.split(",")):
            for run in range(opts.runs):
                handle.slow_down_for_drill.remote(opts.per_batch_ms, opts.per_example_ms).result()
                if opts.learn == "closed":  # the cost model learns the new speed, as in the test
                    blast(url, body, count=64, concurrency=16)
                else:
                    blast(url, body, count=64, concurrency=64, rate=32.0)
                with busy_core(opts.hog):
                    count = int(rate * opts.seconds)
                    answers = blast(url, body, count=count, concurrency=count, rate=rate)
                controller = json.loads(urllib.request.urlopen(url, timeout=30).read())["controller"]
                handle.slow_down_for_drill.remote().result()
                time.sleep(1.0)
                row = {"rate": rate, "run": run + 1, **summarize(answers, opts.threshold_ms), "controller": controller}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
    print("\n| rate /s | run | sent | accepted | shed | replica p99 ms | client p95 / p99 ms | shed median ms |"
          " top batch sizes (size: answers) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        sizes = ", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items())
        print(f"| {r['rate']:g} | {r['run']} | {r['sent']} | {r['accepted']} | {r['shed']} | {r['replica_p99_ms']:.0f}"
              f" | {r['client_p95_ms']:.0f} / {r['client_p99_ms']:.0f} | {r['shed_median_ms']:.1f} | {sizes} |")


if __name__ == "__main__":
    main()
