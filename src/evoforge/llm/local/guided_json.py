"""Schema-guided JSON: the fixed text of a reply, with slots where the model writes.

A 135M model asked for JSON mostly answers in prose, so when
:meth:`~evoforge.llm.local.LocalChatModel.complete` gets a schema of a shape it can
guide, the JSON is produced by construction instead: :class:`_JsonScaffold` turns the
schema into the reply's keys, quotes and brackets (forced) and the slots the model
fills (the values). Pure Python; the token-level walk through a scaffold during
``generate`` is in :mod:`evoforge.llm.local.guided_decoding`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# How schema replies are made, part of the identity (v2: number enums, choice odds).
GUIDANCE_VERSION = "guided-v2"
MIN_FIELD_TOKENS = 24  # the least a guided string value may use of max_tokens


class _Unguided(Exception):
    """A schema shape the scaffold does not cover: the request falls back to a hint."""


@dataclass(frozen=True)
class _TextSlot:
    """A string value the model writes freely, up to the quote that closes it."""

    max_length: int | None = None


@dataclass(frozen=True)
class _ChoiceSlot:
    """An ``enum`` value: the option the model ranks first, never sampled. ``bare``
    options are numbers, kept as their JSON text and written without quotes."""

    options: tuple[str, ...]
    bare: bool = False


_Piece = str | _TextSlot | _ChoiceSlot  # a str is JSON text written as it is

_STRING_KEYWORDS = frozenset(
    {"type", "enum", "minLength", "maxLength", "pattern", "title", "description"}
)
_NUMBER_KEYWORDS = frozenset({"type", "enum", "minimum", "maximum", "title", "description"})
_ARRAY_KEYWORDS = frozenset({"type", "items", "minItems", "maxItems", "title", "description"})
_OBJECT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "title", "description"}
)


@dataclass(frozen=True)
class _JsonScaffold:
    """The fixed text of a JSON reply, with slots where the model writes the values.

    Rather than hoping a small model writes JSON, the reply is written for it: the
    prompt ends with the opening (``{"question": "``), keys, quotes and brackets are
    forced token by token, and the model writes only inside the slots. A string
    slot takes any tokens without a raw quote or control character, must start
    with something visible, and ends with the first token that ends in a quote;
    the model's wish to end the value another way (a newline, ``",``, the end of
    its turn) counts for the bare quote, and a value that used its share of
    ``max_tokens`` is closed where it stands. An enum slot takes the option whose
    next token the model ranks highest, token by token (for options that start
    differently, a comparison of first-token logits); it is never sampled. All
    happens inside one ``generate`` call (:class:`_ScaffoldProcessor`), so the
    prompt is read once and guided requests batch like any other. Each finished
    value is re-escaped with ``json.dumps``, so the text is valid JSON whatever the
    model wrote; the model still chooses the words and the options.

    Guided shapes: an object whose properties (the ``required`` ones in that order,
    else all) are strings (``minLength``, ``maxLength``, ``pattern`` allowed), string
    enums, integer or number enums (``{"type": "integer", "enum": [1, 2, 3]}``,
    written bare; none of the options' JSON may start another's, so ``[1, 10]`` is
    not guided), or arrays of those or of flat objects of those (``turns: [{role:
    enum, content: string}]``). An array gets exactly ``minItems`` items (at least
    one, at most ``maxItems``): the model does not choose the length. Anything else
    (numbers without an enum, nested objects, ``$ref``, unknown keywords):
    :meth:`for_schema` returns ``None``.
    """

    prefix: str  # the opening, appended to the prompt
    pieces: tuple[_Piece, ...]  # what follows it, through the closing brace
    field_tokens: int  # max tokens of each string value

    @classmethod
    def for_schema(cls, schema: dict[str, Any], *, max_tokens: int) -> _JsonScaffold | None:
        try:
            pieces = _merge_literals(_object_pieces(schema, nested=False))
        except _Unguided:
            return None
        texts = sum(isinstance(piece, _TextSlot) for piece in pieces)
        field_tokens = max(MIN_FIELD_TOKENS, max_tokens // texts) if texts else 0
        prefix = pieces[0]
        assert isinstance(prefix, str)
        return cls(prefix=prefix, pieces=tuple(pieces[1:]), field_tokens=field_tokens)

    @property
    def max_new_tokens(self) -> int:
        """A bound on the reply's tokens (a token holds at least one byte), rounded up to
        a multiple of 32 so that similar scaffolds share batches: each guided row ends
        by itself, so a higher bound costs nothing."""
        total = 1  # the end-of-turn token
        for piece in self.pieces:
            if isinstance(piece, str):
                total += len(piece.encode())
            elif isinstance(piece, _TextSlot):
                total += self.field_tokens
            else:
                total += max(len(_json_string_tail(option).encode()) for option in piece.options)
        return -(-total // 32) * 32


def _object_pieces(schema: Any, *, nested: bool) -> list[_Piece]:
    """``{"key": <value>, ...}``; ``nested`` objects (array items) hold only strings."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise _Unguided
    _check_keywords(schema, _OBJECT_KEYWORDS)
    properties = schema.get("properties")
    required = schema.get("required") or []
    if not isinstance(properties, dict) or not properties or not isinstance(required, list):
        raise _Unguided
    if not all(isinstance(key, str) and key in properties for key in required):
        raise _Unguided
    keys = list(dict.fromkeys(required)) or list(properties)
    pieces: list[_Piece] = ["{"]
    for number, key in enumerate(keys):
        pieces.append((", " if number else "") + json.dumps(key, ensure_ascii=False) + ": ")
        value = properties[key]
        if not nested and isinstance(value, dict) and value.get("type") == "array":
            pieces += _array_pieces(value)
        else:
            pieces += _value_pieces(value)
    pieces.append("}")
    return pieces


def _array_pieces(schema: dict[str, Any]) -> list[_Piece]:
    _check_keywords(schema, _ARRAY_KEYWORDS)
    items = schema.get("items")
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if not isinstance(low, int) or not (high is None or isinstance(high, int)):
        raise _Unguided
    count = max(low, 1) if high is None else min(max(low, 1), high)
    if isinstance(items, dict) and items.get("type") == "object":
        item = _object_pieces(items, nested=True)
    else:
        item = _value_pieces(items)
    pieces: list[_Piece] = ["["]
    for number in range(count):
        pieces += [", ", *item] if number else item
    pieces.append("]")
    return pieces


def _value_pieces(schema: Any) -> list[_Piece]:
    """A string's opening quote and slot, or a number enum's bare slot."""
    slot = _slot(schema)
    return [slot] if isinstance(slot, _ChoiceSlot) and slot.bare else ['"', slot]


def _slot(schema: Any) -> _Piece:
    """The slot for a string, a string enum or a number enum; anything else is not guided."""
    if not isinstance(schema, dict):
        raise _Unguided
    if schema.get("type") in ("integer", "number"):
        return _number_choice(schema)
    _check_keywords(schema, _STRING_KEYWORDS)
    kind = schema.get("type", "string" if "enum" in schema else None)
    if kind != "string":
        raise _Unguided
    if "enum" in schema:
        options = schema["enum"]
        if not isinstance(options, list) or not options:
            raise _Unguided
        if not all(isinstance(option, str) for option in options):
            raise _Unguided
        return _ChoiceSlot(tuple(options))
    max_length = schema.get("maxLength")
    if max_length is not None and not isinstance(max_length, int):
        raise _Unguided
    return _TextSlot(max_length)


def _number_choice(schema: dict[str, Any]) -> _ChoiceSlot:
    _check_keywords(schema, _NUMBER_KEYWORDS)
    options = schema.get("enum")
    if not isinstance(options, list) or not options:
        raise _Unguided
    if any(isinstance(o, bool) or not isinstance(o, int | float) for o in options):
        raise _Unguided
    texts = tuple(dict.fromkeys(json.dumps(option) for option in options))
    # An option that starts another would end the choice before the longer one is read.
    if any(a != b and b.startswith(a) for a in texts for b in texts):
        raise _Unguided
    return _ChoiceSlot(texts, bare=True)


def _check_keywords(schema: dict[str, Any], known: frozenset[str]) -> None:
    if not set(schema) <= known:
        raise _Unguided


def _merge_literals(pieces: list[_Piece]) -> list[_Piece]:
    merged: list[_Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def _json_string_tail(value: str) -> str:
    """A value as it follows its opening quote in JSON: escaped, then the closing quote."""
    return json.dumps(value, ensure_ascii=False)[1:]


def _read_json_escapes(raw: str) -> str:
    """``\\n``, ``\\u00e9``... as the model meant them when it wrote JSON escapes."""
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw
