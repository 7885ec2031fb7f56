"""The latency controller on its own (no Ray): the cap from the cost model, admission, and the AIMD safety."""

from __future__ import annotations

from deepseek_ray.deploy.batching import DynamicBatchScheduler


def _learn(scheduler: DynamicBatchScheduler, per_batch_ms: float, per_example_ms: float) -> None:
    for size in [4, 8, 16] * 6:
        scheduler.observe_batch(size=size, compute_ms=per_batch_ms + per_example_ms * size)


def test_the_cap_is_the_largest_batch_whose_compute_fits_half_the_budget():
    scheduler = DynamicBatchScheduler(min_batch=2, max_batch=32, latency_threshold=250)  # a 200 ms budget
    _learn(scheduler, 20, 5)
    assert scheduler.batch_size == 16  # 20 + 5·16 = 100 ms
    _learn(scheduler, 60, 20)
    assert scheduler.batch_size == 2  # nothing fits: min_batch bounds it
    _learn(scheduler, 0.5, 0.1)
    assert scheduler.batch_size == 32


def test_a_slow_model_first_seen_one_request_at_a_time_is_not_held_to_batches_of_one():
    """Seen only at n = 1, a time in proportion to size fits one example in half the budget; without the probe
    the cap stays 1 and the replica answers ≈ 9 a second where batches of 12 answer ≈ 60 (bench_overload.py)."""
    scheduler = DynamicBatchScheduler(max_batch=32, latency_threshold=500)  # a 400 ms budget
    for _ in range(5):  # light traffic: every batch holds what the cap allows, one at first
        scheduler.observe_batch(size=scheduler.batch_size, compute_ms=100 + 8 * scheduler.batch_size)
    assert scheduler.batch_size == 12  # 100 + 8·12 = 196 ms ≤ 200
    slow = DynamicBatchScheduler(max_batch=32, latency_threshold=500)  # a model truly in proportion to size
    for _ in range(5):
        slow.observe_batch(size=slow.batch_size, compute_ms=150 * slow.batch_size)
    assert slow.batch_size == 1  # one probe of 2 (300 ms ≤ the budget) showed it, and the cap went back


def test_admission_refuses_what_would_miss_the_budget_and_frees_what_is_answered():
    scheduler = DynamicBatchScheduler(max_batch=32, latency_threshold=260)  # a 208 ms budget
    _learn(scheduler, 20, 5)  # cap 16 in 100 ms
    admitted = [scheduler.admit(1) for _ in range(40)]
    assert all(admitted[:17]) and not any(admitted[33:])  # a batch ahead and its own fit; a third does not
    assert scheduler.full() and scheduler.retry_after_s() >= 1
    scheduler.answered(sum(admitted))
    assert scheduler.pending == 0 and not scheduler.full() and scheduler.admit(1)


def test_a_window_over_the_budget_cuts_the_safety_and_good_ones_restore_it():
    scheduler = DynamicBatchScheduler(latency_threshold=100, window=10)
    for _ in range(10):
        scheduler.observe_latency(95.0)
    assert scheduler.safety < 1.0 and scheduler.window_p99_ms == 95.0
    cut = scheduler.safety
    for _ in range(30):
        scheduler.observe_latency(10.0)
    assert scheduler.safety > cut
