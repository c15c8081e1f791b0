"""A run's files as pandas DataFrames: what it kept, what it rejected and why, its funnel.

:class:`RunFrames` reads the files one output leaves (see :mod:`evoforge.io.layout`):
``OUT``, ``OUT.rejects.jsonl`` and ``OUT.manifest.json``. ``RunSummary.to_pandas()``
gives it for the run just finished; :func:`evoforge.open_run` gives the same, plus each
record's lineage, for any run folder.

Columns:

- ``kept``: one row per record of ``OUT``, in file order, with the record's own
  columns (``id``, ``kind``, the kind's fields, ``parent_id``, ``lineage`` as a list of
  steps, ``meta`` as a dict). An export format (``--format ragas``) gives its columns.
- ``rejected``: one row per line of ``OUT.rejects.jsonl``, in file order: ``id``,
  ``reason`` (the reason code), ``detail`` (one line saying why), ``step`` (the step
  that dropped it, e.g. ``evolver.constraints``, ``critic.faithfulness``, ``input``),
  ``field`` (the JSON path it names, or ``None``), ``lost_to`` (for a duplicate: the id
  it lost to), ``kind`` (the dropped record's kind, ``None`` for a seed that could not
  be read), ``record`` (the dropped record as a dict, or ``None``), then any other key a
  step adds (``score``, ``cosine``, ...).
- ``funnel()``: one row per step the run counted (the manifest's ``steps``): ``step``,
  ``in``, ``kept``, ``rejected``.
- ``by_reason()``: one row per reason code, commonest first: ``reason``, ``count``,
  ``share`` (of all rejections), ``steps`` (the steps that gave it, comma-separated),
  ``example_id`` and ``example_detail`` (its first rejection).

pandas is imported when a frame is built, not when this module is.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evoforge.errors import EvoforgeError, InputError
from evoforge.io.layout import output_paths

REJECTED_COLUMNS = ("id", "reason", "detail", "step", "field", "lost_to", "kind", "record")
FUNNEL_COLUMNS = ("step", "in", "kept", "rejected")
BY_REASON_COLUMNS = ("reason", "count", "share", "steps", "example_id", "example_detail")


class RunFrames:
    """The output ``out`` and the files beside it, as DataFrames (read when first asked)."""

    def __init__(self, out: str | Path) -> None:
        self.paths = output_paths(Path(out))
        self.out = self.paths["out"]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.out)!r})"

    @functools.cached_property
    def manifest(self) -> dict[str, Any]:
        """The run's manifest (``OUT.manifest.json``); ``{}`` when the run wrote none."""
        path = self.paths["manifest"]
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"is not a readable manifest ({exc})", path=str(path)) from None
        return data if isinstance(data, dict) else {}

    @functools.cached_property
    def kept(self) -> Any:
        """The records the run kept: one row per record of ``OUT``."""
        import pandas as pd

        rows = list(_rows(self.out)) if self.out.exists() else []
        return pd.DataFrame(rows)

    @functools.cached_property
    def rejected(self) -> Any:
        """Every rejection: one row per line of ``OUT.rejects.jsonl``."""
        import pandas as pd

        path = self.paths["rejects"]
        rows = []
        extra: dict[str, None] = {}
        for line in _rows(path) if path.exists() else ():
            record = line.get("record")
            row = {name: line.get(name) for name in REJECTED_COLUMNS}
            row["kind"] = record.get("kind") if isinstance(record, dict) else None
            for name, value in line.items():
                if name not in row:
                    extra[name] = None
                    row[name] = value
            rows.append(row)
        return pd.DataFrame(rows, columns=[*REJECTED_COLUMNS, *extra])

    def funnel(self) -> Any:
        """Records in, kept and rejected at each step the run counted."""
        import pandas as pd

        steps = self.manifest.get("steps") or {}
        rows = [
            {
                "step": name,
                "in": counts.get("in"),
                "kept": counts.get("kept"),
                "rejected": counts.get("rejected"),
            }
            for name, counts in steps.items()
            if isinstance(counts, dict)
        ]
        if not rows:  # a run that counted no steps: the files' totals
            kept, rejected = len(self.kept), len(self.rejected)
            name = str(self.manifest.get("command") or "run")
            rows = [{"step": name, "in": kept + rejected, "kept": kept, "rejected": rejected}]
        return pd.DataFrame(rows, columns=list(FUNNEL_COLUMNS))

    def by_reason(self) -> Any:
        """The rejections counted by reason code, commonest first."""
        import pandas as pd

        rejected = self.rejected
        total = len(rejected)
        rows = []
        for reason, group in rejected.groupby("reason", sort=False, dropna=False):
            steps = [str(s) for s in dict.fromkeys(group["step"]) if isinstance(s, str)]
            rows.append({
                "reason": reason, "count": len(group), "share": len(group) / total,
                "steps": ", ".join(steps), "example_id": group["id"].iloc[0],
                "example_detail": group["detail"].iloc[0],
            })  # fmt: skip
        frame = pd.DataFrame(rows, columns=list(BY_REASON_COLUMNS))
        return frame.sort_values("count", ascending=False, kind="stable").reset_index(drop=True)

    def to_dataset(self, to: str | None = None) -> Any:
        """The kept records as a ``datasets.Dataset``; ``to="messages"`` (or ``"alpaca"``,
        ``"sharegpt"``) as that export's rows (see :func:`evoforge.to_dataset`)."""
        from evoforge.io.datasets import to_dataset

        return to_dataset(self.out, to=to)


def _rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a file evoforge wrote (a row it cannot read is left out)."""
    from evoforge.io.readers import iter_rows

    for item in iter_rows(path):
        if not isinstance(item, EvoforgeError):
            yield item[1]
