"""Serving under load, side by side: Ray Serve running our app (unbatched, fixed ``serve.batch``, adaptive)
against a FastAPI + uvicorn peer over our own parser and ONNX Runtime code, and BentoML 1.4 with its
adaptive batching, for a request-path-bound model (MNIST CNN) and a compute-bound one (MiniLM, 64 tokens).

Everything listens on 127.0.0.1. Each server is started, measured and stopped in turn:

* closed loop at ``--clients`` (each client sends its next request when the last is answered);
* open loop (Poisson arrivals) at 0.7×, 1.5× and 3× the knee — the server's best closed-loop throughput,
  or ``--knee model=rps`` — or at ``--rates``.

A 503 is counted as shed, never retried; the client gives up after ``--timeout-s``. Per point: throughput
(2xx/s), goodput (2xx within ``--threshold-ms``, per s), p50/p99 of the 2xx, shed/s and share, timeouts and
errors. Serve runs in a subprocess (``serve_peers/ray_server.py``) whose environment holds phase 1's fastest
settings (HAProxy ingress, no user-code thread, quiet logs; ``--serve-env default`` for Serve's defaults),
and deploys ``deepseek_ray.deploy.app.build_app(args)``. ONNX Runtime's offline throughput (no server) is
measured first, at the serving configuration's threads.

    python bench/bench_serve.py --models mnist,minilm --seconds 6 --out bench/results/serve.md
    python bench/bench_serve.py --models mnist --servers serve-adaptive,fastapi --clients 1,64 --seconds 4
    python bench/bench_serve.py --device cuda --load-procs 8        # one H200: more load processes

On a GPU whose ONNX Runtime has no CUDA provider (the CPU wheel), ``--runtime auto`` serves the ``torch.export``
program (``model.pt2``) with torch instead, every server alike, at ``--precision`` (autocast).

BentoML is read from its own venv (``/tmp/bento-venv``, or ``BENCH_BENTO_VENV``); without it the bench says
why and carries on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loadgen import LoadGen, point_stats  # noqa: E402
from serve_models import MODELS, export_model, offline_throughput, request_bodies  # noqa: E402
from serve_peers import processes  # noqa: E402
from serve_peers.ray_server import fast_env  # noqa: E402

SERVE_VARIANTS = ("serve-unbatched", "serve-batch", "serve-adaptive")
SERVERS = (*SERVE_VARIANTS, "fastapi", "bento")
PORTS = {"serve": 8600, "fastapi": 8610, "bento": 8620}
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mnist,minilm")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--seconds", type=float, default=6.0, help="counted seconds per point (after 1 s warm-up)")
    parser.add_argument("--clients", default="1,16,64,256")
    parser.add_argument("--rates", default="", help="open-loop req/s for every server (instead of knee × 0.7,1.5,3)")
    parser.add_argument("--knee", default="", help="model=rps,...: the knee to scale open-loop rates by")
    parser.add_argument("--threshold-ms", type=float, default=100.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--wait-ms", type=float, default=10.0)
    parser.add_argument("--replicas", type=int, default=1, help="Serve replicas = uvicorn/BentoML workers")
    parser.add_argument("--num-cpus", type=float, default=1.0, help="per Serve replica")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per replica/worker")
    parser.add_argument("--timeout-s", type=float, default=5.0)
    parser.add_argument("--load-procs", type=int, default=0, help="load processes (default: 1 on cpu, 8 on cuda)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--runtime", choices=("auto", "onnxruntime", "torch"), default="auto",
                        help="auto: ONNX Runtime, or torch on a GPU that ONNX Runtime cannot use")
    parser.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32", help="torch runtime only")
    parser.add_argument("--cuda-graphs", choices=("on", "off"), default="on",
                        help="torch on cuda: replay CUDA graphs (serve.cuda_graphs), offline and in every server")
    parser.add_argument("--batches", default="", help="offline batch sizes (default: 1..32 for minilm, 1,8,32)")
    parser.add_argument("--serve-env", choices=("fast", "default"), default="fast")
    parser.add_argument("--haproxy-threads", type=int, default=0,
                        help="RAY_SERVE_HAPROXY_NBTHREAD under --serve-env fast (0: what deepseek_ray sets on this host)")
    parser.add_argument("--workdir", default="/tmp/bench_serve", help="exported models, logs")
    parser.add_argument("--out", default="", help="markdown file (default: bench/results/serve_<device>_<time>.md)")
    parser.add_argument("--merge", default="", help="a.json,b.json,...: only merge runs made in pieces into --out")
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------------------- servers
def serve_args(model_path: Path, variant: str, opts: argparse.Namespace) -> dict[str, Any]:
    """``build_app``'s args for a Serve variant: unbatched is ``max_batch: 1``."""
    batching = {
        "min_batch": 1,
        "max_batch": opts.max_batch,
        "latency_threshold_ms": opts.threshold_ms,
        "adaptive": variant == "serve-adaptive",
        "wait_ms": opts.wait_ms,
    }
    if variant == "serve-unbatched":
        batching.update(max_batch=1, adaptive=False)
    args = {
        "model_path": str(model_path),
        "batching": batching,
        "autoscaling": {"min_replicas": opts.replicas, "max_replicas": opts.replicas},
        "num_cpus": opts.num_cpus,
        "threads": opts.threads,
        "precision": opts.precision,
        "cuda_graphs": opts.cuda_graphs == "on",
    }
    if opts.device == "cuda":
        args["num_gpus"] = 1.0 / opts.replicas
    return args


