"""Structured output from models that do not always honour a JSON Schema.

Small and local models wrap JSON in prose, code fences, trailing commas or
single quotes. :func:`extract_json` finds the first JSON value in the text and
repairs the common slips; :func:`check_reply` validates it with ``jsonschema``
and says exactly what is wrong, so the engine can re-ask once quoting the error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from evoforge.records import json_path

_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",\s*([}\]])")


class ReplyError(ValueError):
    """A reply that is not the JSON asked for; ``reason`` is the rejection code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(detail)


def _balanced_spans(text: str) -> list[str]:
    """Every top-level ``{...}`` or ``[...]`` span, honouring strings and escapes."""
    spans = []
    depth = 0
    start = -1
    in_string = False
    quote = ""
    escaped = False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                in_string = False
            continue
        if ch in "\"'" and depth > 0:
            in_string, quote = True, ch
        elif ch in "{[":
            if depth == 0:
                start = i
            depth += 1
        elif ch in "}]" and depth > 0:
            depth -= 1
            if depth == 0:
                spans.append(text[start : i + 1])
    return spans


def _loads_lenient(candidate: str) -> Any:
    try:
        return json.loads(candidate)
    except json.JSONDecodeError:
        pass
    repaired = _TRAILING_COMMA.sub(r"\1", candidate)
    try:
        return json.loads(repaired)
    except json.JSONDecodeError:
        pass
    if "'" in repaired and '"' not in repaired:
        return json.loads(repaired.replace("'", '"'))
    raise json.JSONDecodeError("no JSON value", candidate, 0)


def extract_json(text: str) -> Any:
    """The first JSON object or array in ``text``; raises ``ReplyError("invalid_json")``."""
    stripped = text.strip()
    candidates = [stripped]
    candidates += [block.strip() for block in _FENCE.findall(text)]
    candidates += _balanced_spans(text)
    for candidate in candidates:
        if not candidate:
            continue
        try:
            value = _loads_lenient(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(value, dict | list):
            return value
    snippet = stripped[:120].replace("\n", " ")
    raise ReplyError("invalid_json", f"no JSON object found in the reply: {snippet!r}")


def check_reply(text: str, schema: dict[str, Any]) -> Any:
    """Extract and validate; raises ``ReplyError`` with ``invalid_json`` or ``schema_mismatch``."""
    value = extract_json(text)
    validator = Draft202012Validator(schema)
    error = best_match(validator.iter_errors(value))
    if error is None:
        return value
    # A model asked for {"answer": ...} sometimes replies with a one-item list of it.
    if isinstance(value, list) and len(value) == 1 and validator.is_valid(value[0]):
        return value[0]
    raise ReplyError("schema_mismatch", f"at {json_path(error.absolute_path)}: {error.message}")


def reask_messages(
    messages: list[dict[str, str]], reply: str, error: ReplyError, schema: dict[str, Any]
) -> list[dict[str, str]]:
    """The conversation for the one re-ask: the bad reply, then what was wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": reply},
        {
            "role": "user",
            "content": (
                f"Your reply could not be used: {error.detail}\n"
                "Reply again with only a JSON value that follows this JSON Schema, "
                f"and nothing else:\n{json.dumps(schema, ensure_ascii=False)}"
            ),
        },
    ]
