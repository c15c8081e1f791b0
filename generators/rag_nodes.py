"""What ``rag`` asks the model about a chunk before a question is seeded from it.

- :class:`NodeFilter`: Ragas v0.1's node filter (``testset/filters.py`` ``NodeFilter``,
  prompt ``score_context``). The model scores a context from 1 (low) to 3 (high) on
  clarity, depth, structure and relevance (``prompts/rag_context_score.yaml``; the
  schema fixes the four keys and the scale); the context is kept when the mean is at
  least ``threshold`` (1.5, as v0.1). When the reply has token logprobs (asked for;
  the embedded model gives its odds of each option), a score is the expectation
  sum p(k)·k over 1..3, as DEITA reads its scores, rather than the top option alone: a
  small model whose first choice is always "1" is not read as finding every context
  poor. A scenario whose context fails is rejected
  ``low_quality_context``, with the four scores in the detail, and the planner uses the
  chunk no more (v0.1 draws another node).
- :class:`ChunkKeyphrases`: a chunk's keyphrases from the model (Ragas v0.1 extracts
  them with an LLM; ``--keyphrases llm``), or the graph's TF-IDF ones (the default).

Each chunk is asked once per run whichever scenarios use it (:class:`PerChunk`), with a
call seed derived from the chunk, so the reply does not depend on which record asked.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from evoforge.engine.context import derive_rng
from evoforge.engine.runner import RecordContext
from evoforge.errors import ConfigError, RequestRejected
from evoforge.generators.knowledge_graph import CHUNK_PREFIX, KnowledgeGraph
from evoforge.generators.knowledge_graph.keyphrases import KEYPHRASE_SOURCES, ask_keyphrases
from evoforge.io.documents import Chunk
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.validators.base import PASS, Verdict
from evoforge.validators.select.replies import expected_score

T = TypeVar("T")

NODE_FILTER_THRESHOLD = 1.5  # Ragas v0.1: NodeFilter.threshold, on the mean of the four
CRITERIA = ("clarity", "depth", "structure", "relevance")
NODE_FILTER_PARAMS = {"max_tokens": 64, "temperature": 0.0, "logprobs": True, "top_logprobs": 5}


class PerChunk(Generic[T]):
    """One answer per chunk for the whole run: concurrent scenarios on the same chunk
    wait for the first one's call instead of asking again (its error included)."""

    def __init__(self) -> None:
        self._answers: dict[str, asyncio.Future[T]] = {}

    async def get(self, chunk_id: str, ask: Callable[[], Awaitable[T]]) -> T:
        answer = self._answers.get(chunk_id)
        if answer is None:
            answer = asyncio.ensure_future(ask())
            self._answers[chunk_id] = answer
        return await asyncio.shield(answer)


def chunk_seed(ctx: RecordContext, purpose: str, chunk_id: str) -> int:
    """A call seed that depends on the run and the chunk, not on the record asking."""
    return derive_rng(ctx.run_seed, f"{purpose}:{chunk_id}").randrange(2**31)


@dataclass
class NodeFilter:
    """Scores contexts before seeding and keeps those whose mean is at least ``threshold``.

    ``review(chunks, ctx)`` passes, or fails ``low_quality_context`` on the first chunk
    whose mean is below the threshold; ``rejected`` holds the ids of the chunks that
    failed, for the planner. A reply that does not follow the schema raises the
    engine's ``RequestRejected`` (``invalid_json``, ``schema_mismatch``) for every
    scenario on that chunk.
    """

    threshold: float = NODE_FILTER_THRESHOLD
    template: PromptTemplate = field(default_factory=lambda: builtin_template("rag_context_score"))
    rejected: set[str] = field(default_factory=set, init=False, repr=False)
    _scores: PerChunk[dict[str, float]] = field(default_factory=PerChunk, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 1.0 <= self.threshold <= 3.0:
            raise ConfigError(
                f"node filter: the threshold is on the 1-3 scale, got {self.threshold}"
            )

    async def scores(self, chunk: Chunk, ctx: RecordContext) -> dict[str, float]:
        """``{criterion: 1..3}`` of ``chunk`` (expected scores with logprobs), asked once
        per run."""

        async def ask() -> dict[str, float]:
            seed = chunk_seed(ctx, "node_filter", chunk.id)
            reply = await ctx.ask(
                self.template, op="node_filter", params={**NODE_FILTER_PARAMS, "seed": seed},
                context=chunk.text,
            )  # fmt: skip
            parsed = reply.parsed if isinstance(reply.parsed, dict) else {}
            try:
                chosen = {name: int(parsed[name]) for name in CRITERIA}
            except (KeyError, TypeError, ValueError):
                raise RequestRejected(
                    "schema_mismatch", f"{self.template.id}: no score for each of {CRITERIA}"
                ) from None
            scores = {}
            for name, value in chosen.items():
                at = re.search(rf'"{name}"\s*:\s*"?(\d)', reply.text)
                offset = at.start(1) if at else None
                expected = expected_score(reply.logprobs, reply.text, offset, float(value))
                scores[name] = round(min(3.0, max(1.0, expected)), 2)
            return scores

        return await self._scores.get(chunk.id, ask)

    async def review(self, chunks: list[Chunk], ctx: RecordContext) -> Verdict:
        for number, chunk in enumerate(chunks, start=1):
            scores = await self.scores(chunk, ctx)
            mean = sum(scores.values()) / len(scores)
            if mean < self.threshold:
                self.rejected.add(chunk.id)
                shown = ", ".join(f"{name} {value:g}" for name, value in scores.items())
                where = f"{chunk.path}:{chunk.start}-{chunk.end}"
                return Verdict.failed(
                    "low_quality_context",
                    f"context {number} ({where}) scored {shown}: mean {mean:.2f} < "
                    f"{self.threshold}",
                )
        return PASS

    def config(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "prompt": self.template.ref}


@dataclass
class ChunkKeyphrases:
    """A chunk's keyphrases: the graph's TF-IDF ones (``tfidf``), or the model's
    (``llm``, asked once per chunk; when the call fails, the TF-IDF ones, and the
    sample's ``meta.keyphrase_fallback`` says why)."""

    graph: KnowledgeGraph
    source: str = "tfidf"
    _asked: PerChunk[list[str]] = field(default_factory=PerChunk, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.source not in KEYPHRASE_SOURCES:
            raise ConfigError(
                f"--keyphrases: {self.source!r}; give one of {', '.join(KEYPHRASE_SOURCES)}"
            )

    def tfidf(self, chunk_id: str) -> list[str]:
        return list(self.graph.graph.nodes[CHUNK_PREFIX + chunk_id].get("keyphrases") or [])

    async def of(self, chunk: Chunk, ctx: RecordContext) -> tuple[list[str], str | None]:
        """(keyphrases, why the TF-IDF ones stand in for the model's, or ``None``)."""
        if self.source == "tfidf":
            return self.tfidf(chunk.id), None

        async def ask() -> list[str]:
            return await ask_keyphrases(
                ctx, chunk.text, seed=chunk_seed(ctx, "keyphrases", chunk.id)
            )

        try:
            phrases = await self._asked.get(chunk.id, ask)
        except RequestRejected as exc:
            return self.tfidf(chunk.id), f"{exc.reason}: {exc}"
        if not phrases:
            return self.tfidf(chunk.id), "the model gave no keyphrase"
        return phrases, None
