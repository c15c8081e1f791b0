"""The text of a record that selection compares and DEITA scores.

:func:`text_of` is what is embedded (per kind: instruction [+ input] + output,
question + answer, user_input + reference, or the ``messages`` turns);
:func:`turn_pairs` is the (user, assistant) pairs a DEITA judge scores, one per turn.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evoforge.errors import ConfigError
from evoforge.records import Record

__all__ = ["RecordLike", "text_of", "turn_pairs"]

RecordLike = Record | dict[str, Any]


# (prompt field, response field) per kind; an ``input`` field joins the instruction.
_PAIR_FIELDS = {
    "instruction": ("instruction", "output"),
    "qa": ("question", "answer"),
    "rag": ("user_input", "reference"),
    "in2": ("question", "answer"),
}


def _as_record(item: RecordLike) -> Record:
    return item if isinstance(item, Record) else Record.from_json(item)


def _turns_text(value: Any) -> str:
    """A string as is; ``{role, content}`` turns as ``role: content`` lines."""
    if isinstance(value, list):
        return "\n".join(
            f"{t.get('role', '')}: {t.get('content', '')}" if isinstance(t, dict) else str(t)
            for t in value
        )
    return "" if value is None else str(value)


def _prompt_field(record: Record) -> tuple[str, str]:
    try:
        return _PAIR_FIELDS[record.kind]
    except KeyError:
        raise ConfigError(
            f"{record.id}: no default text for kind {record.kind!r}; pass fields=[...]"
        ) from None


def text_of(record: RecordLike, fields: Sequence[str] | None = None) -> str:
    """The text that is embedded and compared: ``fields`` joined by newlines, or by kind
    ``instruction [+ input] + output``, ``question + answer``, ``user_input + reference``.
    Turns are written ``role: content``; missing or empty fields are left out."""
    record = _as_record(record)
    if fields is None:
        if isinstance(record.get("messages"), list):
            fields = ["messages"]
        else:
            prompt, response = _prompt_field(record)
            middle = ["input"] if record.kind == "instruction" else []
            fields = [prompt, *middle, response]
    parts = [_turns_text(record.get(name)) for name in fields]
    return "\n".join(part for part in parts if part.strip())


def turn_pairs(record: RecordLike) -> list[tuple[str, str]]:
    """The (user text, assistant text) pairs DEITA scores, one per turn.

    An ``instruction`` record is one pair (instruction, plus its input when there is
    one, and output). A ``messages`` field of ``{role, content}`` turns gives one pair
    per user turn and the assistant turn after it. A ``qa``/``rag`` question given as
    turns gives its user/assistant pairs and then (last user turn, answer).
    """
    record = _as_record(record)
    messages = record.get("messages")
    if isinstance(messages, list):
        return _pairs_from_turns(messages, None)
    prompt, response = _prompt_field(record)
    question, answer = record.get(prompt), _turns_text(record.get(response))
    if isinstance(question, list):
        return _pairs_from_turns(question, answer)
    text = _turns_text(question)
    if record.kind == "instruction" and str(record.get("input") or "").strip():
        text = f"{text}\n\n{record['input']}"
    return [(text, answer)]


def _pairs_from_turns(turns: list[dict[str, Any]], final_answer: str | None) -> list:
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for turn in turns:
        role, content = turn.get("role"), str(turn.get("content") or "")
        if role == "user":
            pending = content if pending is None else f"{pending}\n{content}"
        elif role == "assistant" and pending is not None:
            pairs.append((pending, content))
            pending = None
    if pending is not None:
        pairs.append((pending, final_answer or ""))
    return pairs
