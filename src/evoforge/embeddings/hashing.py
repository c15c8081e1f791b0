"""The no-weights embedder: signed feature hashing of words and character n-grams."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence

import numpy as np

from evoforge.embeddings.base import normalise_rows
from evoforge.embeddings.tokens import ENGLISH_STOP_WORDS, is_cjk, word_tokens
from evoforge.errors import ConfigError


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
        return normalise_rows(out)

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
