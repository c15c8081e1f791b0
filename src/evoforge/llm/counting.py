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

Every reply is short and distinct per request and field (a digest of the messages),
so the model-free screens a real reply must pass see nothing to reject: see
:func:`reply_texts`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Callable
from typing import Any

from evoforge.llm.base import Completion, Message, Usage
from evoforge.prompting import rag_prompt

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


def minimal_instance(
    schema: Any,
    *,
    text: str | Callable[[], str] = "x",
    top_scores: bool = False,
    _root: Any = None,
    _depth: int = 0,
) -> Any:
    """A small JSON value satisfying simple JSON schemas.

    Objects get their required properties (all properties when ``required`` is absent),
    strings ``text`` (or, when it is a function, its next value; padded with ``x`` to
    ``minLength``, cut at ``maxLength``),
    integers/numbers ``1`` (nudged into ``minimum``/``maximum``), booleans ``true``,
    arrays ``[]`` (or ``minItems`` copies of a minimal item).  ``const``, ``enum``,
    ``anyOf``/``oneOf`` (first non-null branch), ``allOf`` and local ``$ref`` are
    understood. An enum gives its first member; with ``top_scores`` an enum of numbers
    gives its highest (a score a judge's threshold lets through).
    """
    root = schema if _root is None else _root

    def inner(part: Any) -> Any:
        return minimal_instance(
            part, text=text, top_scores=top_scores, _root=root, _depth=_depth + 1
        )

    if not isinstance(schema, dict) or _depth > 32:
        return _string({}, text) if schema is not False else None
    if "$ref" in schema:
        return inner(_resolve_ref(root, schema["$ref"]))
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        numbers = [v for v in enum if isinstance(v, int | float) and not isinstance(v, bool)]
        return max(numbers) if top_scores and len(numbers) == len(enum) else enum[0]
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
        item = schema.get("items", {})
        if isinstance(item, dict) and _kind(item) in ("integer", "number") and "enum" not in item:
            # Distinct numbers: a list of references (IN2's pieces) names different ones.
            return [_number(item, _kind(item), 1 + k) for k in range(count)]
        return [inner(item) for _ in range(count)]
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


def _string(schema: dict[str, Any], text: str | Callable[[], str]) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _STRING_FORMATS:
        return _STRING_FORMATS[fmt]
    text = text if isinstance(text, str) else text()
    shortest = max(1, int(schema.get("minLength", 1) or 1))
    value = text + "x" * max(0, shortest - len(text))
    longest = schema.get("maxLength")
    return value[:longest] if isinstance(longest, int) and longest >= shortest else value


def _number(schema: dict[str, Any], kind: str, value: float = 1) -> int | float:
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


# Runs of letters or digits, and each CJK character on its own (a CJK "word" of the
# plain pattern is a whole clause, and word limits count characters there).
_WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+")
QUOTED_WORDS = 6


def source_words(messages: list[Message]) -> list[str]:
    """The last words of the passage a prompt hands the model (a chunk, a segment, a
    context): the paragraph of the last user turn with the most words the system turn
    does not use, as a template's own lines repeat its instructions. A RAG template's
    prompt (the shared preamble, then the contexts, then the task) gives context [1]."""
    rag = rag_prompt(messages)
    if rag is not None and rag[1]:
        return _WORD.findall(rag[1][0])[-QUOTED_WORDS:]
    system = " ".join(content_text(m.get("content")) for m in messages if m.get("role") == "system")
    known = {word.lower() for word in _WORD.findall(system)}
    user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    paragraphs = re.split(r"\n\s*\n", content_text(user.get("content"))) if user else []
    best: list[str] = []
    best_score = -1
    for paragraph in paragraphs:
        words = _WORD.findall(paragraph)
        score = sum(1 for word in words if word.lower() not in known)
        if score > best_score:
            best, best_score = words, score
    return best[-QUOTED_WORDS:]


def reply_texts(messages: list[Message], schema: dict[str, Any] | None) -> Callable[[], str]:
    """Texts for one reply, each distinct per request and per field (a question never
    repeats its answer; exact deduplication keeps replies apart) and the same for the
    same request, so a dry run is reproducible.

    A free-text reply is ``x`` and four groups of digits: five words (a question needs
    four) with a single letter, so it never equals its parent, copies no words of the
    prompt, and is too short for a script check. A field of a structured reply quotes
    :func:`source_words` and one group of digits, so a screen that checks an answer
    against its passage (grounding) finds its words there."""
    request = json.dumps([messages, schema], sort_keys=True, ensure_ascii=False, default=str)
    counter = itertools.count()
    quoted = " ".join(source_words(messages)) if schema is not None else ""

    def text() -> str:
        seed = f"{next(counter)}:{request}".encode()
        digits = f"{int.from_bytes(hashlib.sha256(seed).digest()[:8], 'big') % 10**16:016d}"
        if quoted:
            return f"{quoted} {digits[:8]}"
        return "x " + " ".join(digits[i : i + 4] for i in range(0, 16, 4))

    return text


class CountingChatModel:
    """A ChatModel that answers every request at once with a minimal valid reply and
    reports its usage, for dry runs (:mod:`evoforge.dry_run`). Scores given as an enum
    (DEITA, AlpaGasus) are the highest, so selection keeps what a good model's would;
    a score with no bounds in its schema (the rubric's) is 1, under most thresholds.

    Its identity names no real backend, so a response cache never mixes its
    replies with a model's (dry runs run with the cache off anyway).
    """

    simulated = True  # a dry run's model: commands that also run local compute plan it

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
        texts = reply_texts(messages, schema)
        if schema is None:
            text = texts()
        else:
            instance = minimal_instance(schema, text=texts, top_scores=True)
            text = json.dumps(instance, ensure_ascii=False)
        usage = Usage(prompt_tokens(messages), completion_tokens(text))
        self.usage += usage
        return Completion(text, usage, model=IDENTITY["model"], finish_reason="stop")

    async def complete_text(self, prompt: str, **params: Any) -> Completion:
        """A raw-text completion (Magpie's user turn): a free-text reply, distinct per
        ``seed`` as a sampled turn is, counted as a chat reply is."""
        self.calls += 1
        turn = [{"role": "user", "content": prompt}]
        text = reply_texts([{"role": "user", "content": f"{prompt} {params.get('seed')}"}], None)()
        usage = Usage(prompt_tokens(turn), completion_tokens(text))
        self.usage += usage
        return Completion(text, usage, model=IDENTITY["model"], finish_reason="stop")

    async def chat_template(self) -> dict[str, str] | None:
        return None  # no template of its own: a dry run of Magpie takes --chat-template

    async def aclose(self) -> None:
        return None


__all__ = ["CountingChatModel", "minimal_instance", "prompt_tokens"]
