"""Progress and run summaries in Jupyter: one output that updates, not a line per tick.

In a notebook kernel stderr is no terminal, so the progress bar would stay off, and
rich's own live display needs ``ipywidgets``. Here the bar is rich's ``Progress``
drawn into memory: :class:`NotebookDisplay` shows it once (``display(...,
display_id=True)``) and redraws that same output in place, at most every
:data:`REDRAW_S` seconds and once at the end, as HTML with a plain-text twin. A cell
that runs a command keeps one progress output whatever the number of seeds.

:func:`summary_bundle` is a run summary as a table (status, kept, rejected by reason,
time, files), for ``RunSummary``'s notebook display.

IPython is never imported here: :func:`in_notebook` asks only whether it is loaded.
"""

from __future__ import annotations

import sys
import time
from typing import Any

REDRAW_S = 0.5  # the least time between two redraws of a notebook progress output
WIDTH = 100  # characters of the drawn bar and table


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (an IPython kernel shell is running)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    # ipykernel's ZMQInteractiveShell, or a subclass of it (Colab's, VS Code's kernels)
    return shell is not None and any(
        cls.__module__.startswith("ipykernel.") for cls in type(shell).__mro__
    )


def memory_console() -> Any:
    """A rich console that draws into memory (for :class:`NotebookDisplay`)."""
    import io

    from rich.console import Console

    return Console(file=io.StringIO(), width=WIDTH, force_jupyter=False, color_system="truecolor")


def render(renderable: Any) -> dict[str, str]:
    """``renderable`` as a ``text/plain`` + ``text/html`` bundle."""
    import io

    from rich.console import Console

    console = Console(
        file=io.StringIO(), record=True, width=WIDTH, force_jupyter=False,
        color_system="truecolor", force_terminal=False,
    )  # fmt: skip
    console.print(renderable)
    text = console.export_text(clear=False).rstrip()
    html = console.export_html(inline_styles=True, code_format="<pre style=\"{stylesheet}\">"
                               "{code}</pre>")  # fmt: skip
    return {"text/plain": text, "text/html": html}


class NotebookDisplay:
    """One notebook output showing ``source.get_renderable()``, redrawn in place."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self._handle: Any = None
        self._last = 0.0
        self.redraws = 0

    def refresh(self, *, final: bool = False) -> None:
        now = time.monotonic()
        if not final and self._handle is not None and now - self._last < REDRAW_S:
            return
        self._last = now
        from IPython.display import display

        bundle = render(self.source.get_renderable())
        self.redraws += 1
        if self._handle is None:
            self._handle = display(bundle, raw=True, display_id=True)
        else:
            self._handle.update(bundle, raw=True)


def summary_bundle(summary: Any) -> dict[str, str]:
    """A run summary (``RunSummary``) as a table: a notebook's view of it."""
    from rich.table import Table

    title = f"{summary.status}: {summary.accepted} kept, {summary.rejected} rejected"
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column("")
    table.add_column("", overflow="fold")
    for reason, count in sorted(summary.rejected_by_reason.items(), key=lambda rc: -rc[1]):
        table.add_row(f"rejected: {reason}", str(count))
    calls = sum(int(u.get("calls", 0)) for u in summary.usage.values())
    hits = sum(int(u.get("cache_hits", 0)) for u in summary.usage.values())
    table.add_row("calls (cache hits)", f"{calls} ({hits})")
    if summary.skipped_done:
        table.add_row("resumed seeds", str(summary.skipped_done))
    table.add_row("wall time", f"{summary.wall_s:.1f} s")
    table.add_row("out", str(summary.out))
    table.add_row("rejects", str(summary.rejects))
    if summary.stop_reason:
        table.add_row("stopped", f"{summary.stop_reason}: {summary.message}")
    return render(table)
