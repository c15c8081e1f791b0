"""IN2 training data: long contexts whose answers hide in one or a few short segments.

An et al., 2024, "Make Your LLM Fully Utilize the Context" (arXiv 2404.16811;
FILM-7B). Defaults kept from the paper: 128-token segments; context lengths
uniform over 4K-32K tokens; needles at uniformly random positions (needed
segments and fillers are shuffled jointly); about 10% of QA samples keep only
the original document; the mix fine-grained 63%, integration 17%, short 9%,
general instruction data 11%; documents sharing a 10-gram with an evaluation
example are dropped (decontamination, ``decontamination.Decontaminator``).

- ``fine_grained``: one random segment -> one QA that needs only it
  (``prompts/in2_fine_grained.yaml``); context = that segment + fillers from
  other documents.
- ``integration``: a run of a document's segments (at most ``MAX_PIECES``) shown
  as "# Piece k:" -> one QA that needs at least two pieces
  (``prompts/in2_integration.yaml``); every piece shown is a needle, so the
  context holds all the evidence the answer may have used (the paper places the
  whole document; the model's list of pieces is kept in ``meta["pieces"]``); the
  needles and the fillers are shuffled jointly.
- ``short``: a fine-grained QA whose context is only its original document.
- ``general``: instruction data passed through (``--general FILE``).

``--format plain`` writes the ``context / question / answer`` view.

A record's ``messages`` are the paper's training prompt (user: instruction,
context and question; assistant: the answer); ``context_start`` and
``context_chars`` locate the context inside the user message, and each needle's
``char_start``/``char_end`` (and token offsets) are relative to the context, so
``context[char_start:char_end] == needle`` can be checked from the output alone.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from evoforge.engine.final_write import RecordSelector
from evoforge.engine.runner import RecordContext, Result
from evoforge.errors import ConfigError
from evoforge.evolvers.base import parse_weights
from evoforge.generators.in2_assembly import FillerPool, assemble, sample_target_tokens
from evoforge.generators.needles import Needle
from evoforge.generators.segments import Segment, segment_document
from evoforge.generators.tokenizers import Tokenizer
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.critics.screens import SelfContained, WellFormed
from evoforge.validators.heuristics import empty_answer, language_drift

SAMPLE_TYPES = ("fine_grained", "integration", "short", "general")
PAPER_MIX = {"fine_grained": 0.63, "integration": 0.17, "short": 0.09, "general": 0.11}
TRAINING_INSTRUCTION = (
    "Below is a context and an instruction. Based on the information provided in the "
    "context, write a response for the instruction."
)
MAX_PIECES = 8  # pieces of one document shown for an integration question


def training_prompt(context: str, question: str) -> tuple[str, int]:
    """The paper's training prompt (without the model's [INST] chat tags, which the
    chat template adds) and where the context starts in it."""
    head = f"{TRAINING_INSTRUCTION}\n\n### Context:\n"
    return f"{head}{context}\n\n### Instruction:\n{question}", len(head)


def mix_weights(spec: str | None, *, has_general: bool) -> dict[str, float]:
    """The paper's mix, or ``spec``; without general data its share is spread over the rest."""
    if spec:
        weights = parse_weights(spec, SAMPLE_TYPES, flag="--mix")
    else:
        weights = dict(PAPER_MIX)
    if not has_general:
        weights["general"] = 0.0
    return weights


