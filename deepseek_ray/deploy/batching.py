"""The latency controller over ``serve.batch``, and the admission check that sheds load past the knee.

``serve.batch`` forms the batches; the controller only moves its two setters (``set_max_batch_size``,
``set_batch_wait_timeout_s``) and answers one question per request: can it be served within the threshold?

How it decides (a cost model for the batch, queueing for admission, AIMD for what neither sees):

- **Cost model.** Batch compute time (timed in the compute thread, so the event loop's delays stay out of
  it) is fitted as ``a·n + b`` over the recent batches (BentoML's model), by least squares, falling back to
  ``c·n/n̄`` while all recent batches had one size. A model moves the cap in one step after a change in
  speed, where AIMD on the cap alone (Clipper) needs many halvings and probes.
- **Cap.** A request may wait for the batch in flight and then for its own, so the cap is the largest batch
  whose predicted compute fits in half the in-replica budget; ``min_batch``/``max_batch`` bound it.
- **Wait.** The next batch forms while one computes; its wait is the full batch's compute scaled by the
  model's utilisation: long waits only under load, where they fill batches for free, and none when idle.
- **Admission.** A request is refused at once (to be answered 503 with ``Retry-After``) when its predicted
  latency exceeds the budget: the larger of the model's view (full batches queued ahead of it, plus the one
  in flight) and the replica's as a queue (Little's law: pending requests over the rate answered while
  busy), which also counts the request path's own work when that, not the model, is the bottleneck.
- **Safety (AIMD).** Each window's in-replica p99 is compared with the budget: above it, the share of the
  budget admission may fill shrinks multiplicatively; well below, it grows back additively.

The in-replica budget is the threshold less a ``headroom`` share left to the hops before the replica.

>>> scheduler = DynamicBatchScheduler(min_batch=1, max_batch=32, latency_threshold=100)
>>> for size in [4, 8] * 8:
...     _ = scheduler.observe_batch(size=size, compute_ms=4.0 + 2.0 * size)
>>> scheduler.batch_size  # 4 + 2n ms fits in half the 80 ms budget up to n = 18
18
>>> scheduler.admit(1), scheduler.admit(500)
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

    Ask :meth:`admit` before queueing a request and call :meth:`answered` once it is answered, and
    :meth:`observe_latency` with its latency; feed it every batch (:meth:`started_batch`,
    :meth:`observe_batch`); read :attr:`batch_size` and :attr:`wait_timeout_s` for Serve's setters.

    >>> scheduler = DynamicBatchScheduler(min_batch=1, max_batch=32, latency_threshold=100)
    >>> scheduler.batch_size, scheduler.wait_timeout_s
    (32, 0.0)

    ``adaptive=False`` keeps ``max_batch`` and ``fixed_wait_ms`` (a fixed ``serve.batch``) and admits by
    the same estimate.
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
    pending: int = field(init=False, default=0)  # examples admitted and not yet answered
    _batches: deque = field(init=False, repr=False)
    _latencies: list = field(init=False, repr=False)
    _busy: deque = field(init=False, repr=False)  # (end, compute ms) of the last second's batches
    _answers: deque = field(init=False, repr=False)  # (time, examples) answered in the last second
    _busy_since: float = field(init=False, repr=False, default=0.0)
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
        self._answers = deque()

    @property
    def budget_ms(self) -> float:
        """The in-replica latency budget: the threshold less the headroom."""
        return self.latency_threshold * (1 - self.headroom)

    def batch_ms(self, size: int) -> float:
        """Predicted compute time of a batch of ``size`` (0 before any batch was seen)."""
        a, b = self._cost()
        return a * size + b

    # --------------------------------------------------------------------------------- admission
    def admit(self, size: int = 1) -> bool:
        """Whether ``size`` more examples are answered within the budget; if so they count as pending."""
        if self.estimate_ms(size) > self.budget_ms * self.safety and self.pending:
            return False  # an idle replica takes anything: the estimate has nothing to stand on
        if not self.pending:
            self._busy_since = time.perf_counter()
        self.pending += size
        return True

    def estimate_ms(self, size: int = 1) -> float:
        """Predicted in-replica latency of ``size`` more examples, behind what is pending."""
        now = time.perf_counter()
        started, running = self._running
        remaining = max(0.0, self.batch_ms(running) - (now - started) * 1000) if running else 0.0
        batches = math.ceil((max(0, self.pending - running) + size) / self.batch_size)
        model = remaining + batches * self.batch_ms(self.batch_size) + self.wait_timeout_s * 1000
        busy_s = min(1.0, now - self._busy_since) if self.pending else 0.0
        if busy_s < 0.25:  # too short a busy spell to measure the rate it is answered at
            return model
        answered = sum(count for at, count in self._answers if at >= now - busy_s)
        queue = (self.pending + size) / max(answered, 1) * busy_s * 1000
        return max(model, queue)

    def answered(self, size: int) -> None:
        """``size`` admitted examples were answered (or failed)."""
        now = time.perf_counter()
        self.pending -= size
        self._answers.append((now, size))
        while now - self._answers[0][0] > 1.0:
            self._answers.popleft()

    def observe_latency(self, latency_ms: float) -> None:
        """One successful request's latency from the replica's receipt: the AIMD safety's input."""
        self._latencies.append(latency_ms)
        if len(self._latencies) < self.window:
            return
        p99 = float(np.percentile(self._latencies, 99))
        self._latencies.clear()
        if p99 > self.budget_ms:
            self.safety = max(0.2, self.safety * 0.7)
        elif p99 < 0.8 * self.budget_ms:
            self.safety = min(1.0, self.safety + 0.05)

    def retry_after_s(self) -> int:
        """Whole seconds until what is pending now has drained (``Retry-After``); at least 1."""
        return max(1, math.ceil(self.estimate_ms(0) / 1000))

    # ------------------------------------------------------------------------------------ batches
    def started_batch(self, size: int) -> None:
        """A batch of ``size`` began computing (admission counts its remaining time)."""
        self._running = (time.perf_counter(), size)

    def observe_batch(self, size: int, compute_ms: float) -> bool:
        """Record one computed batch; return True when the cap or the wait changed."""
        now = time.perf_counter()
        self._running = (0.0, 0)
        self._batches.append((size, compute_ms))
        self._busy.append((now, compute_ms))
        while now - self._busy[0][0] > 1.0:
            self._busy.popleft()
        return self._retune()

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
