"""The replica's own metrics, on Ray's metrics endpoint beside Serve's ``ray_serve_*`` ones.

Ray prefixes ``ray_`` on export and Serve adds the ``application``, ``deployment`` and ``replica`` tags,
so Prometheus sees e.g. ``ray_deepseek_ray_requests_total{route="/mnist",status="200",...}``.
README ("Metrics") lists them; the cluster dashboards read them.

>>> sorted(METRIC_NAMES)[:2]
['deepseek_ray_batch_cap', 'deepseek_ray_batch_wait_ms']
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

#: what each metric is, by the name it is registered under (Ray's endpoint shows it with a ``ray_`` prefix)
METRIC_NAMES = {
    "deepseek_ray_requests_total": "requests answered, by route, face (simple or v2) and HTTP status",
    "deepseek_ray_request_latency_ms": "latency from the replica's receipt to the reply, by route",
    "deepseek_ray_within_slo_total": "requests answered 2xx within the latency threshold (its rate is goodput)",
    "deepseek_ray_shed_total": "requests refused with 503 because they could not be answered within the threshold",
    "deepseek_ray_slo_attainment": "share of the last window's 2xx answers within the threshold",
    "deepseek_ray_batch_cap": "the latency controller's current max_batch_size",
    "deepseek_ray_batch_wait_ms": "the latency controller's current batch_wait_timeout_s, in ms",
    "deepseek_ray_latency_budget_ms": "the in-replica budget the controller holds p99 to (after its AIMD safety)",
}
#: the shadow session's comparison, from its controller (tag ``app``; ``model``: live or candidate;
#: ``bound``: lower, point or upper)
SHADOW_METRIC_NAMES = {
    "deepseek_ray_shadow_mirrored": "examples handed to the candidate in this session",
    "deepseek_ray_shadow_answered": "mirrored examples the candidate answered",
    "deepseek_ray_shadow_dropped": "examples not mirrored because the candidate lagged (in-flight bound, timeout)",
    "deepseek_ray_shadow_candidate_errors": "mirrored examples the candidate failed on",
    "deepseek_ray_shadow_labelled": "mirrored examples with a label from /feedback",
    "deepseek_ray_shadow_agreement": "share of labelled pairs where both models gave the same answer",
    "deepseek_ray_shadow_metric": "each model's metric on the labelled pairs (tag model)",
    "deepseek_ray_shadow_delta": "candidate minus live metric and its anytime-valid interval (tag bound)",
    "deepseek_ray_shadow_promote": "1 when the decision is promote, -1 keep, 0 need more data",
}

LATENCY_BOUNDARIES_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 35.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0, 1e3, 2e3, 5e3]


class ServingMetrics:
    """The metrics of one replica; ``record`` is called once per answered request.

    >>> metrics = ServingMetrics(route='/mnist', threshold_ms=100)
    >>> metrics.record('http', 200, latency_ms=12.5)
    """

    def __init__(self, route: str, threshold_ms: float, window: int = 200):
        from ray.serve import metrics

        self.route = route
        self.threshold_ms = threshold_ms
        self.window = window
        self._answered = 0
        self._within = 0
        self._requests = metrics.Counter(
            "deepseek_ray_requests_total",
            METRIC_NAMES["deepseek_ray_requests_total"],
            tag_keys=("route", "protocol", "status"),  # type: ignore[arg-type]  # Ray hints a 1-tuple
        )
        self._latency = metrics.Histogram(
            "deepseek_ray_request_latency_ms",
            METRIC_NAMES["deepseek_ray_request_latency_ms"],
            boundaries=LATENCY_BOUNDARIES_MS,
            tag_keys=("route",),
        )
        self._good = metrics.Counter("deepseek_ray_within_slo_total", METRIC_NAMES["deepseek_ray_within_slo_total"])
        self._shed = metrics.Counter("deepseek_ray_shed_total", METRIC_NAMES["deepseek_ray_shed_total"])
        self._attainment = metrics.Gauge("deepseek_ray_slo_attainment", METRIC_NAMES["deepseek_ray_slo_attainment"])
        self._cap = metrics.Gauge("deepseek_ray_batch_cap", METRIC_NAMES["deepseek_ray_batch_cap"])
        self._wait = metrics.Gauge("deepseek_ray_batch_wait_ms", METRIC_NAMES["deepseek_ray_batch_wait_ms"])
        self._budget = metrics.Gauge("deepseek_ray_latency_budget_ms", METRIC_NAMES["deepseek_ray_latency_budget_ms"])
        self._tags = {"route": route}

    def record(self, protocol: str, status: int, latency_ms: float) -> None:
        """One answered request."""
        self._requests.inc(tags={"route": self.route, "protocol": protocol, "status": str(status)})
        if status == 503:
            self._shed.inc()
            return
        self._latency.observe(latency_ms, tags=self._tags)
        if 200 <= status < 300:
            within = latency_ms <= self.threshold_ms
            self._answered += 1
            self._within += within
            if within:
                self._good.inc()
            if self._answered >= self.window:
                self._attainment.set(self._within / self._answered)
                self._answered = self._within = 0

    def controller(self, batch_cap: int, wait_s: float, budget_ms: float) -> None:
        """The controller's state now (sampled each second), and the SLO attainment of the window so far."""
        if self._answered:
            self._attainment.set(self._within / self._answered)
        self._cap.set(batch_cap)
        self._wait.set(wait_s * 1000)
        self._budget.set(budget_ms)


