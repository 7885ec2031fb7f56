"""Shadow traffic, the live replica's side: a share of the requests is handed to the candidate, never waited for.

The candidate is its own Serve app (``<name>-shadow``), so starting, changing or stopping it never restarts the
live replicas: each live replica asks it for the shadow session's settings every :data:`SETTINGS_REFRESH_S`
(fraction, in-flight bound, the session's log folder) and mirrors accordingly. A request is chosen by a hash of
its id (the same id is always chosen or not, whichever replica serves it). The live answer is sent first; the
mirrored requests of each :data:`MIRROR_WINDOW_S` go to the candidate in one call, a task of its own, with at
most ``max_in_flight`` examples out at once: beyond that, when the candidate does not answer within
``timeout_s`` (or its own request timeout), or when Serve's queue before it is full, the examples are dropped and
counted (the candidate does not shed them by its latency target: the in-flight bound already limits them).
Both answers, the drops and the candidate's errors go to the replica's
:class:`~deepseek_ray.deploy.prediction_log.PredictionLog` by request id; ``/feedback`` adds the labels there.

>>> chosen('3f2a-request', 1.0), chosen('3f2a-request', 0.0)
(True, False)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from ray.serve.exceptions import BackPressureError

from .prediction_log import DURABLE_WITHIN_MS, PredictionLog, request_ids

#: how often a live replica reads the shadow session's settings from the candidate's app
SETTINGS_REFRESH_S = 1.0
#: a live replica sends what it mirrored in this window to the candidate in one call
MIRROR_WINDOW_S = 0.1
#: ... or as soon as this many examples wait
MIRROR_BATCH = 32
logger = logging.getLogger(__name__)


def shadow_app_name(name: str) -> str:
    """The Serve app that holds ``name``'s candidate.

    >>> shadow_app_name('mnist')
    'mnist-shadow'
    """
    return f"{name}-shadow"


def chosen(request_id: str, fraction: float) -> bool:
    """Whether ``request_id`` falls in the mirrored ``fraction`` (a hash: stable across replicas and retries)."""
    return zlib.crc32(request_id.encode()) < fraction * 2**32


def example_ids(request_id: str, count: int) -> list[str]:
    """The log's ids for a request's examples: the request id, or ``<id>/<i>`` when it carried several.

    >>> example_ids('r1', 1), example_ids('r1', 2)
    (['r1'], ['r1/0', 'r1/1'])
    """
    return [request_id] if count == 1 else [f"{request_id}/{i}" for i in range(count)]


class Mirror:
    """One live replica's mirroring: the session's settings, the candidate's handle, the log, the counts.

    >>> Mirror('mnist', 'replica-1').app
    'mnist-shadow'
    """

    def __init__(self, name: str, writer: str):
        self.app = shadow_app_name(name)
        self.writer = writer
        self.settings: dict[str, Any] | None = None
        self.log: PredictionLog | None = None
        self.handle: Any = None
        self.in_flight = 0
        self.counts = {"mirrored": 0, "answered": 0, "dropped": 0, "candidate_errors": 0}
        self.known: set[str] = set()  # ids this replica logged (the rest are looked up in the session's folder)
        self._tasks: set[asyncio.Task] = set()
        self._pending: list[tuple[list[str], Any]] = []  # this window's mirrored requests: (ids, inputs)
        self._sender: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------------------- settings
    async def keep_settings(self) -> None:
        """Follow the shadow session (started, changed, stopped) for the replica's life."""
        while True:
            await self.refresh()
            await asyncio.sleep(SETTINGS_REFRESH_S)

    async def refresh(self) -> None:
        from ray import serve

        try:
            if self.handle is None:
                from ..ray_compat import on_this_loop

                self.handle = on_this_loop(await asyncio.to_thread(serve.get_app_handle, self.app))
            settings = await asyncio.wait_for(self.handle.shadow_settings.remote(), timeout=5.0)
        except Exception:  # no shadow app (yet, or any more), or it is being replaced
            self.handle, settings = None, None
        self._apply(settings)

    def _apply(self, settings: dict[str, Any] | None) -> None:
        folder = (settings or {}).get("log_dir")
        if self.log is not None and (folder is None or Path(folder) != self.log.folder):
            self.log.close()
            self.log, self.known = None, set()
        if folder is not None and self.log is None:
            self.log = PredictionLog(folder, self.writer)
        self.settings = settings

    # ---------------------------------------------------------------------------------- mirror
    def offer(self, request_id: str, inputs: Any, rows: list[np.ndarray]) -> None:
        """After the live answer (``rows``, one per example): hand the request's ``inputs`` to the candidate if
        the request is chosen and there is room."""
        settings, log = self.settings, self.log
        if settings is None or log is None or not chosen(request_id, float(settings["fraction"])):
            return
        ids = example_ids(request_id, len(rows))
        if self.in_flight + len(ids) > int(settings["max_in_flight"]):
            for example_id in ids:
                log.append(example_id, "dropped")
            self.counts["dropped"] += len(ids)
            return
        for example_id, row in zip(ids, rows, strict=True):
            log.append(example_id, "live", row)
        self.known.update(ids)
        self.in_flight += len(ids)
        self.counts["mirrored"] += len(ids)
        self._pending.append((ids, inputs))
        if sum(len(i) for i, _ in self._pending) >= MIRROR_BATCH:
            if self._sender is not None:
                self._sender.cancel()
            self._send(settings, log)
        elif self._sender is None:  # the first request of a window: the window's call goes out when it ends
            self._sender = asyncio.get_running_loop().call_later(MIRROR_WINDOW_S, self._send, settings, log)

    def _send(self, settings: dict[str, Any], log: PredictionLog) -> None:
        """One handle call for the window's mirrored requests (a call costs the live replica far more than an
        example does)."""
        batch, self._pending, self._sender = self._pending, [], None
        task = asyncio.create_task(self._ask(batch, float(settings["timeout_s"]), log))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, batch: list[tuple[list[str], Any]], timeout_s: float, log: PredictionLog) -> None:
        count = sum(len(ids) for ids, _ in batch)
        try:
            answers = await asyncio.wait_for(self.handle.mirror.remote([inputs for _, inputs in batch]), timeout_s)
        except (TimeoutError, BackPressureError):  # the candidate lags: Serve's queue before it is full
            answers = ["dropped"] * len(batch)
        except Exception as err:  # the candidate's failure is counted, never the live answer's
            logger.debug("the candidate failed: %s", err)
            answers = [None] * len(batch)
        finally:
            self.in_flight -= count
        for (ids, _), outputs in zip(batch, answers, strict=True):
            if isinstance(outputs, np.ndarray) and len(outputs) == len(ids):
                for example_id, row in zip(ids, outputs, strict=True):
                    log.append(example_id, "candidate", row)
                self.counts["answered"] += len(ids)
            else:
                kind = "dropped" if isinstance(outputs, str) else "candidate_error"
                for example_id in ids:
                    log.append(example_id, kind)
                self.counts["dropped" if kind == "dropped" else "candidate_errors"] += len(ids)

    # -------------------------------------------------------------------------------- feedback
    async def unknown(self, ids: list[str]) -> list[str]:
        """Of ``ids``, those the session's log does not hold, after waiting out the log's durability bound."""
        missing = [i for i in ids if i not in self.known]
        if not missing or self.log is None:
            return missing
        for attempt in range(2):  # another replica's record may still be on its way to disk
            on_disk = await asyncio.to_thread(request_ids, self.log.folder)
            missing = [i for i in missing if i not in on_disk]
            if not missing or attempt:
                return missing
            await asyncio.sleep(DURABLE_WITHIN_MS / 1000)
        return missing

    def label(self, ids: list[str], labels: list[float]) -> None:
        assert self.log is not None
        for example_id, label in zip(ids, labels, strict=True):
            self.log.append(example_id, "label", label=label)

    def close(self) -> None:
        if self._sender is not None:
            self._sender.cancel()
        for task in self._tasks:
            task.cancel()
        if self.log is not None:
            with contextlib.suppress(Exception):
                self.log.close()
