"""The report's cost table (issue 19): per output, the tokens its run spent and what
they cost online and at the batch price, in total and per accepted record.

The figures are the manifest's ``cost`` block (:func:`evoforge.llm.prices.cost_block`);
a manifest written before it had one is priced now from its ``usage`` and ``model``
with the packaged prices, and says so. Outputs whose manifest records no model calls
(dedup, export) are left out.
"""

from __future__ import annotations

from typing import Any

from evoforge.llm.prices import cost_block, format_usd
from evoforge.report.data import stored_block

HEAD = [
    "output", "model", "calls", "prompt tokens", "cached", "completion tokens",
    "USD online", "USD batch", "paid at", "USD / accepted online", "USD / accepted batch",
]  # fmt: skip
INTRO = (
    "What each run's tokens cost at the model's list price online and at the Batch API "
    "price ('paid at' says which one the run paid: --batch runs pay the batch price). "
    "Cached prompt tokens are priced at the provider's cached-input rate where it has one. "
    "Prices come from models.yaml (transcribed from the providers' pricing pages, dated) "
    "or --prices; a model without a price shows '-', never a guess."
)


def cost_of(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest's cost block, or one computed from its usage (an older manifest);
    None for a manifest without model usage."""

    def priced_here(usage: dict[str, Any], accepted: int) -> dict[str, Any]:
        model = manifest.get("model") if isinstance(manifest.get("model"), dict) else {}
        engine = manifest.get("engine") if isinstance(manifest.get("engine"), dict) else {}
        block = cost_block(model, usage, accepted, engine)
        block["price_source"] += " (priced by the report: the manifest has no cost block)"
        return block

    return stored_block(manifest, "cost", priced_here)


def cost_table(stages: list[Any]) -> dict[str, Any] | None:
    """``{"intro", "caption", "head", "rows", "notes"}`` for the report's cost section,
    or None when no output made model calls."""
    rows: list[list[str]] = []
    sources: dict[str, str] = {}
    totals = {"online": 0.0, "batch": 0.0, "paid": 0.0}
    priced_all = True
    for stage in stages:
        block = cost_of(stage.manifest)
        if block is None:
            continue
        usage = stage.manifest["usage"]

        def total(key: str, usage: dict[str, Any] = usage) -> int:
            return sum(int(op.get(key, 0) or 0) for op in usage.values())

        online, batch = block.get("usd_online"), block.get("usd_batch")
        paid = block.get("priced_at") or "online"
        rows.append([
            stage.out.name, str(block.get("model") or "-"), str(total("calls")),
            str(total("prompt_tokens")), str(total("cached_tokens")),
            str(total("completion_tokens")), format_usd(online), format_usd(batch), paid,
            format_usd(block.get("usd_per_accepted_online")),
            format_usd(block.get("usd_per_accepted_batch")),
        ])  # fmt: skip
        sources[str(block.get("model") or "-")] = str(block.get("price_source") or "")
        if online is None or batch is None:
            priced_all = False
            continue
        totals["online"] += online
        totals["batch"] += batch
        totals["paid"] += batch if paid == "batch" else online
    if not rows:
        return None
    notes = [f"{model}: {source}" for model, source in sources.items()]
    if len(rows) > 1 and priced_all:
        notes.insert(0, f"All outputs: {format_usd(totals['online'])} online, "
                        f"{format_usd(totals['batch'])} at the batch price; "
                        f"paid {format_usd(totals['paid'])}.")  # fmt: skip
    return {"intro": INTRO, "caption": "cost per output", "head": HEAD, "rows": rows,
            "notes": notes}  # fmt: skip


def cost_markdown(stages: list[Any]) -> list[str]:
    """``summary.md``'s cost lines: per output, USD online and at the batch price, and
    which one the run paid; nothing when no output made model calls."""
    table = cost_table(stages)
    if table is None:
        return []
    lines = ["## cost", ""]
    for row in table["rows"]:
        name, model, calls = row[0], row[1], row[2]
        online, batch, paid, per_online, per_batch = row[6], row[7], row[8], row[9], row[10]
        lines.append(f"- {name} ({model}, {calls} calls): {online} online, {batch} at the "
                     f"batch price; paid {paid}; per accepted record {per_online} online, "
                     f"{per_batch} batch")  # fmt: skip
    lines += ["", *table["notes"], ""]
    return lines
