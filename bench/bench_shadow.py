"""What shadow traffic costs the live path: MNIST on Ray Serve (our adaptive app), side by side in one Ray session:
``plain`` (no shadow) and ``mirrored`` (a shadow session whose candidate is the same model, in its own app
``mirrored-shadow``, mirroring ``--fraction`` of the requests). Both apps run throughout, so no start or stop of
a session falls inside a measurement; each round measures one then the other (the order alternates), so drift
on these noisy machines falls on both alike:

* the knee: closed loop at ``--clients``; goodput mirrored over plain (goal ≥ 0.95×);
* half the knee's load: open loop (Poisson) at half the plain app's median goodput; p50 and p99 mirrored
  against plain (goal: p50 + ≤ 1 ms, p99 + ≤ 5 ms).

The mirrored, answered and dropped counts of each round come from the session's prediction log.

    python bench/bench_shadow.py --seconds 5 --rounds 4 --out bench/results/shadow_cpu.md
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import LoadGen, point_stats  # noqa: E402
from serve_models import export_model, request_bodies  # noqa: E402
from serve_peers.ray_server import RayServeHost  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
PORT = 8630
APPS = ("plain", "mirrored")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="counted seconds per point (after 1 s warm-up)")
    parser.add_argument("--rounds", type=int, default=4, help="plain/mirrored pairs per load")
    parser.add_argument("--clients", type=int, default=64, help="closed-loop clients at the knee")
    parser.add_argument("--fraction", type=float, default=0.1)
    parser.add_argument("--threshold-ms", type=float, default=100.0)
    parser.add_argument("--num-cpus", type=float, default=0.5, help="per replica (live and candidate)")
    parser.add_argument("--workdir", default="/tmp/bench_shadow")
    parser.add_argument("--out", default="")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts = parse_args(argv)
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = export_model("mnist", workdir / "models")
    bodies = request_bodies("mnist")
    store = f"sqlite:///{workdir.resolve()}/mlflow.db"
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/bench_shadow.py " + " ".join(argv or sys.argv[1:]),
        "options": vars(opts),
        "rounds": [],
    }
    host = RayServeHost(PORT, num_cpus=4)
    try:
        args = {
            "model_path": str(path),
            "batching": {"max_batch": 32, "latency_threshold_ms": opts.threshold_ms},
            "autoscaling": {"min_replicas": 1, "max_replicas": 1},
            "num_cpus": opts.num_cpus,
            "tracking_uri": store,
        }
        urls = {app: host.deploy(app, args, route=f"/{app}") for app in APPS}
        host.shadow("mirrored", str(path), fraction=opts.fraction, tracking_uri=store, log_dir=str(workdir / "shadow"))
        with LoadGen(procs=1, timeout_s=5.0) as gen:
            mirroring(gen, host, urls["mirrored"], bodies)
            for url in urls.values():
                gen.closed(url, bodies, opts.clients, 3.0)  # warm-up: each controller settles
            measure(gen, host, urls, bodies, opts, report, "closed", opts.clients)
            plain = [r["plain"]["goodput"] for r in report["rounds"] if r["mode"] == "closed"]
            measure(gen, host, urls, bodies, opts, report, "open", round(statistics.median(plain) / 2, 1))
    finally:
        host.close()
    out = write(report, opts)
    print(markdown(report))
    print(f"written: {out}")


def measure(
    gen: LoadGen,
    host: RayServeHost,
    urls: dict[str, str],
    bodies: list[bytes],
    opts: argparse.Namespace,
    report: dict[str, Any],
    mode: str,
    load: float,
) -> None:
    """``--rounds`` pairs of points at ``load`` (clients, or req/s), plain and mirrored, in alternating order."""
    for index in range(opts.rounds):
        row: dict[str, Any] = {"mode": mode, "load": load}
        before = host.shadow_counts("mirrored")
        for app in APPS if index % 2 == 0 else APPS[::-1]:
            if mode == "closed":
                raw = gen.closed(urls[app], bodies, int(load), opts.seconds)
            else:
                raw = gen.open(urls[app], bodies, load, opts.seconds)
            row[app] = point_stats(raw, opts.threshold_ms)
        after = host.shadow_counts("mirrored")
        row["counts"] = {key: after[key] - before[key] for key in ("mirrored", "answered", "dropped")}
        report["rounds"].append(row)
        plain, mirrored = row["plain"], row["mirrored"]
        print(
            f"  {mode} {load}: goodput {plain['goodput']:.1f} / {mirrored['goodput']:.1f}, "
            f"p50 {plain['p50_ms']:.2f} / {mirrored['p50_ms']:.2f} ms, "
            f"p99 {plain['p99_ms']:.2f} / {mirrored['p99_ms']:.2f} ms (plain / mirrored), {row['counts']}",
            flush=True,
        )


def mirroring(gen: LoadGen, host: RayServeHost, url: str, bodies: list[bytes], timeout_s: float = 120) -> None:
    """Until the session's candidate is up and the live replica mirrors to it (before any measurement)."""
    deadline = time.time() + timeout_s
    while host.shadow_counts("mirrored")["answered"] == 0:
        if time.time() > deadline:
            raise TimeoutError("the live replica did not mirror to the candidate")
        gen.closed(url, bodies, 4, 1.0)
    time.sleep(10.0)  # the shadow controller's start-up (imports) is over before the first point


def markdown(report: dict[str, Any]) -> str:
    lines = [f"Shadow mirroring cost, {report['started']}: `{report['command']}`", ""]
    lines += [
        "| load | round | goodput plain | goodput mirrored | ratio | p50 plain | p50 mirrored | p99 plain "
        "| p99 mirrored | mirrored / answered / dropped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(report["rounds"]):
        plain, mirrored, counts = row["plain"], row["mirrored"], row["counts"]
        unit = "clients" if row["mode"] == "closed" else "req/s"
        lines.append(
            f"| {row['mode']} {row['load']} {unit} | {i} | {plain['goodput']:.1f} | {mirrored['goodput']:.1f} | "
            f"{mirrored['goodput'] / max(plain['goodput'], 1e-9):.3f} | {plain['p50_ms']:.2f} | "
            f"{mirrored['p50_ms']:.2f} | "
            f"{plain['p99_ms']:.2f} | {mirrored['p99_ms']:.2f} | {counts['mirrored']} / {counts['answered']} / "
            f"{counts['dropped']} |"
        )
    for mode in ("closed", "open"):
        rows = [r for r in report["rounds"] if r["mode"] == mode]
        if not rows:
            continue
        ratio = statistics.median(r["mirrored"]["goodput"] / max(r["plain"]["goodput"], 1e-9) for r in rows)
        p50 = statistics.median(r["mirrored"]["p50_ms"] - r["plain"]["p50_ms"] for r in rows)
        p99 = statistics.median(r["mirrored"]["p99_ms"] - r["plain"]["p99_ms"] for r in rows)
        summary = f"median goodput ratio mirrored/plain {ratio:.3f}; median Δp50 {p50:+.2f} ms, Δp99 {p99:+.2f} ms"
        lines.append(f"\n{mode}: {summary}")
    return "\n".join(lines)


def write(report: dict[str, Any], opts: argparse.Namespace) -> Path:
    RESULTS.mkdir(exist_ok=True)
    out = Path(opts.out) if opts.out else RESULTS / f"shadow_cpu_{time.strftime('%Y-%m-%d_%H%M')}.md"
    out.write_text(markdown(report) + "\n")
    out.with_suffix(".json").write_text(json.dumps(report, indent=2, default=str))
    return out


if __name__ == "__main__":
    main()
