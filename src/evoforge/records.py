"""Records: one sample each, flat on disk, validated against its kind's JSON Schema.

On disk a record is one flat JSON object: ``id``, ``kind``, the payload fields of
its kind (``instruction``/``input``/``output`` for ``instruction``, ...),
``parent_id``, ``lineage`` and ``meta``. That is what ``datasets``, pandas and
Ragas load without adapters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import fastjsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from referencing import Registry, Resource

from evoforge.errors import ConfigError

KINDS = ("instruction", "qa", "rag", "in2", "chat", "pam")
_ENVELOPE = ("id", "kind", "parent_id", "lineage", "meta")


@dataclass
class Record:
    kind: str
    fields: dict[str, Any]
    id: str
    parent_id: str | None = None
    lineage: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"id": self.id, "kind": self.kind}
        data.update(self.fields)
        data["parent_id"] = self.parent_id
        data["lineage"] = self.lineage
        data["meta"] = self.meta
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        fields = {k: v for k, v in data.items() if k not in _ENVELOPE}
        return cls(
            kind=data["kind"],
            fields=fields,
            id=data["id"],
            parent_id=data.get("parent_id"),
            lineage=list(data.get("lineage") or []),
            meta=dict(data.get("meta") or {}),
        )

    def derive(self, step: dict[str, Any], *, suffix: str, **changes: Any) -> Record:
        """A child record: same kind, ``changes`` applied, ``step`` appended to lineage.

        The child's id is the parent's id plus ``suffix``, so it is stable across runs.
        """
        return Record(
            kind=self.kind,
            fields={**self.fields, **changes},
            id=f"{self.id}/{suffix}",
            parent_id=self.id,
            lineage=[*self.lineage, step],
            meta=dict(self.meta),
        )


@dataclass(frozen=True)
class SampleFields:
    """Where a question-answering kind keeps its question, answer and contexts."""

    question: str
    answer: str
    contexts: str
    synthesizer: str | None = None  # names the op or scenario that made the sample
    context_ids: str | None = None  # provenance of each context, parallel to contexts


SAMPLE_FIELDS = {
    "qa": SampleFields("question", "answer", "contexts"),
    "rag": SampleFields(
        "user_input",
        "reference",
        "reference_contexts",
        synthesizer="synthesizer_name",
        context_ids="reference_context_ids",
    ),
}


def sample_fields(kind: str, *, who: str) -> SampleFields:
    """The field layout of a qa or rag record; ``who`` names the caller in the error."""
    try:
        return SAMPLE_FIELDS[kind]
    except KeyError:
        raise ConfigError(f"{who} work on qa and rag records, not {kind!r}") from None


def content_id(fields: dict[str, Any], *, prefix: str = "") -> str:
    """A stable id from a record's content (12 hex digits of SHA-256)."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, ensure_ascii=False).encode())
    return f"{prefix}{digest.hexdigest()[:12]}"


@cache
def _registry() -> Registry:
    registry = Registry()
    for name in ("common", *KINDS):
        schema = json.loads(
            resources.files("evoforge.schemas").joinpath(f"{name}.json").read_text("utf-8")
        )
        registry = registry.with_resource(schema["$id"], Resource.from_contents(schema))
        registry = registry.with_resource(f"{name}.json", Resource.from_contents(schema))
    return registry


@cache
def schema_for(kind: str) -> dict[str, Any]:
    """The JSON Schema of a record kind, as shipped in ``evoforge/schemas``."""
    if kind not in KINDS:
        raise ConfigError(f"unknown record kind {kind!r}; expected one of: {', '.join(KINDS)}")
    return _registry().contents(f"{kind}.json")


def _inline_refs(node: Any, resolver: Any) -> Any:
    """The schema with every ``$ref`` replaced by its target.

    Resolving references through the registry on every record costs more than
    the validation itself; the shipped schemas are small and not recursive.
    """
    if isinstance(node, dict):
        if "$ref" in node:
            resolved = resolver.lookup(node["$ref"])
            return _inline_refs(resolved.contents, resolved.resolver)
        return {key: _inline_refs(value, resolver) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline_refs(item, resolver) for item in node]
    return node


@cache
def _validator(kind: str) -> Draft202012Validator:
    schema = schema_for(kind)
    resolver = _registry().resolver(base_uri=schema["$id"])
    return Draft202012Validator(_inline_refs(schema, resolver))


@cache
def _fast_check(kind: str) -> Callable[[Any], Any]:
    """A compiled check (fastjsonschema, ~2 us a record against ~60 us) for the common,
    valid case; ``jsonschema`` explains the invalid ones."""
    schema = {k: v for k, v in _validator(kind).schema.items() if k not in ("$schema", "$id")}
    return fastjsonschema.compile(schema)


def schema_error(data: Any, kind: str) -> str | None:
    """``None`` if ``data`` is a valid record of ``kind``, else the best error with its path.

    The message reads like ``at $.lineage[0].op: 3 is not of type 'string'``.
    """
    try:
        _fast_check(kind)(data)
        return None
    except fastjsonschema.JsonSchemaException:
        pass
    error = best_match(_validator(kind).iter_errors(data))
    if error is None:
        return None
    return f"at {json_path(error.absolute_path)}: {error.message}"


def json_path(path: Any) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out
