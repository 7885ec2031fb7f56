"""Latency-targeted adaptive batching on top of ``serve.batch``.

``serve.batch`` closes a batch when it is full or when the wait timeout expires, and lets both be
changed at run time (``set_max_batch_size`` / ``set_batch_wait_timeout_s``). The scheduler below
watches how long each batch takes and keeps ``wait + compute`` inside the latency threshold:
it halves the batch cap when a batch runs over budget and grows it again while there is room.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class DynamicBatchScheduler:
    """Keep batched requests under ``latency_threshold`` milliseconds.

    >>> scheduler = DynamicBatchScheduler(min_batch=1, max_batch=32, latency_threshold=100)
    >>> scheduler.batch_size, round(scheduler.wait_timeout_s, 4)
    (32, 0.01)
    >>> [scheduler.observe(batch_size=32, compute_ms=180.0) for _ in range(8)][-1]
    True
    >>> scheduler.batch_size < 32
    True

    ``min_batch`` is the floor of the adaptive cap (Serve has no minimum batch size: a lone request
    is never held back beyond the wait timeout).
    """

    min_batch: int = 1
    max_batch: int = 32
    latency_threshold: float = 100.0  # ms
    wait_fraction: float = 0.1  # share of the budget a request may wait for companions
    window: int = 8  # batches per decision
    batch_size: int = field(init=False)
    _recent: deque = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.max_batch:
            raise ValueError(
                f"need 1 ≤ min_batch ≤ max_batch, got min_batch={self.min_batch}, max_batch={self.max_batch}"
            )
        if self.latency_threshold <= 0:
            raise ValueError(f"latency_threshold must be > 0 ms, got {self.latency_threshold}")
        self.batch_size = self.max_batch
        self._recent = deque(maxlen=self.window)

    @property
    def wait_timeout_s(self) -> float:
        """How long the first request of a batch waits for others: a fixed share of the budget."""
        return self.latency_threshold * self.wait_fraction / 1000.0

    def observe(self, batch_size: int, compute_ms: float) -> bool:
        """Record one batch; return True when the batch cap changed."""
        self._recent.append((batch_size, compute_ms))
        if len(self._recent) < self.window:
            return False
        budget = self.latency_threshold * (1 - self.wait_fraction)
        worst = max(ms for _, ms in self._recent)
        largest = max(size for size, _ in self._recent)
        previous = self.batch_size
        if worst > budget:
            self.batch_size = max(self.min_batch, self.batch_size // 2)
        elif worst < budget / 2 and largest >= self.batch_size:
            self.batch_size = min(self.max_batch, self.batch_size * 2)
        if self.batch_size != previous:
            self._recent.clear()
            return True
        return False
