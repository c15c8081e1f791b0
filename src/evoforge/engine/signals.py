"""SIGINT / SIGTERM during a run: stop starting seeds, let the ones in flight finish.

The first signal stops new seeds; those in flight get ``EVOFORGE_DRAIN_SECONDS``
(default 10) to finish and be journaled, then are cancelled. A second signal cancels
them at once. Either way the finished seeds are in the journal, and a re-run resumes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

# How long a first SIGINT / SIGTERM lets the requests in flight finish.
DEFAULT_DRAIN_SECONDS = 10.0


def install_stop_handlers(
    pending: set[asyncio.Task[None]], interrupt: Callable[[], bool]
) -> Callable[[], None]:
    """Handle SIGINT and SIGTERM on the running loop; return the function that removes
    the handlers. ``interrupt()`` marks the run stopped and returns True when it already
    was (the second signal); ``pending`` are the seeds in flight."""
    loop = asyncio.get_running_loop()
    drain = float(os.environ.get("EVOFORGE_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS))
    timers: list[asyncio.TimerHandle] = []

    def cancel_pending() -> None:
        for task in pending:
            task.cancel()

    def on_signal() -> None:
        if interrupt():
            cancel_pending()  # the second signal: stop waiting
            return
        if pending:
            print(
                f"evoforge: stopping: waiting up to {drain:g} s for {len(pending)} seeds "
                "in flight (signal again to stop at once)",
                file=sys.stderr,
            )
        timers.append(loop.call_later(drain, cancel_pending))

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread, or not supported here

    def restore() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)
        for timer in timers:
            timer.cancel()

    return restore
