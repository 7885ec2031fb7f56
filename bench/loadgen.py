"""A bounded multi-process HTTP load generator (aiohttp), for loopback benchmarks.

Each point runs ``procs`` processes, each with its own event loop, all starting at the same wall time:

- closed loop: ``clients`` workers in all, each sends its next request when the last one is answered; what
  is answered within the counted window counts (so throughput is completions per second);
- open loop: arrivals at ``rate`` per second in all (Poisson, or fixed intervals), whatever the answers;
  every arrival within the window counts, however late its answer (or its timeout).

A 503 is counted as shed, not retried; a request not answered within ``timeout_s`` counts as a timeout. The
first ``warmup_s`` of a point are sent but not counted. ``point_stats`` turns the raw counts into
throughput (2xx/s), goodput (2xx within the latency threshold, per s), p50/p99 of the 2xx, and the shed rate.

>>> gen = LoadGen(procs=2)                                  # doctest: +SKIP
>>> raw = gen.closed('http://127.0.0.1:8000/p', body, clients=16, seconds=6)
>>> point_stats(raw, threshold_ms=100)
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass
class Raw:
    """What one process saw during a point: 2xx latencies (s), and counts by outcome."""

    ok_latencies: list[float] = field(default_factory=list)
    shed: int = 0
    other_status: dict[int, int] = field(default_factory=dict)
    timeouts: int = 0
    errors: int = 0
    seconds: float = 0.0
    unsent: int = 0  # open loop: arrivals the generator could not send in time (its own backlog)

    def merge(self, other: Raw) -> Raw:
        self.ok_latencies += other.ok_latencies
        self.shed += other.shed
        self.timeouts += other.timeouts
        self.errors += other.errors
        self.unsent += other.unsent
        self.seconds = max(self.seconds, other.seconds)
        for code, n in other.other_status.items():
            self.other_status[int(code)] = self.other_status.get(int(code), 0) + n
        return self


async def _send(
    session: Any, url: str, body: bytes, timeout_s: float, counted: bool, raw: Raw, window_end: float = float("inf")
) -> None:
    """One request; counted if ``counted`` and (closed loop) finished by ``window_end`` (wall time)."""
    import aiohttp

    start = time.perf_counter()
    try:
        async with session.post(
            url, data=body, headers={"Content-Type": "application/json"}, timeout=aiohttp.ClientTimeout(total=timeout_s)
        ) as reply:
            await reply.read()
            status = reply.status
    except TimeoutError:
        raw.timeouts += counted
        return
    except aiohttp.ClientError:
        raw.errors += counted
        return
    if not counted or time.time() > window_end:
        return
    if 200 <= status < 300:
        raw.ok_latencies.append(time.perf_counter() - start)
    elif status == 503:
        raw.shed += 1
    else:
        raw.other_status[status] = raw.other_status.get(status, 0) + 1


async def _closed(
    url: str | list[str],
    bodies: list[bytes],
    clients: int,
    start_at: float,
    warmup_s: float,
    seconds: float,
    timeout_s: float,
    first: int = 0,
) -> Raw:
    import aiohttp

    raw = Raw()
    counting_from = start_at + warmup_s
    stop_at = counting_from + seconds

    urls = [url] if isinstance(url, str) else url

    async def worker(session: Any, i: int) -> None:
        n = i
        target = urls[(first + i) % len(urls)]  # several URLs (one per replica port): spread the clients over them
        while time.time() < stop_at:
            sent_at = time.time()
            await _send(session, target, bodies[n % len(bodies)], timeout_s, sent_at >= counting_from, raw, stop_at)
            n += clients

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(worker(session, i) for i in range(clients)))
    raw.seconds = seconds
    return raw


async def _open(
    url: str | list[str],
    bodies: list[bytes],
    rate: float,
    poisson: bool,
    start_at: float,
    warmup_s: float,
    seconds: float,
    timeout_s: float,
    seed: int,
) -> Raw:
    import aiohttp

    raw = Raw()
    rng = random.Random(seed)
    counting_from = start_at + warmup_s
    stop_at = counting_from + seconds
    tasks: set[asyncio.Task] = set()
    urls = [url] if isinstance(url, str) else url
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        due = time.time()
        n = 0
        while due < stop_at:
            due += rng.expovariate(rate) if poisson else 1.0 / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.05 and due >= counting_from:
                raw.unsent += 1  # the generator itself fell behind: say so rather than bunch arrivals
                continue
            body = bodies[n % len(bodies)]
            task = asyncio.create_task(_send(session, urls[n % len(urls)], body, timeout_s, due >= counting_from, raw))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s + 1)
    raw.seconds = seconds
    return raw


def _split(total: float, parts: int) -> list[float]:
    return [total / parts] * parts


class LoadGen:
    """``procs`` load processes (started once, reused for every point; each runs this file as a worker,
    so the caller's ``__main__`` is never re-imported)."""

    def __init__(self, procs: int = 1, timeout_s: float = 5.0, warmup_s: float = 1.0):
        self.procs = procs
        self.timeout_s = timeout_s
        self.warmup_s = warmup_s
        self.workers = [
            subprocess.Popen(
                [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
            )
            for _ in range(procs)
        ]

    def _run(self, kind: str, per_process: list[dict[str, Any]]) -> Raw:
        start_at = time.time() + 0.5
        common = {"start_at": start_at, "warmup_s": self.warmup_s, "timeout_s": self.timeout_s}
        for worker, kw in zip(self.workers, per_process, strict=False):
            kw = {**common, **kw, "bodies": [b.decode() for b in kw["bodies"]]}
            worker.stdin.write(json.dumps({"kind": kind, "kwargs": kw}) + "\n")
            worker.stdin.flush()
        total = Raw()
        for worker, _ in zip(self.workers, per_process, strict=False):
            line = worker.stdout.readline()
            if not line:
                raise RuntimeError("a load process died; see its stderr above")
            total.merge(Raw(**json.loads(line)))
        return total

    def closed(self, url: str | list[str], bodies: list[bytes], clients: int, seconds: float) -> Raw:
        procs = max(1, min(self.procs, clients))
        shares = [clients // procs + (i < clients % procs) for i in range(procs)]
        return self._run(
            "closed",
            [
                {"url": url, "bodies": bodies, "clients": c, "seconds": seconds, "first": sum(shares[:i])}
                for i, c in enumerate(shares)
            ],
        )

    def open(self, url: str | list[str], bodies: list[bytes], rate: float, seconds: float, poisson: bool = True) -> Raw:
        return self._run(
            "open",
            [
                {"url": url, "bodies": bodies, "rate": r, "poisson": poisson, "seconds": seconds, "seed": i}
                for i, r in enumerate(_split(rate, self.procs))
            ],
        )

    def close(self, kill: bool = False) -> None:
        """Let the workers finish (end of input), or kill them at once (``kill``: the caller is unwinding)."""
        for worker in self.workers:
            if kill:
                worker.kill()
            worker.stdin.close()
        for worker in self.workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()

    def __enter__(self) -> LoadGen:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(kill=exc[0] is not None)


def _worker_loop() -> None:
    """A load process: one JSON command per line in, one JSON ``Raw`` per line out."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    for line in sys.stdin:
        command = json.loads(line)
        kw = command["kwargs"]
        kw["bodies"] = [b.encode() for b in kw["bodies"]]
        coro = _closed(**kw) if command["kind"] == "closed" else _open(**kw)
        print(json.dumps(asdict(asyncio.run(coro))), flush=True)


def point_stats(raw: Raw, threshold_ms: float) -> dict[str, float]:
    """Throughput, goodput, latency percentiles (ms) and shed figures of one point."""
    lat_ms = np.asarray(raw.ok_latencies) * 1000
    ok = len(lat_ms)
    answered = ok + raw.shed + sum(raw.other_status.values())
    sent = answered + raw.timeouts + raw.errors
    s = raw.seconds or 1.0
    return {
        "rps": ok / s,
        "goodput": float((lat_ms <= threshold_ms).sum()) / s,
        "p50_ms": float(np.percentile(lat_ms, 50)) if ok else float("nan"),
        "p99_ms": float(np.percentile(lat_ms, 99)) if ok else float("nan"),
        "shed_rps": raw.shed / s,
        "shed_share": raw.shed / sent if sent else 0.0,
        "other_status": sum(raw.other_status.values()),
        "timeouts": raw.timeouts,
        "errors": raw.errors,
        "unsent": raw.unsent,
        "sent": sent,
    }


if __name__ == "__main__" and sys.argv[1:] == ["--worker"]:
    _worker_loop()
