"""The critics' model-free screens as checks, so ``validate --checks`` reaches them.

Each is the ``screen`` of one critic of :mod:`evoforge.validators.critics` (Ragas'
test-set critics; see there for the references), run on a written ``qa`` or
``rag`` record with no model call:

- ``self_contained``: ``SelfContained`` (``not_self_contained``);
- ``well_formed``: ``WellFormed`` (``not_a_question``);
- ``grounded_overlap``: the lexical half of ``Grounded`` (``no_context``,
  ``empty_answer``, ``ungrounded_reference``); its LLM judge is not run;
- ``has_context``: the screen of ``Answerable`` (``no_context``);
- ``information_gain``: the screen of ``InformationGain``: the question repeats
  ``meta.seed_question`` (``no_information_gain``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from evoforge.records import SAMPLE_FIELDS, Record
from evoforge.validators.base import Check, Verdict
from evoforge.validators.critics import (
    Answerable,
    Critic,
    Grounded,
    InformationGain,
    SelfContained,
    WellFormed,
)


def _screen(critic: Callable[[], Critic], part: str) -> Callable[[dict[str, Any], Any], Verdict]:
    """``critic().screen`` over a record's JSON, failures located at its ``part`` field
    (``no_context`` at its contexts). The critic is made once, on first use."""
    made = functools.cache(critic)

    def test(record: dict[str, Any], settings: Any = None) -> Verdict:
        kind = getattr(settings, "kind", None) or record.get("kind", "")
        fields = SAMPLE_FIELDS.get(kind)
        if fields is None:
            return Verdict.failed("wrong_kind", f"critics screen qa and rag records, not {kind!r}")
        data = {**record, "kind": kind, "id": str(record.get("id") or "record")}
        verdict = made().screen(Record.from_json(data))
        if verdict.ok:
            return verdict
        where = f"$.{getattr(fields, 'contexts' if verdict.reason == 'no_context' else part)}"
        return Verdict.failed(verdict.reason or "invalid", verdict.detail, field=where)

    return test


SELF_CONTAINED = Check("self_contained", _screen(SelfContained, "question"))
WELL_FORMED = Check("well_formed", _screen(WellFormed, "question"))
GROUNDED_OVERLAP = Check("grounded_overlap", _screen(Grounded, "answer"))
HAS_CONTEXT = Check("has_context", _screen(Answerable, "contexts"))
INFORMATION_GAIN = Check("information_gain", _screen(InformationGain, "question"))