class _Reservoir:
    """A seeded reservoir sample of at most ``capacity`` items from a stream (Algorithm R)."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        self.capacity = capacity
        self.items: list[Any] = []
        self.seen = 0
        self._rng = rng

    def offer(self, item: Any) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
            return
        j = self._rng.randrange(self.seen)
        if j < self.capacity:
            self.items[j] = item


@dataclass
class SourceSampler:
    """One streaming pass over the corpus: segment each document, feed the filler
    pool, and keep seeded reservoirs of candidate sources per sample type (``spare``
    times what the plan needs, so failed samples can be replaced). Memory is bounded
    by the pool's and the reservoirs' capacities, not by the corpus."""

    counts: dict[str, int]
    tokenizer: Tokenizer
    segment_tokens: int = 128
    max_short_tokens: int = 32768
    pool_capacity: int = 20000
    seed: int = 0
    spare: float = 2.0
    pool: FillerPool = field(init=False)
    documents: int = 0

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)
        self.pool = FillerPool(self.pool_capacity, seed=self.seed)
        self._reservoirs = {
            kind: _Reservoir(max(1, int(self.counts.get(kind, 0) * self.spare)), rng)
            for kind in ("fine_grained", "integration", "short")
        }
        self._rng = rng

    def consume(self, doc_id: str, text: str) -> None:
        segments = segment_document(doc_id, text, self.tokenizer, self.segment_tokens)
        if not segments:
            return
        self.documents += 1
        for segment in segments:
            self.pool.add(segment)
            self._reservoirs["fine_grained"].offer((segment,))
        if len(segments) >= 2:
            start = self._rng.randrange(max(1, len(segments) - MAX_PIECES + 1))
            self._reservoirs["integration"].offer(tuple(segments[start : start + MAX_PIECES]))
        total = sum(segment.tokens for segment in segments)
        if total <= self.max_short_tokens:
            needle = segments[self._rng.randrange(len(segments))]
            self._reservoirs["short"].offer((needle, text))

    def candidates(self, kind: str) -> list[Any]:
        # Reservoir order depends on arrival; sort by id so plans are stable.
        items = self._reservoirs[kind].items
        return sorted(items, key=lambda item: (item[0].doc_id, item[0].index))


class In2Planner:
    """Scenario records for each type from the sampler's candidates, fresh ones first."""

    def __init__(self, sampler: SourceSampler, general: list[Record], seed: int = 0) -> None:
        self.sampler = sampler
        self.general = general
        self._next: Counter[str] = Counter()
        self.exhausted: set[str] = set()
        self._rng = random.Random(seed)
        self._order = {
            kind: self._shuffled(sampler.candidates(kind))
            for kind in ("fine_grained", "integration", "short")
        }

    def _shuffled(self, items: list[Any]) -> list[Any]:
        items = list(items)
        self._rng.shuffle(items)
        return items

    def plan(self, counts: dict[str, int]) -> list[Record]:
        records = []
        for kind in SAMPLE_TYPES:
            for _ in range(counts.get(kind, 0)):
                record = self._one(kind)
                if record is None:
                    self.exhausted.add(kind)
                    break
                records.append(record)
        return records

    def _one(self, kind: str) -> Record | None:
        k = self._next[kind]
        pool = self.general if kind == "general" else self._order[kind]
        if k >= len(pool):
            return None
        self._next[kind] += 1
        record_id = f"{kind}-{k:06d}"
        if kind == "general":
            source = pool[k]
            fields = {"sample_type": kind, "general": source.to_json()}
        elif kind == "short":
            needle, text = pool[k]
            fields = {"sample_type": kind, "segments": [asdict(needle)], "document": text}
        else:
            fields = {"sample_type": kind, "segments": [asdict(s) for s in pool[k]]}
        return Record(kind="in2", fields=fields, id=record_id)


def _segments(item: Record) -> list[Segment]:
    return [Segment(**data) for data in item["segments"]]


