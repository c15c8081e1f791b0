"""A check: ``no_todo`` rejects answers that still hold a placeholder (TODO, TBD, FIXME,
"[insert ...]", "lorem ipsum"), which a model leaves when it could not finish.

A check is a function ``(record, settings) -> Verdict`` (as jsonschema's keyword
functions are); ``Check`` names it and says which JSON path a failure is about, so
its rejects read ``{"reason": "placeholder", "step": "check.no_todo",
"field": "$.output", ...}``. This one ships as a plugin, registered by an entry
point in its package's ``pyproject.toml``::

    [project.entry-points."evoforge.steps"]
    "check.no_todo" = "no_todo_check:NO_TODO"

then ``evoforge validate answers.jsonl --checks schema,no_todo``.
"""

from __future__ import annotations

import re
from typing import Any

from evoforge.validators.base import PASS, Check, Verdict
from evoforge.validators.checks import side_path, sides

_PLACEHOLDER = re.compile(r"\b(TODO|TBD|FIXME)\b|\[insert [^\]]*\]|lorem ipsum", re.IGNORECASE)


def no_placeholder(record: dict[str, Any], settings: Any = None) -> Verdict:
    answer = sides(record, getattr(settings, "kind", None))[1]
    match = _PLACEHOLDER.search(answer)
    if match is None:
        return PASS
    return Verdict.failed("placeholder", f"the answer holds the placeholder {match.group(0)!r}")


NO_TODO = Check(
    "no_todo", no_placeholder, field=lambda r, s: side_path(r, getattr(s, "kind", None))
)