class Servers:
    """Starts each server on demand; one Ray subprocess serves every Serve variant in turn."""

    def __init__(self, opts: argparse.Namespace):
        self.opts = opts
        self.ray: Any = None

    def _ray(self) -> Any:
        if self.ray is None:
            from serve_peers.ray_server import RayServeHost

            print("  starting Ray + Serve in a subprocess ...", flush=True)
            self.ray = RayServeHost(
                PORTS["serve"], fast=self.opts.serve_env == "fast", num_gpus=1 if self.opts.device == "cuda" else 0,
                haproxy_threads=self.opts.haproxy_threads,
            )
        return self.ray

    @contextlib.contextmanager
    def running(self, server: str, model: str, path: Path, bodies: list[bytes]) -> Iterator[tuple[str, list[bytes]]]:
        """The server's URL and the bodies it takes, while it runs."""
        opts, providers = self.opts, "CUDAExecutionProvider,CPUExecutionProvider" if self.opts.device == "cuda" else ""
        if path.suffix == ".pt2" and server == "bento":
            raise RuntimeError("the BentoML peer runs ONNX Runtime only; this run serves a torch.export program")
        if server in SERVE_VARIANTS:
            ray = self._ray()
            url = ray.deploy(f"{model}-{server}", serve_args(path, server, opts))
            try:
                processes.wait_until_answers(url, bodies[0])
                yield url, bodies
            finally:
                ray.delete(f"{model}-{server}")
            return
        if server == "fastapi":
            peer = processes.fastapi_peer(
                path,
                PORTS["fastapi"],
                opts.replicas,
                opts.threads,
                opts.device == "cuda",
                opts.precision,
                opts.max_batch if opts.cuda_graphs == "on" else 0,
            )
        else:
            why = processes.bento_available()
            if why:
                raise RuntimeError(why)
            shape = json.loads(Path(f"{path}.json").read_text())["input_shape"]
            peer = processes.bento_peer(
                path, shape, PORTS["bento"], opts.replicas, opts.max_batch, opts.threshold_ms, opts.threads, providers
            )
            bodies = [processes.as_batch_of_one(b) for b in bodies]
        try:
            processes.wait_until_answers(peer.url, bodies[0], proc=peer.proc)
            yield peer.url, bodies
        finally:
            peer.close()

    def close(self) -> None:
        if self.ray is not None:
            self.ray.close()
            self.ray = None


# ----------------------------------------------------------------------------------------- measuring
def open_rates(model: str, closed: list[dict[str, Any]], opts: argparse.Namespace) -> list[float]:
    if opts.rates:
        return [float(r) for r in opts.rates.split(",")]
    given = dict(item.split("=") for item in opts.knee.split(",") if item)
    knee = float(given[model]) if model in given else max((p["rps"] for p in closed), default=0.0)
    return [round(knee * factor, 1) for factor in (0.7, 1.5, 3.0)] if knee > 0 else []


def measure(gen: LoadGen, model: str, url: str, bodies: list[bytes], opts: argparse.Namespace) -> list[dict[str, Any]]:
    """Every point of one server: closed loop at each client count, then open loop at each rate; after each
    point on a Serve app, one replica's controller state (GET on the route)."""
    points = []
    for clients in (int(c) for c in opts.clients.split(",")):
        stats = point_stats(gen.closed(url, bodies, clients, opts.seconds), opts.threshold_ms)
        points.append({"mode": "closed", "load": clients, **stats, **_controller(url)})
        _progress(points[-1])
    for rate in open_rates(model, [p for p in points if p["mode"] == "closed"], opts):
        stats = point_stats(gen.open(url, bodies, rate, opts.seconds), opts.threshold_ms)
        points.append({"mode": "open", "load": rate, **stats, **_controller(url)})
        _progress(points[-1])
    return points


