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

The parts live one idea a module: ``tokenizers``, ``segments``, ``corpus``,
``decontamination`` and ``needles`` (the :class:`Needle` type and
:func:`~evoforge.generators.needles.place_needles`, shared with VaL probing); this
module holds the filler pool and the assembly, and re-exports the rest.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from evoforge.errors import ConfigError
from evoforge.generators.corpus import iter_corpus
from evoforge.generators.decontamination import DEFAULT_NGRAM, Decontaminator
from evoforge.generators.needles import Needle, place_needles
from evoforge.generators.segments import (
    DEFAULT_SEGMENT_TOKENS,
    SENTENCE_END_WINDOW,
    Segment,
    segment_document,
)
from evoforge.generators.tokenizers import (
    HFTokenizer,
    RegexTokenizer,
    Tokenizer,
    default_tokenizer,
    load_tokenizer,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MIN_TOKENS",
    "DEFAULT_NGRAM",
    "DEFAULT_SEGMENT_TOKENS",
    "SENTENCE_END_WINDOW",
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


# The paper's context lengths: uniform over 4K-32K tokens.
DEFAULT_MIN_TOKENS = 4096
DEFAULT_MAX_TOKENS = 32768


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
    placement = place_needles(
        needles, fillers, separator=separator, separator_tokens=sep_tokens, rng=rng
    )
    return Assembled(
        context=placement.context,
        context_tokens=placement.context_tokens,
        needles=placement.needles,
        filler_docs=tuple(dict.fromkeys(filler.doc_id for filler in placement.fillers)),
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
