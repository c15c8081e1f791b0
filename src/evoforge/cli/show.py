"""What a command prints: one summary table on stdout (or, with ``--json``, the same
summary as JSON), and warnings on stderr."""

from __future__ import annotations

import json
from typing import Any

import typer


def table(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column table without borders, the look of every command's summary."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, highlight=False)
    shown = Table(title=title, show_header=False, box=None, pad_edge=False)
    for name, value in rows:
        shown.add_row(name, value)
    console.print(shown)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def run_summary_json(summary: Any) -> dict[str, Any]:
    """A run's summary (``RunSummary``) as plain JSON values."""
    return {
        "status": summary.status, "stop_reason": summary.stop_reason,
        "message": summary.message, "accepted": summary.accepted,
        "rejected": summary.rejected, "rejected_by_reason": summary.rejected_by_reason,
        "skipped_done": summary.skipped_done, "usage": summary.usage,
        "wall_s": summary.wall_s, "out": str(summary.out), "rejects": str(summary.rejects),
        "manifest": str(summary.manifest), "extra": summary.extra,
    }  # fmt: skip


def finish(summary: Any, *, title: str, as_json: bool = False) -> None:
    """The end of a command that makes records: print its summary and exit with its code.
    ``None`` (a dry run, whose plan is already printed) returns."""
    if summary is None:
        return
    print_summary(summary, title=title, as_json=as_json)
    raise typer.Exit(summary.exit_code)


def print_summary(summary: Any, *, title: str, as_json: bool = False) -> None:
    """A run's summary: status, kept and rejected by reason, usage per operator, files."""
    if as_json:
        print_json(run_summary_json(summary))
    else:
        rows = [
            (
                "status",
                summary.status + (f" ({summary.stop_reason})" if summary.stop_reason else ""),
            ),
            ("accepted", str(summary.accepted)),
            ("rejected", str(summary.rejected)),
        ]
        rows += [(f"  {reason}", str(n)) for reason, n in summary.rejected_by_reason.items()]
        if summary.skipped_done:
            rows.append(("resumed (already done)", str(summary.skipped_done)))
        for op, stats in summary.usage.items():
            rows.append((
                f"{op}",
                f"{stats['calls']} calls, {stats['cache_hits']} cache hits, "
                f"{stats['prompt_tokens']}+{stats['completion_tokens']} tokens, "
                f"{stats['retries']} retries",
            ))  # fmt: skip
        rows += [
            ("wall time", f"{summary.wall_s:.1f} s"),
            ("output", str(summary.out)),
            ("rejects", str(summary.rejects)),
            ("manifest", str(summary.manifest)),
        ]
        table(title, rows)
    if summary.status != "complete":
        typer.echo(f"evoforge: {summary.message}", err=True)


def _flat(data: dict[str, Any], indent: str = "") -> list[tuple[str, str]]:
    """Nested dicts as indented rows; nothing for a value that is not set."""
    rows: list[tuple[str, str]] = []
    for key, value in data.items():
        if value is None or value == {}:
            continue
        if isinstance(value, dict):
            rows.append((f"{indent}{key}", ""))
            rows += _flat(value, indent + "  ")
        elif isinstance(value, list | tuple):
            rows.append((f"{indent}{key}", ", ".join(map(str, value))))
        else:
            rows.append((f"{indent}{key}", "" if value is None else str(value)))
    return rows


def print_report(data: dict[str, Any], *, title: str, as_json: bool = False) -> None:
    """A command's summary dict (dedup, select, probe, export): JSON, or a table of it."""
    if as_json:
        print_json(data)
    else:
        table(title, _flat(data))


def rag_report(extra: dict, n: int, *, as_json: bool = False) -> None:
    """Per document, how many samples it gave; what fell short and why (stderr)."""
    coverage = extra.get("coverage", {})
    skipped = extra.get("documents", {}).get("skipped", [])
    if not as_json:
        kept_any = any(coverage.values())
        typer.echo(f"documents: {extra.get('documents', {}).get('loaded', 0)} loaded, "
                   f"{len(skipped)} skipped; "
                   + ("samples per document:" if kept_any else "no sample kept"))  # fmt: skip
        for path, count in sorted(coverage.items()) if kept_any else ():
            typer.echo(f"  {count:>4}  {path}")
    for item in skipped:
        typer.echo(f"  skipped {item['path']}: {item['reason']} ({item['detail']})", err=True)
    kept = sum(extra.get("kept", {}).values())
    shortfall_report(extra)
    if kept < n:
        typer.echo(f"evoforge: wrote {kept} of the {n} samples asked for", err=True)


def shortfall_report(extra: dict) -> None:
    """What an exact-N run (rag, in2) fell short of, per type, and why (stderr)."""
    for kind, gap in extra.get("shortfall", {}).items():
        typer.echo(f"evoforge: {kind}: {gap['missing']} short: {gap['why']}", err=True)


def print_plan(plan: Any, *, as_json: bool = False) -> None:
    """A dry run's plan (``evoforge.dry_run.DryRunPlan``): calls and tokens per operator."""
    if as_json:
        print_json(plan.to_json())
    else:
        typer.echo(plan.render())


def dry_runner(command_fn: Any, dry_run: bool, as_json: bool) -> Any:
    """``command_fn`` itself, or (``--dry-run``) a function that simulates it on a counting
    model (``evoforge.dry_run``), prints the plan and returns None."""
    if not dry_run:
        return command_fn

    def simulated(*args: Any, **kwargs: Any) -> None:
        from evoforge.dry_run import simulate

        print_plan(simulate(command_fn, *args, **kwargs), as_json=as_json)

    return simulated
