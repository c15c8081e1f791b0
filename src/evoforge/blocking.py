"""Run a command's coroutine from synchronous code, inside a running event loop or not.

``evoforge.answer(...)`` and the other synchronous commands are ``asyncio.run`` over
their ``*_async`` twin. A Jupyter cell already runs inside the kernel's event loop,
where ``asyncio.run`` refuses to start: there the coroutine runs on its own loop in a
worker thread, and the cell waits for it (``await evoforge.answer_async(...)`` runs on
the kernel's loop instead). The run's stop handlers need the main thread, so in the
worker a run is stopped with the kernel's interrupt only between runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)``; in a thread with a running loop, on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, coroutine).result()
