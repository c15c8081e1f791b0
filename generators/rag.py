"""RAG evaluation sets: documents -> chunks -> knowledge graph -> questions with provenance.

The pipeline follows Ragas' test-set generator (v0.1 evolutions; v0.2
knowledge-graph scenarios) and fixes what its users complain about:

1. Documents are loaded and chunked with exact character offsets
   (``evoforge.io.documents``), then linked in a knowledge graph
   (``knowledge_graph``): ``part_of``, ``next``, top-k embedding similarity and
   keyphrase overlap.
2. A planner gives exactly N samples across the scenario mix (default simple
   0.4, reasoning 0.2, multi_context 0.2, conditional 0.1, conversational 0.1,
   largest-remainder counts) and spreads them over the documents round-robin.
   A multi-context scenario takes two chunks connected in the graph.
3. Each scenario first scores its contexts (Ragas v0.1's node filter,
   ``rag_nodes.NodeFilter``: clarity, depth, structure, relevance 1-3, kept at a
   mean >= 1.5; ``low_quality_context`` otherwise), then asks a seed question and
   reference answer from its chunk around one of its keyphrases (TF-IDF, or the
   model's with ``keyphrases="llm"``; ``prompts/rag_seed_question.yaml``),
   rewrites it for its type with the evolvers' ``QuestionRewrite``, compresses a
   reasoning, multi_context or conditional question (v0.1's ``compress_question``),
   and passes the critics (self-contained, grounded, answerable, and the evolution
   filter: information gain of the seed versus the final, compressed question),
   with one rewrite from the critics' feedback before a rejection.
4. Samples that fail are replaced in further passes from unused chunks, until
   each type has its count or the corpus has nothing left; duplicates and any
   surplus are dropped at the end with their reasons. The output has exactly N
   samples, or fewer with the shortfall and its causes in the manifest.

Every sample carries ``reference_contexts`` (verbatim chunk texts) and
``reference_context_ids`` (``doc_id``, ``path``, ``start``, ``end``) so that
``source[start:end] == context`` can be checked by eye.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from evoforge.engine.final_write import RecordSelector
from evoforge.engine.runner import RecordContext, Rejection, Result
from evoforge.evolvers.base import OpNames, exact_mix, parse_weights
from evoforge.evolvers.ragas_rewrites import COMPRESSED_OPS, QuestionRewrite, compress_question
from evoforge.generators.knowledge_graph import KnowledgeGraph
from evoforge.generators.rag_nodes import ChunkKeyphrases, NodeFilter
from evoforge.io.documents import Chunk
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.critics import CriticPanel
from evoforge.validators.heuristics import language_drift, words

# Besides these, a plugin's question rewrite (an evolver of family "rewrite") is a
# scenario: --mix names it, and QuestionRewrite runs it on a simple question.
SCENARIOS = OpNames(
    "rewrite", ("simple", "reasoning", "multi_context", "conditional", "conversational")
)
DEFAULT_MIX = "simple=0.4,reasoning=0.2,multi_context=0.2,conditional=0.1,conversational=0.1"

PERSONAS = (
    "a curious high-school student meeting the topic for the first time",
    "a domain expert checking a precise detail",
    "a journalist gathering facts for an article",
    "a non-native speaker who writes short, simple questions",
    "a teacher preparing a lesson",
    "a busy professional who wants the practical consequence",
    "a sceptic who asks how we know something",
    "a hobbyist comparing this with something they already know",
)
STYLES = {
    "formal": "formal and complete, as in a written request",
    "web_search": "terse like a web-search query, key terms only, no question mark needed",
    "misspelled": "casual, with one or two realistic spelling mistakes",
    "conversational": "casual and friendly, as said aloud to a colleague",
}


def parse_mix(spec: str | None) -> dict[str, float]:
    return parse_weights(spec or DEFAULT_MIX, SCENARIOS, flag="--mix")


@dataclass(frozen=True)
class Scenario:
    """One planned sample: its type, the chunks it is built from, and its phrasing."""

    id: str
    kind: str
    chunk_ids: tuple[str, ...]
    persona: str = ""
    style: str = ""

    def as_record(self) -> Record:
        fields: dict[str, Any] = {"scenario": self.kind, "chunk_ids": list(self.chunk_ids)}
        if self.persona:
            fields["persona"] = self.persona
        if self.style:
            fields["style"] = self.style
        return Record(kind="rag", fields=fields, id=self.id)


class ScenarioPlanner:
    """Plans scenarios over a knowledge graph, spreading them across documents.

    Documents are visited round-robin in a seeded order; each takes its next
    chunk not yet used for that scenario type. A multi-context scenario pairs
    the chunk with its strongest ``similar`` or ``keyphrase`` neighbour (``next``
    as a fallback) whose pair is unused. The planner remembers what it gave out,
    so a later pass (to replace failed samples) only uses fresh material, and
    never a chunk in ``excluded`` (the node filter's rejects, filled as it runs).
    """

    def __init__(
        self,
        graph: KnowledgeGraph,
        *,
        seed: int = 0,
        personas: Sequence[str] = (),
        styles: Sequence[str] = (),
        excluded: set[str] | None = None,
    ) -> None:
        self.graph = graph
        self.excluded = excluded if excluded is not None else set()
        self.rng = random.Random(seed)
        docs = list(graph.documents())
        self.rng.shuffle(docs)
        self.docs = docs
        self.personas = list(personas)
        self.styles = list(styles)
        self._cursor: dict[str, int] = defaultdict(int)  # per kind: next document to visit
        self._used: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        self._planned = 0
        self.exhausted: set[str] = set()

    def plan(self, counts: dict[str, int], pass_no: int) -> list[Scenario]:
        scenarios = []
        for kind in [*SCENARIOS, *(kind for kind in counts if kind not in SCENARIOS)]:
            for k in range(counts.get(kind, 0)):
                chunk_ids = self._next_chunks(kind)
                if chunk_ids is None:
                    self.exhausted.add(kind)
                    break
                i = self._planned
                self._planned += 1
                scenarios.append(
                    Scenario(
                        id=f"{kind}-p{pass_no}-{k:05d}",
                        kind=kind,
                        chunk_ids=chunk_ids,
                        persona=self.personas[i % len(self.personas)] if self.personas else "",
                        style=self.styles[i % len(self.styles)] if self.styles else "",
                    )
                )
        return scenarios

    def _next_chunks(self, kind: str) -> tuple[str, ...] | None:
        for _ in range(len(self.docs)):
            doc = self.docs[self._cursor[kind] % len(self.docs)]
            self._cursor[kind] += 1
            for chunk in self.graph.chunks_of(doc):
                pick = self._pick(kind, chunk)
                if pick is not None:
                    self._used[kind].add(pick)
                    return pick
        return None

    def _pick(self, kind: str, chunk: Chunk) -> tuple[str, ...] | None:
        used = self._used[kind]
        if chunk.id in self.excluded:
            return None
        if kind != "multi_context":
            key = (chunk.id,)
            return None if key in used else key
        for kinds in (("similar", "keyphrase"), ("next",)):
            for other, _, _ in self.graph.neighbours(chunk.id, kinds=kinds):
                key = (chunk.id, other)
                if other in self.excluded:
                    continue
                if key not in used and (other, chunk.id) not in used:
                    return key
        return None


def _provenance(chunk: Chunk) -> dict[str, Any]:
    return {"doc_id": chunk.doc_id, "path": chunk.path, "start": chunk.start, "end": chunk.end}


@dataclass
class RagSampleTask:
    """Turns one scenario into one sample, or a rejection with its reason (a Task).

    Reason codes of its own: ``no_chunks`` (the graph lost the scenario's chunk),
    ``low_quality_context`` (the node filter), ``language_drift`` (the question is
    not in the language of its source); the rewrite's and the critics' codes pass
    through. ``node_filter`` ``None`` and ``compress`` False turn those Ragas v0.1
    steps off; ``keyphrases`` is ``"tfidf"`` (the graph's) or ``"llm"``.
    """

    graph: KnowledgeGraph
    critics: CriticPanel | None = field(default_factory=CriticPanel)
    max_words: dict[str, int] | None = None
    seed_template: PromptTemplate = field(
        default_factory=lambda: builtin_template("rag_seed_question")
    )
    node_filter: NodeFilter | None = field(default_factory=NodeFilter)
    compress: bool = True
    keyphrases: str = "tfidf"
    # Model-free checks of the finished sample, run before the critics' model calls
    # (issue 19, cheapest first): (reason, step, check(record_json) -> Verdict).
    before_critics: tuple[tuple[str, str, Any], ...] = ()
    _keyphrases: ChunkKeyphrases = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._keyphrases = ChunkKeyphrases(self.graph, self.keyphrases)

    def group_key(self, scenario: Record) -> str:
        """The scenario's first chunk. The engine runs the samples over one chunk one
        after another (and ``--executor ray`` deals them into one shard), where the
        planner's order, by scenario type, put them about 0.4 n apart: every call of a
        sample opens with its first chunk, so a provider's prefix cache still holds it
        (issue 19). Their positions, and so the output and what the selector keeps,
        stay the planner's."""
        return str(scenario["chunk_ids"][0])

    async def __call__(self, scenario: Record, ctx: RecordContext) -> Result:
        chunks = [self.graph.chunk(cid) for cid in scenario["chunk_ids"]]
        kind = scenario["scenario"]
        if self.node_filter is not None:
            verdict = await self.node_filter.review(chunks, ctx)
            if not verdict.ok:
                return Result.reject(
                    scenario, str(verdict.reason), verdict.detail, step="generator.rag",
                    field="$.chunk_ids",
                )  # fmt: skip
        keyphrases, fallback = await self._keyphrases.of(chunks[0], ctx)
        keyphrase = ctx.rng(0).choice(keyphrases) if keyphrases else ""
        persona = scenario.get("persona", "")
        style_name = scenario.get("style", "")
        completion = await ctx.ask(
            self.seed_template,
            op="rag_seed",
            context=chunks[0].text,
            keyphrase=keyphrase,
            persona=persona,
            style=STYLES.get(style_name, style_name),
        )
        question = completion.parsed["question"].strip()
        answer = completion.parsed["answer"].strip()
        fields: dict[str, Any] = {
            "user_input": question,
            "reference": answer,
            "reference_contexts": [chunk.text for chunk in chunks],
            "reference_context_ids": [_provenance(chunk) for chunk in chunks],
            "synthesizer_name": kind,
        }
        if persona:
            fields["persona"] = persona
        if style_name:
            fields["style"] = style_name
        meta: dict[str, Any] = {"seed_question": question, "keyphrase": keyphrase}
        if fallback:
            meta["keyphrase_fallback"] = fallback
        sample = Record(
            kind="rag",
            fields=fields,
            id=scenario.id,
            lineage=[ctx.step("rag_seed", self.seed_template)],
            meta=meta,
        )
        drift = language_drift(chunks[0].text, question)
        if not drift.ok:
            return Result.reject(
                sample, "language_drift", drift.detail, step="generator.rag", field="$.user_input"
            )
        if kind != "simple":
            limit = (self.max_words or {}).get(kind)
            outcome = await QuestionRewrite(kind, max_words=limit).evolve(sample, ctx, 1)
            if isinstance(outcome, Rejection):
                return Result(rejections=[outcome])
            if self.compress and kind in COMPRESSED_OPS:
                outcome = await compress_question(outcome, ctx, seed=question)
                if isinstance(outcome, Rejection):
                    return Result(rejections=[outcome])
            sample = outcome
            sample.meta["seed_question"] = question
        for reason, step, check in self.before_critics if self.critics is not None else ():
            verdict = check(sample.to_json())
            if not verdict.ok:  # the critics would be asked about a sample dropped anyway
                return Result.reject(sample, reason, verdict.detail, step=step)
        if self.critics is not None:
            reviewed = await self.critics.review(sample, ctx)
            if isinstance(reviewed, Rejection):
                return Result(rejections=[reviewed])
            sample = reviewed
        return Result.accept(sample)


def _question_text(record: dict[str, Any]) -> str:
    question = record["user_input"]
    if isinstance(question, list):
        return " ".join(turn["content"] for turn in question if turn["role"] == "user")
    return question


def _normalise(text: str) -> str:
    return " ".join(w.lower() for w in words(text))


class RagSelector(RecordSelector):
    """What is written at the end: per-type quotas, no duplicate questions, coverage.

    In input order, a sample is dropped as ``duplicate`` when its question has
    the same words as a kept one, or shares at least ``near`` of its word set
    (Jaccard), and as ``surplus`` once its type has its count.
    """

    def __init__(self, counts: dict[str, int], *, near: float = 0.85) -> None:
        self.counts = counts
        self.near = near
        self.kept: Counter[str] = Counter()
        self.coverage: Counter[str] = Counter()
        self._seen: dict[str, str] = {}
        self._sets: list[tuple[frozenset[str], str]] = []

    def drop(self, record: dict[str, Any]) -> tuple[str, str] | None:
        kind = record.get("synthesizer_name", "")
        text = _normalise(_question_text(record))
        if text in self._seen:
            return "duplicate", f"same question as {self._seen[text]}"
        tokens = frozenset(text.split())
        for other, other_id in self._sets:
            union = len(tokens | other)
            if union and len(tokens & other) / union >= self.near:
                return "duplicate", f"near-duplicate of {other_id} (Jaccard >= {self.near})"
        if self.kept[kind] >= self.counts.get(kind, 0):
            return "surplus", f"{kind} already has its {self.counts.get(kind, 0)} samples"
        self.kept[kind] += 1
        self._seen[text] = record["id"]
        self._sets.append((tokens, record["id"]))
        for ref in record.get("reference_context_ids") or []:
            self.coverage[ref.get("path", ref["doc_id"])] += 1
        return None


def deficits(counts: dict[str, int], kept: Counter[str], *, factor: float = 1.0) -> dict[str, int]:
    """What each type still needs, scaled by ``factor`` (> 1 plans a margin for failures)."""
    need = {kind: counts[kind] - kept.get(kind, 0) for kind in counts}
    return {kind: math.ceil(n * factor) for kind, n in need.items() if n > 0}


def plan_counts(n: int, mix: dict[str, float], seed: int) -> dict[str, int]:
    return exact_mix(n, mix, seed)