@dataclass
class In2Task:
    """One planned scenario -> one IN2 record (a Task). LLM for the QA, none for assembly.

    Reason codes: ``not_self_contained`` ("based on the provided context", "the
    text" ... in the question), ``not_a_question`` (a title, or the answer
    repeated), ``empty_answer``, ``language_drift`` (the question left the
    segment's language), ``too_few_pieces`` (an integration answer that does not
    name two or more valid pieces), ``no_filler`` (the pool could not supply
    fillers from other documents), plus the engine's (``invalid_json``, ...).
    """

    pool: FillerPool
    tokenizer: Tokenizer
    min_tokens: int = 4096
    max_tokens: int = 32768
    fine_template: PromptTemplate = field(
        default_factory=lambda: builtin_template("in2_fine_grained")
    )
    integration_template: PromptTemplate = field(
        default_factory=lambda: builtin_template("in2_integration")
    )
    well_formed: WellFormed = field(default_factory=WellFormed)
    self_contained: SelfContained = field(default_factory=SelfContained)

    async def __call__(self, item: Record, ctx: RecordContext) -> Result:
        kind = item["sample_type"]
        if kind == "general":
            return self._general(item, ctx)
        segments = _segments(item)
        assembled = None
        if kind != "short":  # cheapest first: the context is model-free, so before the ask
            rng = ctx.rng(1)
            target = sample_target_tokens(rng, self.min_tokens, self.max_tokens)
            try:  # every segment shown is placed: the answer may use any of them
                assembled = assemble(segments, self.pool, rng, target_tokens=target,
                                     tokenizer_counts=self.tokenizer.count)  # fmt: skip
            except ConfigError as exc:  # the pool cannot supply fillers from other documents
                return Result.reject(item, "no_filler", str(exc))
        if kind == "integration":
            pieces = "\n\n".join(f"# Piece {i}: {s.text}" for i, s in enumerate(segments, 1))
            template = self.integration_template
            reply = await ctx.ask(template, op="in2_integration", pieces=pieces)
        else:
            template = self.fine_template
            reply = await ctx.ask(template, op="in2_fine_grained", segment=segments[0].text)
        question = reply.parsed["question"].strip()
        answer = reply.parsed["answer"].strip()
        probe = Record("qa", {"question": question, "answer": answer, "contexts": []}, id=item.id)
        for verdict in (
            empty_answer(answer),
            self.well_formed.screen(probe),
            self.self_contained.screen(probe),
            language_drift(segments[0].text, question),
        ):
            if not verdict.ok:
                return Result.reject(item, verdict.reason or "rejected", verdict.detail)
        named: dict[str, Any] = {}
        if kind == "integration":
            numbers = sorted({n for n in reply.parsed["pieces"] if 1 <= n <= len(segments)})
            if len(numbers) < 2:
                return Result.reject(
                    item,
                    "too_few_pieces",
                    f"the answer names pieces {reply.parsed['pieces']} of {len(segments)}; "
                    "integration needs two or more",
                )
            named = {"pieces": numbers}
        step = ctx.step(f"in2_{kind}", template)
        if assembled is None:  # a short sample: its own document is the context
            return Result.accept(self._short(item, segments[0], question, answer, step))
        needle_data = [asdict(needle) for needle in assembled.needles]
        return Result.accept(
            self._record(item, assembled.context, assembled.context_tokens, needle_data,
                         question, answer, step, meta={"target_tokens": target,
                         "filler_docs": len(set(assembled.filler_docs)), **named})
        )  # fmt: skip

    def _short(
        self, item: Record, needle: Segment, question: str, answer: str, step: dict
    ) -> Record:
        document = item["document"]
        spans = self.tokenizer.spans(document)
        token_start = sum(1 for _, end in spans if end <= needle.start)
        token_end = sum(1 for start, _ in spans if start < needle.end)
        # The context is the whole document: the needle keeps its offsets in it.
        placed = Needle(
            doc_id=needle.doc_id,
            segment_index=needle.index,
            token_start=token_start,
            token_end=token_end,
            char_start=needle.start,
            char_end=needle.end,
            text=needle.text,
        )
        needle_data = [asdict(placed)]
        return self._record(
            item, document, len(spans), needle_data, question, answer, step, meta={}
        )

    def _record(
        self,
        item: Record,
        context: str,
        context_tokens: int,
        needles: list[dict[str, Any]],
        question: str,
        answer: str,
        step: dict,
        *,
        meta: dict[str, Any],
    ) -> Record:
        prompt, context_start = training_prompt(context, question)
        return Record(
            kind="in2",
            fields={
                "sample_type": item["sample_type"],
                "messages": [
                    {"role": "user", "content": prompt},
                    {"role": "assistant", "content": answer},
                ],
                "context_tokens": context_tokens,
                "context_start": context_start,
                "context_chars": len(context),
                "needles": needles,
            },
            id=item.id,
            lineage=[step],
            meta={**meta, "question": question},
        )

    def _general(self, item: Record, ctx: RecordContext) -> Result:
        source = Record.from_json(item["general"])
        user = source["instruction"]
        if source.get("input"):
            user = f"{user}\n\n{source['input']}"
        record = Record(
            kind="in2",
            fields={
                "sample_type": "general",
                "messages": [
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": source["output"]},
                ],
                "context_tokens": self.tokenizer.count(user),
                "needles": [],
            },
            id=item.id,
            parent_id=source.id,
            lineage=[ctx.step("in2_general")],
            meta={"question": user},
        )
        return Result.accept(record)


class In2Selector(RecordSelector):
    """Per-type quotas at the end of a run: exactly the planned count of each type."""

    def __init__(self, counts: dict[str, int]) -> None:
        self.counts = counts
        self.kept: Counter[str] = Counter()

    def drop(self, record: dict[str, Any]) -> tuple[str, str] | None:
        kind = record.get("sample_type", "")
        if self.kept[kind] >= self.counts.get(kind, 0):
            return "surplus", f"{kind} already has its {self.counts.get(kind, 0)} samples"
        self.kept[kind] += 1
        return None


def general_records(items: Iterable[Record | Exception], limit: int) -> list[Record]:
    """The first ``limit`` usable general instruction records (with an output)."""
    kept = []
    for item in items:
        if isinstance(item, Record) and item.get("output"):
            kept.append(item)
            if len(kept) >= limit:
                break
    return kept
