"""``--embedder SPEC``: the name of an embedder and its argument, to an :class:`Embedder`."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from evoforge.embeddings.base import Embedder
from evoforge.embeddings.hashing import HashingEmbedder
from evoforge.embeddings.local import MiniLMEmbedder
from evoforge.embeddings.openai import OpenAIEmbedder
from evoforge.errors import ConfigError

DEFAULT_SPEC = "minilm"


def _minilm(rest: str, kwargs: dict[str, Any]) -> Embedder:
    if rest:
        raise ConfigError(f"--embedder minilm takes no argument (got {rest!r})")
    return MiniLMEmbedder(**kwargs)


def _hashing(rest: str, kwargs: dict[str, Any]) -> Embedder:
    if rest:
        if not rest.isdigit():
            raise ConfigError(f"--embedder hashing:{rest}: expected hashing:DIM, e.g. hashing:512")
        kwargs = {**kwargs, "dim": int(rest)}
    return HashingEmbedder(**kwargs)


def _openai(rest: str, kwargs: dict[str, Any]) -> Embedder:
    model, _, base_url = rest.partition("@")
    return OpenAIEmbedder(model.strip(), base_url=base_url.strip() or None, **kwargs)


EMBEDDERS: dict[str, Callable[[str, dict[str, Any]], Embedder]] = {
    "minilm": _minilm,
    "hashing": _hashing,
    "openai": _openai,
}


def load_embedder(spec: str = DEFAULT_SPEC, **kwargs: Any) -> Embedder:
    """Build the :class:`Embedder` an ``--embedder`` spec names; ``kwargs`` go to its class."""
    name, _, rest = spec.partition(":")
    factory = EMBEDDERS.get(name.strip())
    if factory is None:
        hint = difflib.get_close_matches(name.strip(), list(EMBEDDERS), n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"--embedder {spec!r}: unknown embedder {name!r}; use one of "
            f"{', '.join(EMBEDDERS)}.{suggestion}"
        )
    try:
        return factory(rest.strip(), dict(kwargs))
    except TypeError as exc:  # an unknown keyword for that embedder
        raise ConfigError(f"--embedder {spec!r}: {exc}") from exc
