"""The latency controller over ``serve.batch``, and the admission check that sheds load past the knee.

``serve.batch`` forms the batches; the controller only moves its two setters (``set_max_batch_size``,
``set_batch_wait_timeout_s``) and answers one question per request: can it be served within the threshold?

How it decides (a cost model corrected by AIMD, rather than AIMD alone as in Clipper):

- **Cost model.** Batch compute time is fitted as ``a·n + b`` over the recent batches (BentoML's model), by
  least squares, falling back to ``c·n/n̄`` while all recent batches had one size. A model gives the cap in
  one step after a change in speed, where AIMD alone needs many halvings and probes.
- **Cap.** A request may wait for the batch in flight and then for its own, so the cap is the largest batch
  whose predicted compute fits in half the in-replica budget; ``min_batch``/``max_batch`` bound it.
- **Wait.** The next batch forms while one computes; its wait is the full batch's compute scaled by the
  model's utilisation: long waits only under load, where they fill batches for free, and none when idle.
- **Safety (AIMD).** The in-replica p99 of each window of requests is compared with the budget: above it,
  the budget used by the cap and by admission shrinks multiplicatively; well below, it grows back additively.
  This corrects what the model misses (the event loop's own work, other processes on the cores).
- **Admission.** A request whose predicted latency (what is queued ahead of it, in full batches, plus the
  batch in flight) exceeds the budget is refused at once, to be answered 503 with ``Retry-After``.

The in-replica budget is the threshold less a ``headroom`` share left to the hops before the replica.

>>> scheduler = DynamicBatchScheduler(min_batch=1, max_batch=32, latency_threshold=100)
>>> for size in [4, 8] * 8:
...     _ = scheduler.observe_batch(size=size, compute_ms=4.0 + 2.0 * size)
>>> scheduler.batch_size  # 4 + 2n ms fits in half the 80 ms budget up to n = 18
18
>>> scheduler.admit(pending=0), scheduler.admit(pending=500)
(True, False)
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np


@dataclass
class DynamicBatchScheduler:
    """Batch cap and wait for one replica, holding p99 (from the replica's receipt) under ``latency_threshold``.

    Feed it every batch (:meth:`observe_batch`) and every answered request (:meth:`observe_request`); read
    :attr:`batch_size` and :attr:`wait_timeout_s` for Serve's setters; ask :meth:`admit` before queueing.

    >>> scheduler = DynamicBatchScheduler(min_batch=1, max_batch=32, latency_threshold=100)
    >>> scheduler.batch_size, scheduler.wait_timeout_s
    (32, 0.0)

    ``adaptive=False`` keeps ``max_batch`` and ``fixed_wait_ms`` (a fixed ``serve.batch``) and still
    admits by the same estimate.
    """

    min_batch: int = 1
    max_batch: int = 32
    latency_threshold: float = 100.0  # ms, end to end
    adaptive: bool = True
    fixed_wait_ms: float = 10.0
    headroom: float = 0.2  # share of the threshold left to the proxy and the network
    history: int = 32  # batches in the cost model
    window: int = 200  # requests per safety decision
    batch_size: int = field(init=False)
    wait_timeout_s: float = field(init=False)
    safety: float = field(init=False, default=1.0)
    _batches: deque = field(init=False, repr=False)
    _latencies: list = field(init=False, repr=False)
    _busy: deque = field(init=False, repr=False)
    _running: tuple = field(init=False, repr=False, default=(0.0, 0))

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(
                f"need 1 ≤ min_batch ≤ max_batch, got min_batch={self.min_batch}, max_batch={self.max_batch}"
            )
        if self.latency_threshold <= 0:
            raise ValueError(f"latency_threshold must be > 0 ms, got {self.latency_threshold}")
        self.batch_size = self.max_batch
        self.wait_timeout_s = 0.0 if self.adaptive else self.fixed_wait_ms / 1000
        self._batches = deque(maxlen=self.history)
        self._latencies = []
        self._busy = deque()

    @property
    def budget_ms(self) -> float:
        """The in-replica latency budget: the threshold less the headroom, scaled by the AIMD safety."""
        return self.latency_threshold * (1 - self.headroom) * self.safety

    def batch_ms(self, size: int) -> float:
        """Predicted compute time of a batch of ``size`` (0 before any batch was seen)."""
        a, b = self._cost()
        return a * size + b

    def started_batch(self, size: int) -> None:
        """A batch of ``size`` began computing (admission counts its remaining time)."""
        self._running = (time.perf_counter(), size)

    def observe_batch(self, size: int, compute_ms: float) -> bool:
        """Record one computed batch; return True when the cap or the wait changed."""
        now = time.perf_counter()
        self._running = (0.0, 0)
        self._batches.append((size, compute_ms))
        self._busy.append((now, compute_ms))
        while self._busy and now - self._busy[0][0] > 1.0:
            self._busy.popleft()
        return self._retune()

    def observe_request(self, latency_ms: float) -> bool:
        """Record one answered request's latency from the replica's receipt; True when the cap or wait changed."""
        self._latencies.append(latency_ms)
        if len(self._latencies) < self.window:
            return False
        p99 = float(np.percentile(self._latencies, 99))
        self._latencies.clear()
        if not self.adaptive:
            return False
        budget = self.latency_threshold * (1 - self.headroom)
        if p99 > budget * self.safety:
            self.safety = max(0.1, self.safety * 0.7)
        elif p99 < 0.8 * budget * self.safety:
            self.safety = min(1.0, self.safety + 0.05)
        return self._retune()

    def admit(self, pending: int, size: int = 1) -> bool:
        """Whether ``size`` more examples, behind ``pending`` admitted and unanswered (the batch in flight
        included), are answered within the budget."""
        started, running = self._running
        remaining = max(0.0, self.batch_ms(running) - (time.perf_counter() - started) * 1000) if running else 0.0
        batches = math.ceil((max(0, pending - running) + size) / self.batch_size)
        wait = self.wait_timeout_s * 1000
        return remaining + batches * self.batch_ms(self.batch_size) + wait <= self.budget_ms

    def retry_after_s(self, pending: int) -> int:
        """Whole seconds until what is pending now has drained (``Retry-After``); at least 1."""
        drain_ms = math.ceil(pending / self.batch_size) * self.batch_ms(self.batch_size)
        return max(1, math.ceil(drain_ms / 1000))

    def utilisation(self) -> float:
        """Share of the last second the model spent computing."""
        return min(1.0, sum(ms for _, ms in self._busy) / 1000.0)

    def _cost(self) -> tuple[float, float]:
        """``(a, b)`` of batch time ``a·n + b``; both ≥ 0."""
        if not self._batches:
            return 0.0, 0.0
        sizes = np.array([s for s, _ in self._batches], dtype=float)
        times = np.array([t for _, t in self._batches], dtype=float)
        if np.ptp(sizes) == 0:  # one size seen: assume time grows in proportion (cautious when growing)
            return float(times.mean() / sizes.mean()), 0.0
        a, b = np.polyfit(sizes, times, 1)
        if b < 0:  # a negative fixed cost is noise: fit through the origin instead
            return float((sizes @ times) / (sizes @ sizes)), 0.0
        return max(float(a), 0.0), float(b)

    def _retune(self) -> bool:
        if not self.adaptive:
            return False
        previous = (self.batch_size, self.wait_timeout_s)
        a, b = self._cost()
        half = self.budget_ms / 2
        fits = self.max_batch if a == 0 else int((half - b) // a)
        self.batch_size = max(self.min_batch, min(self.max_batch, fits))
        self.wait_timeout_s = round(self.batch_ms(self.batch_size) * self.utilisation() / 1000, 4)
        return (self.batch_size, self.wait_timeout_s) != previous
