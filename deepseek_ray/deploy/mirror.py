"""Shadow traffic, the live replica's side: a share of the requests is handed to the candidate, never waited for.

The candidate is its own Serve app (``<name>-shadow``), so starting, changing or stopping it never restarts the
live replicas: each live replica asks it for the shadow session's settings every :data:`SETTINGS_REFRESH_S`
(fraction, in-flight bound, the session's log folder) and mirrors accordingly. A request is chosen by a hash of
its id (the same id is always chosen or not, whichever replica serves it). The live answer is sent first; the
candidate's call runs as a task of its own with at most ``max_in_flight`` examples out at once: beyond that, or
when the candidate does not answer within ``timeout_s``, the example is dropped and counted. Both answers, the
drops and the candidate's errors go to the replica's :class:`~deepseek_ray.deploy.prediction_log.PredictionLog`
by request id; ``/feedback`` adds the labels there.

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

from .prediction_log import DURABLE_WITHIN_MS, PredictionLog, request_ids

#: how often a live replica reads the shadow session's settings from the candidate's app
SETTINGS_REFRESH_S = 1.0
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
    """One live replica's mirroring: the session's settings, the candidate's handle, the log, the counts."""

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
                self.handle = await asyncio.to_thread(serve.get_app_handle, self.app)
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
    def offer(self, request_id: str, examples: np.ndarray, rows: list[np.ndarray]) -> None:
        """After the live answer: hand ``examples`` to the candidate if the request is chosen and there is room."""
        settings, log = self.settings, self.log
        if settings is None or log is None or not chosen(request_id, float(settings["fraction"])):
            return
        ids = example_ids(request_id, len(examples))
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
        task = asyncio.create_task(self._ask(ids, examples, float(settings["timeout_s"]), log))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _ask(self, ids: list[str], examples: np.ndarray, timeout_s: float, log: PredictionLog) -> None:
        try:
            outputs = await asyncio.wait_for(self.handle.mirror.remote(examples), timeout_s)
        except TimeoutError:
            for example_id in ids:
                log.append(example_id, "dropped")
            self.counts["dropped"] += len(ids)
        except Exception as err:  # the candidate's failure is counted, never the live answer's
            for example_id in ids:
                log.append(example_id, "candidate_error")
            self.counts["candidate_errors"] += len(ids)
            logger.debug("the candidate failed on %s: %s", ids[0], err)
        else:
            for example_id, row in zip(ids, outputs, strict=True):
                log.append(example_id, "candidate", row)
            self.counts["answered"] += len(ids)
        finally:
            self.in_flight -= len(ids)

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
        for task in self._tasks:
            task.cancel()
        if self.log is not None:
            with contextlib.suppress(Exception):
                self.log.close()
