"""A model that answers without thinking, so a dry run can count what a run sends.

``CountingChatModel`` replies to every request at once: a minimal instance of the
request's JSON schema (required properties, types, enums, ``minItems``, nested
objects and arrays), or a short text when there is no schema, and reports the
usage of each call. A command run on it walks the same code path as a real run
(templates, schemas, elimination rules, passes), so the calls and prompt tokens
it reports are the ones the run will send: the plan is the run, not a second
derivation of it (the simulation-based dry run of issue 12).

Prompt tokens are counted as the fake OpenAI server counts them
(:func:`prompt_tokens`, which :mod:`evoforge.testing.fake_openai` imports), so on
that server a dry run and a real run report the same numbers.

Every reply is short and distinct per request (a digest of the messages), with
fewer than five letters: evolved texts never equal their parent, exact
deduplication keeps them apart, and the script checks (``language_drift``) see
too few letters to judge, so a seed in any language passes.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from evoforge.llm.base import Completion, Message, Usage

IDENTITY = {"backend": "counting", "model": "evoforge-dry-run"}

# Values for string formats a schema may ask for.
_STRING_FORMATS = {
    "date": "2024-01-01",
    "date-time": "2024-01-01T00:00:00Z",
    "time": "00:00:00Z",
    "email": "x@example.com",
    "uri": "http://example.com",
    "url": "http://example.com",
    "uuid": "00000000-0000-0000-0000-000000000000",
}


def content_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def count_words(text: str) -> int:
    """Whitespace-separated words: the token count of the fake server and the dry run."""
    return len(text.split())


def prompt_tokens(messages: Any) -> int:
    """The prompt tokens of a chat request: words over every message's text, at least 1."""
    total = 0
    for message in messages or ():
        if isinstance(message, dict):
            total += count_words(content_text(message.get("content")))
    return max(1, total)


def completion_tokens(text: str) -> int:
    return max(1, count_words(text))


def minimal_instance(schema: Any, *, text: str = "x", _root: Any = None, _depth: int = 0) -> Any:
    """A small JSON value satisfying simple JSON schemas.

    Objects get their required properties (all properties when ``required`` is absent),
    strings ``text`` (padded with ``x`` to ``minLength``, cut at ``maxLength``),
    integers/numbers ``1`` (nudged into ``minimum``/``maximum``), booleans ``true``,
    arrays ``[]`` (or ``minItems`` copies of a minimal item).  ``const``, ``enum``,
    ``anyOf``/``oneOf`` (first non-null branch), ``allOf`` and local ``$ref`` are
    understood.
    """
    root = schema if _root is None else _root

    def inner(part: Any) -> Any:
        return minimal_instance(part, text=text, _root=root, _depth=_depth + 1)

    if not isinstance(schema, dict) or _depth > 32:
        return text if schema is not False else None
    if "$ref" in schema:
        return inner(_resolve_ref(root, schema["$ref"]))
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            chosen = next(
                (o for o in options if not (isinstance(o, dict) and o.get("type") == "null")),
                options[0],
            )
            return inner(chosen)
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and all_of:
        return inner(_merge_all_of(schema, all_of, root))
    kind = _kind(schema)
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required")
        names = list(props) if required is None else list(required)
        return {name: inner(props.get(name, {})) for name in names}
    if kind == "array":
        count = int(schema.get("minItems", 0) or 0)
        return [inner(schema.get("items", {})) for _ in range(count)]
    if kind == "string":
        return _string(schema, text)
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    return None


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        if "properties" in schema:
            return "object"
        return "array" if "items" in schema else "string"
    return str(kind)


def _merge_all_of(schema: dict[str, Any], all_of: list[Any], root: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
    for part in all_of:
        if isinstance(part, dict) and "$ref" in part:
            part = _resolve_ref(root, part["$ref"])
        if not isinstance(part, dict):
            continue
        for k, v in part.items():
            if k == "properties":
                merged["properties"] = {**merged.get("properties", {}), **v}
            elif k == "required":
                merged["required"] = [*merged.get("required", []), *v]
            else:
                merged.setdefault(k, v)
    return merged


def _string(schema: dict[str, Any], text: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _STRING_FORMATS:
        return _STRING_FORMATS[fmt]
    shortest = max(1, int(schema.get("minLength", 1) or 1))
    value = text + "x" * max(0, shortest - len(text))
    longest = schema.get("maxLength")
    return value[:longest] if isinstance(longest, int) and longest >= shortest else value


def _number(schema: dict[str, Any], kind: str) -> int | float:
    value: float = 1
    lo = schema.get("minimum", schema.get("exclusiveMinimum"))
    hi = schema.get("maximum", schema.get("exclusiveMaximum"))
    if isinstance(lo, (int, float)) and value < lo:
        value = math.ceil(lo) if kind == "integer" else lo
        if "minimum" not in schema:  # exclusive bound
            value += 1
    if isinstance(hi, (int, float)) and value > hi:
        value = math.floor(hi) if kind == "integer" else hi
        if "maximum" not in schema:
            value -= 1
    return int(value) if kind == "integer" else value


def _resolve_ref(root: Any, ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for token in filter(None, ref[1:].split("/")):
        token = token.replace("~1", "/").replace("~0", "~")
        if not isinstance(node, dict) or token not in node:
            return {}
        node = node[token]
    return node


def reply_text(messages: list[Message], schema: dict[str, Any] | None) -> str:
    """``x`` and eight digits from a digest of the request: short, distinct per request,
    the same for the same request (so a dry run is reproducible)."""
    request = json.dumps([messages, schema], sort_keys=True, ensure_ascii=False, default=str)
    digest = int.from_bytes(hashlib.sha256(request.encode("utf-8")).digest()[:8], "big")
    return f"x {digest % 10**8:08d}"


class CountingChatModel:
    """A ChatModel that answers every request at once with a minimal valid reply and
    reports its usage, for dry runs (:mod:`evoforge.dry_run`).

    Its identity names no real backend, so a response cache never mixes its
    replies with a model's (dry runs run with the cache off anyway).
    """

    def __init__(self) -> None:
        self.calls = 0
        self.usage = Usage()  # over every call, for commands that keep no usage per op

    @property
    def identity(self) -> dict[str, str]:
        return dict(IDENTITY)

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion:
        self.calls += 1
        text = reply_text(messages, schema)
        if schema is not None:
            text = json.dumps(minimal_instance(schema, text=text), ensure_ascii=False)
        usage = Usage(prompt_tokens(messages), completion_tokens(text))
        self.usage += usage
        return Completion(text, usage, model=IDENTITY["model"], finish_reason="stop")

    async def aclose(self) -> None:
        return None


__all__ = ["CountingChatModel", "minimal_instance", "prompt_tokens"]
