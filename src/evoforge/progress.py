"""A progress line on stderr: accepted / rejected / calls / tokens.

Shown only when stderr is a terminal and ``--quiet`` is not set, so logs and CI
output stay clean; in a Jupyter kernel, as one output redrawn in place
(:mod:`evoforge.notebook`).
"""

from __future__ import annotations

import sys
import time
from typing import Any


class ProgressBar:
    def __init__(self, description: str, total: int | None, *, enabled: bool | None = None):
        notebook = False
        if enabled is None:
            from evoforge.notebook import in_notebook

            notebook = not sys.stderr.isatty() and in_notebook()
            enabled = sys.stderr.isatty() or notebook
        self.enabled = enabled
        self._name = description
        self._last = 0.0
        self._stats: dict[str, int] | None = None
        self._progress: Any = None
        self._display: Any = None  # in a notebook: the one output the bar is drawn into
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

        console = Console(stderr=True)
        if notebook:  # drawn in memory, shown as one output redrawn in place
            from evoforge.notebook import NotebookDisplay, memory_console

            console = memory_console()
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "accepted {task.fields[accepted]} · rejected {task.fields[rejected]} · "
                "calls {task.fields[calls]} · tokens {task.fields[tokens]}"
            ),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task(
            description, total=total, accepted=0, rejected=0, calls=0, tokens=0
        )
        if notebook:
            self._display = NotebookDisplay(self._progress)

    def __enter__(self) -> ProgressBar:
        if self._progress is not None and self._display is None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            if self._stats is not None:
                self._draw(self._stats)  # the final counts, whatever the throttle said
            if self._display is not None:
                self._display.refresh(final=True)
            else:
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
        if stats.get("batch"):  # --batch: the batch's state beside the command
            self._progress.update(self._task, description=f"{self._name} · {stats['batch']}")
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
        if self._display is not None:
            self._display.refresh()
