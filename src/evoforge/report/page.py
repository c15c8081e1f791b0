"""Writing a report: ``report.html`` (the page) and ``summary.md`` (its counts in text).

:func:`write_report` reads the stages of a folder (:mod:`evoforge.report.data`), follows
the records along their chains (:mod:`evoforge.report.trace`), builds the page's
sections (:mod:`evoforge.report.sections`) and renders them through ``template.html``,
which inlines every chart and needs no network.
"""

from __future__ import annotations

from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

from evoforge.errors import InputError
from evoforge.io.writers import atomic_text
from evoforge.report.browser import (
    DATA_DIR,
    INLINE_LIMIT,
    SEARCH_CHARS,
    browser_data,
    write_browser_data,
)
from evoforge.report.cost import cost_markdown
from evoforge.report.data import cluster_sizes, discover_stages
from evoforge.report.efficiency import efficiency_markdown
from evoforge.report.sections import build_sections
from evoforge.report.trace import Lineage


def write_report(
    path: str | Path,
    *,
    redact: bool = False,
    docs: list[str | Path] | None = None,
    inline_limit: int = INLINE_LIMIT,
) -> dict[str, Path]:
    """Write ``report.html`` and ``summary.md`` for a run's output file or a folder of outputs.

    The page's sample browser holds every record; past ``inline_limit`` bytes of JSON
    its data goes into sidecar ``report-data/*.js`` files beside the page. ``redact``
    leaves the source documents' texts out (RAG contexts and source documents, IN2
    contexts and needles); ``docs`` names the RAG documents folder when the rag run's
    command line does not (the source texts are read from it at report time).

    A folder reports every output in it (the commands refresh their folder's report
    this way when they finish); a file, that output and the steps in its folder that
    its records went through or came from. Returns
    ``{"html": ..., "summary": ...}``. Raises :class:`InputError` when the path
    holds no evoforge output.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=str(path))
    folder = path if path.is_dir() else path.parent
    stages = discover_stages(path)
    if not stages:
        raise InputError(
            "no evoforge outputs here (an output X.jsonl has X.manifest.json or "
            "X.rejects.jsonl beside it)",
            path=str(path),
        )
    lineage = Lineage(stages)
    html_path = folder / "report.html"
    summary_path = folder / "summary.md"
    samples = browser_data(lineage, folder, redact=redact, docs=[Path(d) for d in docs or []])
    script = write_browser_data(samples, folder, limit=inline_limit)
    note = (
        f"The records are in {DATA_DIR}/ beside this page (more than {inline_limit:,} "
        "bytes of data): keep that folder with it."
        if (folder / DATA_DIR).exists()
        else ""
    )
    extra = {"browser_data": script, "browser_notes": samples.notes, "data_note": note}
    if redact:
        extra["browser_notes"] = [*samples.notes, "Redacted: source document texts left out."]
    atomic_text(html_path, render_html(path, lineage, cluster_sizes(folder, stages), extra))
    atomic_text(summary_path, render_markdown(path, lineage))
    return {"html": html_path, "summary": summary_path}


def render_html(
    subject: Path, lineage: Lineage, clusters: list[int], browser: dict | None = None
) -> str:
    """The page: every section, the sample browser, and a line for each part left out."""
    from jinja2 import Environment, select_autoescape

    sections, omitted = build_sections(lineage, clusters)
    package = resources.files("evoforge.report")
    template = package.joinpath("template.html").read_text("utf-8")
    browser = browser or {"browser_data": "evoforgeStart({chunk:1,chunks:0});", "browser_notes": []}
    env = Environment(autoescape=select_autoescape(default=True), keep_trailing_newline=True)
    return env.from_string(template).render(
        title=f"evoforge report: {subject.name or subject}",
        folder=str(subject),
        sections=sections,
        omitted=omitted,
        plot_ids=[plot_id for section in sections for plot_id in section.plot_ids],
        browser_js=package.joinpath("browser.js").read_text("utf-8"),
        search_chars=SEARCH_CHARS,
        **{"data_note": "", **browser},
    )


def render_markdown(subject: Path, lineage: Lineage) -> str:
    """The summary: each chain's funnel, reasons and seed counts, then the later steps."""
    lines = [f"# evoforge report: {subject}", ""]
    for chain in lineage.chains:
        steps = lineage.funnel(chain)
        lines.append(f"## {chain.source.out.name} ({chain.source.command})")
        lines.append("")
        lines.append(" -> ".join(f"{label} {n}" for label, n in steps))
        reasons = Counter(d.reason for d in chain.source.dropped)
        if reasons:
            lines.append("")
            lines.append("rejected: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
        mix = _method_mix(chain.source)
        if mix:
            lines.extend(["", mix])
        _, stats = lineage.seed_rows(chain)
        why = ", ".join(f"{reason} {n}" for reason, n in stats["why"].items())
        lines.append("")
        lines.append(
            f"seeds: {stats['seeds']}; kept something: {stats['with_output']}; "
            f"kept nothing: {stats['without_output']}" + (f" ({why})" if why else "")
        )
        lines.append("")
    others = [s for s in lineage.stages if s.role != "generate"]
    if others:
        lines.append("## later steps")
        lines.append("")
        for stage in others:
            reasons = Counter(d.reason for d in stage.dropped)
            why = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
            lines.append(
                f"- {stage.out.name} ({stage.command}): kept {len(stage.kept)}, dropped "
                f"{len(stage.dropped)}" + (f" ({why})" if why else "")
            )
        lines.append("")
    lines += cost_markdown(lineage.stages)  # issue 19: USD online against batch
    lines += efficiency_markdown(lineage.stages)  # issue 19: calls, tokens per accepted
    lines.append("Plots and the per-seed table: report.html")
    return "\n".join(lines) + "\n"


def _method_mix(stage: Any) -> str | None:
    """orca2's strategy mix and pam's verdict mix, each with its rejections by reason."""
    method = {"orca2": "strategy", "pam": "verdict"}.get(stage.command)
    if method is None:
        return None
    prefix = f"{stage.command}:"
    kept = Counter(i.op.removeprefix(prefix) for i in stage.kept if i.op.startswith(prefix))
    dropped: dict[str, Counter[str]] = {}
    for drop in stage.dropped:
        if drop.item is not None and drop.item.op.startswith(prefix):
            dropped.setdefault(drop.item.op.removeprefix(prefix), Counter())[drop.reason] += 1
    parts = []
    for name in sorted(set(kept) | set(dropped)):
        why = dropped.get(name, Counter())
        reasons = ", ".join(f"{r} {n}" for r, n in why.most_common())
        parts.append(f"{name} kept {kept[name]}, rejected {why.total()}"
                     + (f" ({reasons})" if reasons else ""))  # fmt: skip
    return f"by {method}: " + "; ".join(parts) if parts else None