class ShadowMetrics:
    """A shadow session's comparison as Ray gauges; ``report`` takes :func:`~deepseek_ray.deploy.shadow.shadow_status`.

    >>> ShadowMetrics('mnist').tags
    {'app': 'mnist'}
    """

    COUNTS = ("mirrored", "answered", "dropped", "candidate_errors", "labelled")
    VERDICTS = {"promote": 1.0, "keep": -1.0, "need_more_data": 0.0}

    def __init__(self, app: str):
        from ray.util.metrics import Gauge

        def gauge(name: str, *tags: str) -> Gauge:
            return Gauge(name, SHADOW_METRIC_NAMES[name], tag_keys=("app", *tags))

        self.tags = {"app": app}
        self._counts = {key: gauge(f"deepseek_ray_shadow_{key}") for key in self.COUNTS}
        self._agreement = gauge("deepseek_ray_shadow_agreement")
        self._metric = gauge("deepseek_ray_shadow_metric", "model")
        self._delta = gauge("deepseek_ray_shadow_delta", "bound")
        self._verdict = gauge("deepseek_ray_shadow_promote")

    def report(self, status: dict[str, Any]) -> None:
        for key, gauge in self._counts.items():
            gauge.set(status[key], tags=self.tags)
        decision = status["decision"]
        self._verdict.set(self.VERDICTS[decision["verdict"]], tags=self.tags)
        if decision.get("agreement") is not None:
            self._agreement.set(decision["agreement"], tags=self.tags)
        for model in ("live", "candidate"):
            if decision.get(f"{model}_metric") is not None:
                self._metric.set(decision[f"{model}_metric"], tags={**self.tags, "model": model})
        for bound, key in (("lower", "lower"), ("point", "delta"), ("upper", "upper")):
            value = decision.get(key)
            if value is not None and np.isfinite(value):
                self._delta.set(value, tags={**self.tags, "bound": bound})


def since_ms(start: float) -> float:
    """Milliseconds since ``start`` (a :func:`time.perf_counter` reading).

    >>> since_ms(time.perf_counter()) < 1000
    True
    """
    return (time.perf_counter() - start) * 1000


__all__ = [
    "LATENCY_BOUNDARIES_MS",
    "METRIC_NAMES",
    "SHADOW_METRIC_NAMES",
    "ServingMetrics",
    "ShadowMetrics",
    "since_ms",
]
