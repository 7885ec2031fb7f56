"""Ray Serve for the benchmark, in its own process: its environment is set before Ray is imported (Serve
reads its settings at import), and the benchmark's process never imports Ray.

``RayServeHost`` starts ``python ray_server.py`` with the chosen environment; the child starts a local Ray
and Serve on 127.0.0.1 and then takes one JSON command per line on stdin (``deploy`` an app built by
``deepseek_ray.deploy.app.build_app(args)``, ``delete`` it, start or stop a shadow session),
answering one ``@@``-prefixed JSON line each.
On ``stop`` or end of input it shuts Serve and Ray down.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from deepseek_ray.runtime import serve_settings

HERE = os.path.dirname(os.path.abspath(__file__))
SCRATCH = "/tmp/bench_serve/haproxy"

#: what phase 1 found fastest here (bench/results/serve_phase1.md), as the project sets it where Ray starts;
#: the replica's own setting (no user-code thread) comes with the app (deepseek_ray.deploy.app.REPLICA_ENV)
FAST = serve_settings("haproxy")


def fast_env(haproxy_threads: int = 0) -> dict[str, str]:
    """FAST with ``haproxy_threads`` HAProxy threads (0: as deepseek_ray sets them for this host)."""
    return {**FAST, **({"RAY_SERVE_HAPROXY_NBTHREAD": str(haproxy_threads)} if haproxy_threads else {})}

#: paths and ports of this benchmark's own, so that a second Ray on the machine (tests) is not disturbed
ISOLATION = {
    "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": "31300",
    "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": "31399",
    "RAY_SERVE_DIRECT_INGRESS_MIN_GRPC_PORT": "31400",
    "RAY_SERVE_DIRECT_INGRESS_MAX_GRPC_PORT": "31499",
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{SCRATCH}/haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{SCRATCH}/admin.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": SCRATCH,
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{SCRATCH}/server-state",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{SCRATCH}/metrics.sock",
    "RAY_SERVE_HAPROXY_METRICS_PORT": "9191",
    "RAY_SERVE_HAPROXY_STATS_PORT": "8494",
    "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": "8590",
    "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT": "8591",
}


class RayServeHost:
    """The Ray subprocess, seen from the benchmark: ``deploy`` returns the app's URL once it answers."""

    def __init__(
        self, port: int, fast: bool = True, num_cpus: int | None = None, num_gpus: int = 0, haproxy_threads: int = 0
    ):
        os.makedirs(SCRATCH, exist_ok=True)
        env = {**os.environ, **ISOLATION, **(fast_env(haproxy_threads) if fast else {})}
        if fast:
            env.pop("RAY_SERVE_THROUGHPUT_OPTIMIZED", None)
        self.port = port
        config = {"port": port, "fast": fast, "num_cpus": num_cpus or os.cpu_count(), "num_gpus": num_gpus}
        self.log = open("/tmp/bench_serve/ray_server.log", "a")  # noqa: SIM115  # closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, __file__, json.dumps(config)],
            env=env,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
        )
        self._answer(timeout_s=180)  # Ray and Serve are up

    def _answer(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the Ray subprocess ended; see /tmp/bench_serve/ray_server.log")
            if line.startswith("@@"):
                answer = json.loads(line[2:])
                if "error" in answer:
                    raise RuntimeError(f"Ray subprocess: {answer['error']}")
                return answer
        raise TimeoutError("the Ray subprocess did not answer in time")

    def _command(self, command: dict[str, Any], timeout_s: float = 300) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout_s)

    def deploy(self, name: str, args: dict[str, Any], route: str = "/predict") -> str:
        self._command({"op": "deploy", "name": name, "args": args, "route": route})
        return f"http://127.0.0.1:{self.port}{route}"

    def delete(self, name: str) -> None:
        self._command({"op": "delete", "name": name})

    def shadow(self, name: str, candidate: str | None, **options: Any) -> None:
        """Start a shadow session of ``name`` with ``candidate`` (None: stop it)."""
        if candidate is None:
            self._command({"op": "shadow_stop", "name": name})
        else:
            self._command({"op": "shadow_start", "name": name, "candidate": candidate, "options": options})

    def shadow_counts(self, name: str) -> dict[str, int]:
        return self._command({"op": "shadow_status", "name": name})["status"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._command({"op": "stop"}, timeout_s=90)
                self.proc.wait(timeout=60)
            except (RuntimeError, TimeoutError, subprocess.TimeoutExpired, BrokenPipeError):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ------------------------------------------------------------------------------------------ the child
def _say(answer: dict[str, Any]) -> None:
    """One line to the parent, kept under the pipe's atomic write size (4 KiB): Ray's processes write to the
    same stdout, and a longer line can be split by theirs (a deploy error of 8 replicas was, on one H200)."""
    if "error" in answer:
        answer = {"error": answer["error"][:3000]}
    print("@@" + json.dumps(answer), flush=True)


def _child(config: dict[str, Any]) -> None:
    import ray
    from ray import serve

    from deepseek_ray.deploy.app import build_app
    from deepseek_ray.deploy.shadow import shadow_status, start_shadow, stop_shadow

    ray.init(
        num_cpus=config["num_cpus"],
        num_gpus=config["num_gpus"],
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=False,
    )
    logging = {"enable_access_log": False, "log_level": "WARNING"} if config["fast"] else None
    # An explicit loopback host: with HAProxy, Serve's *default* host is every interface (phase 1).
    serve.start(http_options={"host": "127.0.0.1", "port": config["port"]}, logging_config=logging)
    _say({"ok": True, "ready": True})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            try:
                if command["op"] == "deploy":
                    args = {**command["args"], "route": command["route"]}
                    serve.run(build_app(args), name=command["name"], route_prefix=command["route"])
                elif command["op"] == "delete":
                    serve.delete(command["name"])
                elif command["op"] == "shadow_start":
                    start_shadow(command["name"], command["candidate"], **command["options"])
                elif command["op"] == "shadow_stop":
                    stop_shadow(command["name"])
                elif command["op"] == "shadow_status":
                    status = shadow_status(command["name"])
                    _say({"ok": True, "status": {k: v for k, v in status.items() if isinstance(v, int)}})
                    continue
                elif command["op"] == "stop":
                    break
                _say({"ok": True})
            except Exception as err:  # reported to the benchmark, which carries on with the next server
                _say({"error": f"{type(err).__name__}: {err}"})
    finally:
        serve.shutdown()
        ray.shutdown()
        _say({"ok": True, "stopped": True})


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
