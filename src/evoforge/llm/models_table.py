"""The table of known models, ``models.yaml`` (package data): facts per model name.

Each entry has ``context_window`` (tokens, prompt and output together), the ``date``
it was read and its ``source``. :func:`lookup` finds a model's entry: the exact name
(case-insensitive), else the longest entry the name starts with where the rest begins
with ``-``, ``:``, ``@`` or ``_`` (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``,
``llama3.1:8b`` -> ``llama3.1``, but ``gpt-4.5`` is not ``gpt-4``), else the same for
the name after a provider's ``org/`` prefix (``openai/gpt-4o`` -> ``gpt-4o``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from evoforge.errors import ConfigError

_BOUNDARIES = ("-", ":", "@", "_")
# Keys of a server's ``GET /models`` entry that give its context window, in order: vLLM,
# OpenRouter and others, Groq, LM Studio.
SERVER_WINDOW_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length")


@dataclass(frozen=True)
class ModelFacts:
    """One entry of ``models.yaml``; ``name`` is the entry's key, ``raw`` all its fields."""

    name: str
    context_window: int | None
    date: str
    source: str
    raw: dict[str, Any]


@functools.lru_cache(maxsize=1)
def load_table() -> dict[str, ModelFacts]:
    """Every entry of the packaged ``models.yaml``, by lower-cased name (read on first
    use: importing this module costs no YAML parser)."""
    from importlib import resources

    import yaml

    text = resources.files("evoforge.llm").joinpath("models.yaml").read_text(encoding="utf-8")
    return parse_table(yaml.safe_load(text), "models.yaml")


def parse_table(data: Any, where: str) -> dict[str, ModelFacts]:
    """The entries of a loaded ``models.yaml`` document, checked field by field."""
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(f"{where}: expected a mapping 'models:' of model name -> facts")
    table: dict[str, ModelFacts] = {}
    for name, entry in models.items():
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: models.{name}: expected a mapping")
        window = entry.get("context_window")
        if window is not None and (not isinstance(window, int) or window <= 0):
            raise ConfigError(f"{where}: models.{name}.context_window: expected a positive int")
        for field in ("date", "source"):
            if not isinstance(entry.get(field), str) or not entry[field]:
                raise ConfigError(f"{where}: models.{name}.{field}: expected a non-empty string")
        table[str(name).lower()] = ModelFacts(
            str(name), window, entry["date"], entry["source"], dict(entry)
        )
    return table


def lookup(model: str, table: dict[str, ModelFacts] | None = None) -> ModelFacts | None:
    """The entry for ``model`` (see the module's doc for the order), or None."""
    table = load_table() if table is None else table
    name = model.strip().lower()
    found = _match(name, table)
    if found is None and "/" in name:
        found = _match(name.rsplit("/", 1)[1], table)
    return found


def _match(name: str, table: dict[str, ModelFacts]) -> ModelFacts | None:
    if name in table:
        return table[name]
    best: str | None = None
    for key in table:
        if (
            len(name) > len(key)
            and name.startswith(key)
            and name[len(key)] in _BOUNDARIES
            and (best is None or len(key) > len(best))
        ):
            best = key
    return table[best] if best is not None else None


def context_window(model: str) -> int | None:
    """The known context window of ``model`` in tokens; None for a model not in the table."""
    facts = lookup(model)
    return facts.context_window if facts is not None else None


def window_from_models_list(body: Any, model: str) -> int | None:
    """The context window a server's ``GET /models`` body gives for ``model``, if any."""
    entries = body.get("data") if isinstance(body, dict) else None
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or entry.get("id") != model:
            continue
        for key in SERVER_WINDOW_KEYS:
            value = entry.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None