def _controller(url: str) -> dict[str, Any]:
    """``{"controller": ...}`` from a Serve replica's description, or nothing from a peer."""
    import urllib.request

    with contextlib.suppress(Exception), urllib.request.urlopen(url, timeout=5) as reply:
        return {"controller": json.loads(reply.read())["controller"]}
    return {}


def _progress(point: dict[str, Any]) -> None:
    unit = "clients" if point["mode"] == "closed" else "req/s"
    print(
        f"    {point['mode']:6} {point['load']:>7} {unit:7}  {point['rps']:7.1f} 2xx/s"
        f"  goodput {point['goodput']:7.1f}  p50 {point['p50_ms']:7.1f} ms  p99 {point['p99_ms']:7.1f} ms"
        f"  shed {point['shed_share']:5.1%}"
        f"  timeouts {point['timeouts']}  errors {point['errors'] + point['other_status']}"
        + (f"  unsent {point['unsent']}" if point["unsent"] else "")
        + (f"  [controller {point['controller']}]" if "controller" in point else ""),
        flush=True,
    )


def offline(path: Path, model: str, opts: argparse.Namespace) -> dict[int, dict[str, float]]:
    batches = (1, 2, 4, 8, 16, 32) if model == "minilm" else (1, 8, 32)
    batches = tuple(int(b) for b in opts.batches.split(",")) if opts.batches else batches
    graphs = max(batches) if opts.cuda_graphs == "on" else 0
    result = offline_throughput(path, batches, opts.threads, 2.0, opts.device == "cuda", opts.precision, graphs)
    for batch, row in result.items():
        print(
            f"    offline batch {batch:>2}: {row['samples_per_s']:8.1f} samples/s  {row['ms_per_call']:7.2f} ms/call",
            flush=True,
        )
    return result


