"""The engine's one source of time for waiting: backoff, Retry-After pauses and the
requests/tokens-per-minute buckets all read ``now()`` and wait with ``sleep()`` here.

Production uses :class:`Clock` (the monotonic clock and ``asyncio.sleep``); a test passes
:class:`evoforge.testing.fake_clock.FakeClock`, which records each wait and skips it, so
a retry schedule of minutes is checked exactly, in no real time.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """Real time: ``now()`` is ``time.monotonic()``, ``sleep()`` is ``asyncio.sleep()``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
