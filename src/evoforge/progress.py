"""A progress line on stderr: accepted / rejected / calls / tokens.

Shown only when stderr is a terminal and ``--quiet`` is not set, so logs and CI
output stay clean.
"""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressBar:
    def __init__(self, description: str, total: int | None, *, enabled: bool | None = None):
        if enabled is None:
            enabled = sys.stderr.isatty()
        self.enabled = enabled
        self._last = 0.0
        self._stats: dict[str, int] | None = None
        self._progress: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "accepted {task.fields[accepted]} · rejected {task.fields[rejected]} · "
                "calls {task.fields[calls]} · tokens {task.fields[tokens]}"
            ),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._task = self._progress.add_task(
            description, total=total, accepted=0, rejected=0, calls=0, tokens=0
        )

    def __enter__(self) -> ProgressBar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            if self._stats is not None:
                self._draw(self._stats)  # the final counts, whatever the throttle said
            self._progress.stop()

    def update(self, stats: dict[str, int]) -> None:
        if self._progress is None:
            return
        self._stats = stats
        now = time.monotonic()
        if now - self._last < 0.1:
            return
        self._last = now
        self._draw(stats)

    def _draw(self, stats: dict[str, int]) -> None:
        done = stats.get("skipped_done", 0)
        done += stats.get("seeds_done", 0)
        self._progress.update(
            self._task,
            completed=done,
            accepted=stats.get("accepted", 0),
            rejected=stats.get("rejected", 0),
            calls=stats.get("calls", 0),
            tokens=stats.get("tokens", 0),
        )
