"""The latency controller over ``serve.batch``, and the admission check that sheds load past the knee.

``serve.batch`` forms the batches; the controller only moves its two setters (``set_max_batch_size``,
``set_batch_wait_timeout_s``) and answers one question per request: can it be served within the threshold?

How it decides (a cost model for the batch, queueing for admission, AIMD for what neither sees):

- **Cost model.** Batch compute time (timed in the compute thread, so the event loop's delays stay out of
  it) is fitted as ``a·n + b`` over the recent batches (BentoML's model) by least squares weighted to the
  latest, falling back to ``c·n/n̄`` while they had one size (or the fit is noise); two batches in a row far
  off the model restart the fit from them. A model moves the cap in a step or two after a change in speed,
  where AIMD on the cap alone (Clipper) needs many halvings and probes.
- **Cap.** A request may wait for the batch in flight and then for its own, so the cap is the largest batch
  whose predicted compute fits in half the budget; ``min_batch``/``max_batch`` bound it. While the model has
  seen one size only, the cap probes one size more (else a slow model seen one request at a time would stay
  at batches of one).
- **Wait.** A batch forms for as long as it would wait for the model anyway: the rest of the batch in flight
  and the batches already formed behind it (Serve forms the next batch while one computes and reads the
  wait when a batch's first request arrives, so it is kept current). Under load batches fill for free,
  pipelined with compute, and never close half empty to queue behind a full one; a request that finds the
  model idle goes at once.
- **Admission.** A request is refused at once (to be answered 503 with ``Retry-After``) when its predicted
  latency exceeds the budget: the larger of the model's view (full batches queued ahead of it, plus the one
  in flight) and the replica's as a queue (Little's law: pending requests over the rate answered while
  busy), which also counts the request path's own work when that, not the model, is the bottleneck.
- **Safety (AIMD).** Each window's in-replica p99 is compared with the budget: above it, the share of the
  budget that admission may fill shrinks multiplicatively; well below, it grows back additively. The cap
  is left alone: a smaller batch would only lower throughput where the time goes to queueing.

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
    window: int = 100  # requests per safety decision
    batch_size: int = field(init=False)
    wait_timeout_s: float = field(init=False)
    safety: float = field(init=False, default=1.0)
    pending: int = field(init=False, default=0)  # examples admitted and not yet answered
    window_p99_ms: float | None = field(init=False, default=None)  # the last window's in-replica p99
    _batches: deque = field(init=False, repr=False)
    _latencies: list = field(init=False, repr=False)
    _answers: deque = field(init=False, repr=False)  # (time, examples) answered in the last second
    _busy_since: float = field(init=False, repr=False, default=0.0)
    _surprises: int = field(init=False, repr=False, default=0)  # batches in a row far off the cost model
    _running: tuple = field(init=False, repr=False, default=(0.0, 0))
    _cost: tuple = field(init=False, repr=False, default=(0.0, 0.0))  # (a, b) of batch time a·n + b

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
        self._answers = deque()

    @property
    def budget_ms(self) -> float:
        """The in-replica latency budget: the threshold less the headroom."""
        return self.latency_threshold * (1 - self.headroom)

    def batch_ms(self, size: int) -> float:
        """Predicted compute time of a batch of ``size`` (0 before any batch was seen)."""
        a, b = self._cost
        return a * size + b

    # --------------------------------------------------------------------------------- admission
    def full(self, size: int = 1) -> bool:
        """Whether ``size`` more examples would miss the budget (asked before a request's body is even read, so
        that refusing costs little). An idle replica is never full: the estimate has nothing to stand on."""
        return bool(self.pending) and self.estimate_ms(size) > self.budget_ms * self.safety

    def admit(self, size: int = 1, *, shed: bool = True) -> bool:
        """Whether ``size`` more examples are answered within the budget; if so they count as pending.
        ``shed=False`` admits them regardless (work bounded elsewhere: mirrored traffic's in-flight cap)."""
        if shed and self.full(size):
            return False
        if not self.pending:
            self._busy_since = time.perf_counter()
        self.pending += size
        return True

    def estimate_ms(self, size: int = 1) -> float:
        """Predicted in-replica latency of ``size`` more examples, behind what is pending."""
        now = time.perf_counter()
        running = self._running[1]
        batches = math.ceil((max(0, self.pending - running) + size) / self.batch_size)
        model = self.remaining_ms() + batches * self.batch_ms(self.batch_size)
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
        self.window_p99_ms = p99 = float(np.percentile(self._latencies, 99))
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
        """A batch of ``size`` began computing: admission and :meth:`gather_while_computing` count its remaining
        time."""
        self._running = (time.perf_counter(), size)

    def remaining_ms(self) -> float:
        """Predicted time left to the batch in flight (0 when none is)."""
        started, running = self._running
        return max(0.0, self.batch_ms(running) - (time.perf_counter() - started) * 1000) if running else 0.0

    def gather_while_computing(self, computed: int = 0) -> float:
        """Set (and return) the wait for a batch that starts forming now: until the model is free for it, that
        is the rest of the batch in flight and the predicted compute of the pending examples already formed
        into batches behind it (less ``computed``, those computed and not yet answered). Serve reads it when
        a batch's first request arrives, so the app refreshes it every few milliseconds while one computes.

        >>> scheduler = DynamicBatchScheduler(max_batch=8, latency_threshold=100)
        >>> for size in [4, 8] * 8:
        ...     _ = scheduler.observe_batch(size=size, compute_ms=2.0 * size)
        >>> scheduler.admit(8) and scheduler.admit(3)  # a full batch and a part one, formed
        True
        >>> scheduler.gather_while_computing()  # 16 + 6 ms until the model is free for the next
        0.022
        >>> scheduler.gather_while_computing(computed=11)  # all computed: nothing to wait for
        0.0
        """
        if self.adaptive:
            formed = max(0, self.pending - self._running[1] - computed)
            full, rest = divmod(formed, self.batch_size)
            ahead = full * self.batch_ms(self.batch_size) + (self.batch_ms(rest) if rest else 0.0)
            self.wait_timeout_s = round((self.remaining_ms() + ahead) / 1000, 4)
        return self.wait_timeout_s

    def observe_batch(self, size: int, compute_ms: float) -> bool:
        """Record one computed batch; return True when the cap changed."""
        self._running = (0.0, 0)
        predicted = self.batch_ms(size)
        self._surprises = self._surprises + 1 if abs(compute_ms - predicted) > max(0.5 * predicted, 2.0) else 0
        if self._surprises >= 2:  # the model's speed changed (another load on the cores, a slower input):
            recent = list(self._batches)[-1:]  # start the fit again from the batches that showed it
            self._batches.clear()
            self._batches.extend(recent)
            self._surprises = 0
        self._batches.append((size, compute_ms))
        self._cost = self._fit()  # once per batch: every request's estimate reads it
        return self._retune()

    def _fit(self) -> tuple[float, float]:
        """``(a, b)`` of batch time ``a·n + b``, both ≥ 0, by least squares weighted to the recent batches (a
        half-life of 8), so that a change of speed takes over within a few batches."""
        if not self._batches:
            return 0.0, 0.0
        sizes = np.array([s for s, _ in self._batches], dtype=float)
        times = np.array([t for _, t in self._batches], dtype=float)
        weights = 0.5 ** (np.arange(len(sizes))[::-1] / 8)
        if np.ptp(sizes) > 0:
            a, b = np.polyfit(sizes, times, 1, w=np.sqrt(weights))
            if a >= 0 and b >= 0:
                return float(a), float(b)
        # One size seen, or a fit of noise (a negative slope or fixed cost): time in proportion to size,
        # which is cautious when the cap grows.
        return float((weights * sizes) @ times / ((weights * sizes) @ sizes)), 0.0

    def _retune(self) -> bool:
        if not self.adaptive:
            return False
        previous = self.batch_size
        a, b = self._cost
        half = self.budget_ms / 2
        fits = self.max_batch if a == 0 else math.floor((half - b) / a + 1e-6)
        self.batch_size = max(self.min_batch, min(self.max_batch, self._probe(fits)))
        return self.batch_size != previous

    def _probe(self, fits: int) -> int:
        """One size more than the only size seen, where the model fits just that size: with one size the fit is
        in proportion to size, so a slow model first seen one request at a time would be held to batches of one
        and never show its fixed cost. The probe batch stays within the whole budget even if that fit is right.

        >>> scheduler = DynamicBatchScheduler(max_batch=32, latency_threshold=500)  # a 400 ms budget
        >>> _ = scheduler.observe_batch(size=1, compute_ms=108.0)  # 100 + 8n ms, seen at n = 1
        >>> scheduler.batch_size  # 216 ms in proportion: over half the budget, but a batch of 2 is tried
        2
        >>> _ = scheduler.observe_batch(size=2, compute_ms=116.0)
        >>> scheduler.batch_size  # two sizes: the fit a·n + b, and 100 + 8n ≤ 200 up to n = 12
        12
        """
        sizes = {size for size, _ in self._batches}
        if len(sizes) == 1 and fits == (seen := sizes.pop()) and self.batch_ms(seen + 1) <= self.budget_ms:
            return seen + 1
        return fits
