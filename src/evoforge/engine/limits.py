"""Flow control: token buckets for requests and tokens per minute, and a
concurrency limit that halves on a 429 storm and climbs back (AIMD, as TCP does).
"""

from __future__ import annotations

import asyncio
from collections import deque

from evoforge.engine.clock import Clock


class TokenBucket:
    """``rate_per_minute`` units per minute, with one second's worth of burst.

    A request larger than the bucket waits for a full bucket instead of forever.
    """

    def __init__(self, rate_per_minute: float, *, clock: Clock | None = None) -> None:
        if rate_per_minute <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate_per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self._tokens = self.capacity
        self._clock = clock or Clock()
        self._updated = self._clock.now()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock.now()
        self._tokens = min(self.capacity, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, amount: float = 1.0) -> None:
        amount = min(amount, self.capacity)
        async with self._lock:  # first come, first served
            while True:
                self._refill()
                if self._tokens >= amount:
                    self._tokens -= amount
                    return
                await self._clock.sleep((amount - self._tokens) / self.rate)

    def adjust(self, delta: float) -> None:
        """Correct an estimate after the fact (positive ``delta`` takes more)."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens - delta)


class AdaptiveConcurrency:
    """An async semaphore whose limit halves on a rate-limit signal and recovers.

    - ``on_rate_limit(retry_after)``: halve the limit (at most once per
      ``cooldown`` seconds, so one storm counts once) and, if the server named a
      wait, hold every new request until it has passed.
    - ``on_success()``: after ``limit`` successes in a row, raise the limit by one,
      up to ``maximum``.
    """

    def __init__(self, maximum: int, *, cooldown: float = 1.0, clock: Clock | None = None) -> None:
        if maximum < 1:
            raise ValueError("concurrency must be at least 1")
        # Each request in flight holds a socket: never more than the open-file limit allows.
        self.requested = maximum
        maximum = min(maximum, open_file_budget() or maximum)
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.cooldown = cooldown
        self.reductions = 0
        self._clock = clock or Clock()
        self._last_cut = -float("inf")
        self._paused_until = 0.0
        self._streak = 0
        # FIFO hand-off: a released slot goes to the longest waiter, never to a newcomer,
        # so requests start in the order they asked (at concurrency 1, input order).
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()

    async def acquire(self) -> None:
        while (pause := self._paused_until - self._clock.now()) > 0:
            await self._clock.sleep(pause)
        if self.in_flight < self.limit and not self._waiters:
            self.in_flight += 1
            return
        slot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(slot)
        try:
            await slot  # the releaser counted this request in ``in_flight``
        except asyncio.CancelledError:
            if slot.done() and not slot.cancelled():  # handed a slot, then cancelled
                self.in_flight -= 1
                self._hand_off()
            else:
                self._waiters.remove(slot)
            raise

    async def release(self) -> None:
        self.in_flight -= 1
        self._hand_off()

    def _hand_off(self) -> None:
        """Give free slots to the longest waiters (the limit may have grown)."""
        while self._waiters and self.in_flight < self.limit:
            slot = self._waiters.popleft()
            if not slot.done():
                self.in_flight += 1
                slot.set_result(None)

    def on_success(self) -> None:
        self._streak += 1
        if self.limit < self.maximum and self._streak >= self.limit:
            self.limit += 1
            self._streak = 0

    def on_rate_limit(self, retry_after: float | None = None) -> None:
        now = self._clock.now()
        self._streak = 0
        if retry_after:
            self._paused_until = max(self._paused_until, now + retry_after)
        if now - self._last_cut >= self.cooldown:
            self._last_cut = now
            self.limit = max(1, self.limit // 2)
            self.reductions += 1


# Files the process keeps for itself besides sockets: journal and cache (db, WAL,
# shared memory), inputs, outputs, imports, the event loop.
RESERVED_FILES = 64


def open_file_budget() -> int | None:
    """How many sockets may be open at once under ``ulimit -n``; None when unlimited
    or unknown (not POSIX)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    return max(1, soft - RESERVED_FILES)
