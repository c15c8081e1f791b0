"""``export``: records in the format a trainer or evaluator loads, with a dataset card
(the conversions live in ``evoforge.io.datasets``; :func:`evoforge.export.export` writes)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoforge.options import ExportOptions


def export_records(
    source: Any, *, to: str, out: str | Path, settings: ExportOptions | None = None
) -> dict[str, Any]:
    """Write ``source`` as ``to`` into ``out``; the summary the CLI shows."""
    from evoforge.export import export

    settings = settings or ExportOptions()
    result = export(
        source, to=to, out=out, card=settings.card, license=settings.license,
        language=settings.language or ["en"], push_to_hub=settings.push_to_hub,
        private=settings.private, tokenizer=settings.tokenizer,
    )  # fmt: skip
    return {"format": result.format, "records": result.count, "by_kind": result.by_kind,
            "skipped": result.skipped, "files": [str(f) for f in result.files],
            "card": str(result.card) if result.card else None,
            "pushed_to": settings.push_to_hub}  # fmt: skip
