"""Virtual time for the engine's waits (see :mod:`evoforge.engine.clock`).

Pass ``FakeClock()`` as ``LLMClient(model, clock=...)``; after a request that was retried
three times, ``clock.sleeps`` holds the three backoff waits (say ``[0.61, 1.48, 3.9]``),
taken in no real time.
"""

from __future__ import annotations

import asyncio

from evoforge.engine.clock import Clock


class FakeClock(Clock):
    """``sleep(s)`` appends ``s`` to :attr:`sleeps` and moves :attr:`time` forward by ``s``
    at once, then yields to the event loop; nothing else moves the time.

    Sleeps add up one after another, so the timeline is exact for one request at a time;
    two tasks sleeping together advance the time by the sum, not the longer of the two.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.time = start
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)
