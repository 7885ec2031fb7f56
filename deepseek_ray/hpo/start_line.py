"""A start line for a search's first trial actors, in a module that imports nothing but Ray (its actor
starts while Tune sets up, and must be up before the trial actors arrive)."""

from __future__ import annotations

import asyncio
import contextlib

import ray

START_TIMEOUT_S = 10.0  # the longest a first trial actor waits for its peers


@ray.remote(num_cpus=0)
class StartLine:
    """Holds the first trial actors of a search until ``size`` of them have started (or ``timeout`` passes).

    With ``reuse_actors``, a trial that ends before the second actor is up hands its actor the next trial,
    and short trials can all collapse onto one actor (ray-project/ray#36020): the slots start together.
    """

    def __init__(self, size: int):
        self.size, self.arrived, self.full = size, 0, asyncio.Event()

    async def arrive(self, timeout: float = START_TIMEOUT_S) -> int:
        self.arrived += 1
        if self.arrived >= self.size:
            self.full.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.full.wait(), timeout)
        return self.arrived
