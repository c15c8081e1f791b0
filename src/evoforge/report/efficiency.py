"""The report's per-accepted-sample figures (issue 19): calls and tokens per sample kept.

A rejected sample still cost the calls that made and judged it, so what a data set
costs is calls and tokens per *accepted* sample. The figures are the manifest's
``efficiency`` block (:func:`evoforge.engine.efficiency.efficiency_block`); a manifest
written before it had one gets them computed from its ``usage`` and ``counts``.
Outputs whose manifest records no model calls (dedup, export) are left out.
"""

from __future__ import annotations

from typing import Any

from evoforge.engine.efficiency import efficiency_block
from evoforge.report.data import stored_block

HEAD = [
    "output", "accepted", "calls", "calls / accepted", "prompt tokens / accepted",
    "completion tokens / accepted", "cached share",
]  # fmt: skip
INTRO = (
    "What each output cost in model calls and tokens per accepted sample: the calls of "
    "rejected samples count too, so cheaper checks run first and judges that share a "
    "call lower these figures. Cached share: prompt tokens the provider's prefix cache "
    "served. Response-cache hits cost nothing and are not counted."
)


def efficiency_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's efficiency block, or one computed from its usage (an older
    manifest); None for a manifest without model calls."""
    return stored_block(manifest, "efficiency", efficiency_block)


def _figure(value: Any, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:.0%}" if percent else f"{value:,.2f}".rstrip("0").rstrip(".")


def efficiency_table(stages: list[Any]) -> dict[str, Any] | None:
    """``{"intro", "caption", "head", "rows"}`` for the report, or None when no output
    made model calls."""
    rows = []
    for stage in stages:
        block = efficiency_of(stage.manifest)
        if block is None or not block.get("calls"):
            continue
        rows.append([
            stage.out.name, str(block.get("accepted", 0)), str(block.get("calls", 0)),
            _figure(block.get("calls_per_accepted")),
            _figure(block.get("prompt_tokens_per_accepted")),
            _figure(block.get("completion_tokens_per_accepted")),
            _figure(block.get("cached_share"), percent=True),
        ])  # fmt: skip
    if not rows:
        return None
    return {"intro": INTRO, "caption": "per accepted sample", "head": HEAD, "rows": rows}


def efficiency_markdown(stages: list[Any]) -> list[str]:
    """``summary.md``'s lines: per output, calls and tokens per accepted sample."""
    table = efficiency_table(stages)
    if table is None:
        return []
    lines = ["## per accepted sample", ""]
    for name, accepted, calls, per_call, per_prompt, per_completion, cached in table["rows"]:
        lines.append(f"- {name}: {calls} calls for {accepted} accepted: {per_call} calls, "
                     f"{per_prompt} prompt and {per_completion} completion tokens per accepted "
                     f"sample; cached share {cached}")  # fmt: skip
    return [*lines, ""]
