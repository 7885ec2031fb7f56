"""Serving: the Ray Serve app over an exported model, with latency-targeted adaptive batching.

>>> from deepseek_ray.deploy import DynamicBatchScheduler
>>> DynamicBatchScheduler(min_batch=1, max_batch=32, latency_threshold=100).batch_size
32
"""

from .batching import DynamicBatchScheduler

__all__ = ["DynamicBatchScheduler", "build_app", "deploy", "promote", "shadow_status", "start_shadow", "stop_shadow"]


def __getattr__(name: str):
    # The Serve app imports Ray Serve; load it only when asked for.
    if name in ("build_app", "deploy", "ModelServer"):
        from . import app

        return getattr(app, name)
    if name in ("promote", "shadow_status", "start_shadow", "stop_shadow"):
        from . import shadow

        return getattr(shadow, name)
    raise AttributeError(name)
