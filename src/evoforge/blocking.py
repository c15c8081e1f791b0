"""Run a command's coroutine from synchronous code, inside a running event loop or not.

``evoforge.answer(...)`` and the other synchronous commands are ``asyncio.run`` over
their ``*_async`` twin. A Jupyter cell already runs inside the kernel's event loop,
where ``asyncio.run`` refuses to start: there the coroutine runs on its own loop in a
worker thread, and the cell waits for it (``await evoforge.answer_async(...)`` runs on
the kernel's loop instead). Interrupting the kernel cancels the run; its journal keeps
what finished, so running the cell again resumes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run_blocking(coroutine: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(coroutine)``; in a thread with a running loop, on a worker thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    loop = asyncio.new_event_loop()
    started: dict[str, asyncio.Task[Any]] = {}

    async def main() -> T:
        started["task"] = asyncio.current_task()  # type: ignore[assignment]
        return await coroutine

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        future = worker.submit(_run_on, loop, main())
        try:
            return future.result()
        except KeyboardInterrupt:  # the kernel's interrupt: stop the run, then say so
            task = started.get("task")
            if task is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(task.cancel)
            raise


def _run_on(loop: asyncio.AbstractEventLoop, main: Coroutine[Any, Any, T]) -> T:
    """What ``asyncio.run`` does, on ``loop``: run ``main``, cancel what it left, close."""
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main)
    finally:
        try:
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            asyncio.set_event_loop(None)
            loop.close()