# ------------------------------------------------------------------------------------------ reporting
def markdown(report: dict[str, Any]) -> str:
    opts = report["options"]
    lines = [
        f"## Serving benchmark ({report['device']}, {report['started']}, {opts['replicas']} replica(s) × "
        f"{opts['threads']} ORT thread(s), threshold {opts['threshold_ms']:.0f} ms, "
        f"Serve env: {opts['serve_env']})",
        "",
        f"`{report['command']}` — {report['wall_s']:.0f} s in all",
        "",
    ]
    if report.get("serve_env_vars"):
        lines += ["Ray's environment: " + " ".join(f"`{k}={v}`" for k, v in report["serve_env_vars"].items()), ""]
    for model, result in report["models"].items():
        offline_rows = ", ".join(
            f"b{b}: {r['samples_per_s']:.0f}/s ({r['ms_per_call']:.1f} ms)" for b, r in result["offline"].items()
        )
        reference = offline_reference(result["offline"], opts["threshold_ms"])
        lines += [
            f"### {model}",
            "",
            f"{result.get('runtime', 'ONNX Runtime')} offline (no server, {opts['threads']} thread(s) per process): "
            f"{offline_rows}; "
            f"the largest batch within half the threshold: {reference}",
            "",
            "| server | load | 2xx/s | goodput/s | p50 ms | p99 ms | shed/s (share) | timeouts | errors | unsent |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for server, outcome in result["servers"].items():
            if "error" in outcome:
                lines.append(f"| {server} | — did not run: {outcome['error']} | | | | | | | | |")
                continue
            for p in outcome["points"]:
                load = f"c={p['load']}" if p["mode"] == "closed" else f"{p['load']:g} req/s"
                lines.append(
                    f"| {server} | {load} | {p['rps']:.0f} | {p['goodput']:.0f} | {p['p50_ms']:.1f} | "
                    f"{p['p99_ms']:.1f} | {p['shed_rps']:.0f} ({p['shed_share']:.0%}) | {p['timeouts']} | "
                    f"{p['errors'] + p['other_status']} | {p['unsent']} |"
                )
        lines.append("")
    return "\n".join(lines)


def offline_reference(rows: dict[Any, dict[str, float]], threshold_ms: float) -> str:
    """The goal's yardstick: offline samples/s at the largest batch whose call takes ≤ half the threshold."""
    within = [(int(b), r) for b, r in rows.items() if r["ms_per_call"] <= threshold_ms / 2]
    if not within:
        return "none (even batch 1 takes more than half the threshold)"
    batch, row = max(within, key=lambda item: item[0])
    return f"batch {batch}, {row['samples_per_s']:.0f} samples/s per process"


def write(report: dict[str, Any], opts: argparse.Namespace) -> Path:
    RESULTS.mkdir(exist_ok=True)
    stem = f"serve_{opts.device}_{time.strftime('%Y-%m-%d_%H%M%S')}"
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    out = Path(opts.out) if opts.out else RESULTS / f"{stem}.md"
    out.write_text(markdown(report))
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    return out


# ------------------------------------------------------------------------------------------------ main
def merge(paths: list[str], out: str) -> None:
    """One markdown over several runs' JSON (e.g. one server per run, to keep each run short)."""
    reports = [json.loads(Path(p).read_text()) for p in paths]
    merged = {
        **reports[0],
        "models": {},
        "wall_s": sum(r["wall_s"] for r in reports),
        "command": " ; ".join(r["command"] for r in reports),
    }
    for report in reports:
        for model, result in report["models"].items():
            into = merged["models"].setdefault(model, {**result, "servers": {}})
            into["servers"].update(result["servers"])
    text = markdown(merged)
    if out:
        Path(out).write_text(text)
        Path(out).with_suffix(".json").write_text(json.dumps(merged, indent=1))
    print(text)


def main(argv: list[str] | None = None) -> None:
    # `timeout` / `kill` send SIGTERM: unwind, so that the servers and Ray are stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    opts = parse_args(argv)
    if opts.merge:
        return merge(opts.merge.split(","), opts.out)
    opts.load_procs = opts.load_procs or (8 if opts.device == "cuda" else 1)
    workdir = Path(opts.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    report: dict[str, Any] = {
        "device": opts.device,
        "started": time.strftime("%Y-%m-%d %H:%M"),
        "command": "python bench/bench_serve.py " + " ".join(argv or sys.argv[1:]),
        "options": vars(opts),
        "serve_env_vars": fast_env(opts.haproxy_threads) if opts.serve_env == "fast" else {},
        "models": {},
    }
    servers = Servers(opts)
    try:
        with LoadGen(procs=opts.load_procs, timeout_s=opts.timeout_s) as gen:
            for model in opts.models.split(","):
                report["models"][model] = run_model(model, workdir, servers, gen, opts)
    finally:
        servers.close()
        report["wall_s"] = time.time() - started
        out = write(report, opts)
        print(markdown(report))
        print(f"written: {out} and its .json (a copy in {RESULTS})")


def runtime_of(opts: argparse.Namespace) -> str:
    """What runs the model in every server: ONNX Runtime, or torch (``.pt2``) where asked or where ONNX Runtime
    has no CUDA provider on a GPU run."""
    import onnxruntime

    cuda_ort = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    torch_runtime = opts.runtime == "torch" or (opts.runtime == "auto" and opts.device == "cuda" and not cuda_ort)
    if not torch_runtime and opts.precision != "fp32":
        raise SystemExit("--precision fp16/bf16 needs the torch runtime (--runtime torch)")
    graphs = " (CUDA graphs)" if opts.device == "cuda" and opts.cuda_graphs == "on" else ""
    return f"torch {opts.precision} on {opts.device}{graphs}" if torch_runtime else "ONNX Runtime"


def run_model(model: str, workdir: Path, servers: Servers, gen: LoadGen, opts: argparse.Namespace) -> dict[str, Any]:
    if model not in MODELS:
        raise SystemExit(f"--models: unknown {model!r}; known: {', '.join(MODELS)}")
    runtime = runtime_of(opts)
    print(f"{model}: exporting (once) and measuring {runtime} offline ...", flush=True)
    path = export_model(model, workdir / "models", "torch_export" if runtime.startswith("torch") else "onnx")
    result: dict[str, Any] = {"model_path": str(path), "runtime": runtime, "offline": offline(path, model, opts),
                              "servers": {}}
    bodies = request_bodies(model)
    for server in opts.servers.split(","):
        print(f"  {model} on {server}:", flush=True)
        began = time.time()
        try:
            with servers.running(server, model, path, bodies) as (url, server_bodies):
                result["servers"][server] = {"url": url, "points": measure(gen, model, url, server_bodies, opts)}
        except Exception as err:  # one server failing is reported, and the others still run
            print(f"    {server} did not run: {type(err).__name__}: {err}", flush=True)
            result["servers"][server] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
        result["servers"][server]["wall_s"] = round(time.time() - began, 1)
    return result


if __name__ == "__main__":
    main()
