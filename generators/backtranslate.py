"""Instruction back-translation: instructions for the passages of unlabeled documents.

Li et al., 2023, "Self-Alignment with Instruction Backtranslation" (arXiv 2308.06259,
Humpback):

- documents (the loaders of ``evoforge.io.documents``: txt, md, html, pdf, jsonl) are
  cut into candidate answers: split at blank lines, consecutive paragraphs merged to
  40-400 words (``MIN_WORDS``, ``MAX_WORDS``; a longer paragraph is cut at sentence
  ends), passages that are mostly code, tables or navigation text left out;
- self-augmentation: the model writes the instruction a passage answers
  (``backtranslate_instruction``). The paper fine-tunes a backward model on
  (output, instruction) pairs for this; evoforge prompts the model instead;
- self-curation: the model rates the pair on the paper's 5-point scale
  (``backtranslate_curate``); pairs under ``min_score`` (default 5, the paper's) are
  rejected as ``low_score``;
- a second iteration (``--iterations 2``) shows the curated pairs of the first as
  few-shot examples, in place of the paper's model trained on them.

Each record's output is the passage itself, and ``meta.source`` its span, as the RAG
generator records one: ``doc_id``, ``path``, ``start``, ``end`` with
``document.text[start:end] == output``. Rejections: ``empty_instruction``,
``too_short``, ``low_score``.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoforge.engine.context import RecordContext
from evoforge.generators.grow_pool import word_count
from evoforge.prompting import builtin_template
from evoforge.records import Record
from evoforge.steps import Result

MIN_WORDS, MAX_WORDS = 40, 400
FEW_SHOT = 3  # curated pairs shown in the second iteration
STEP = "generator.backtranslate"
_BLANK = re.compile(r"\n[ \t]*\n\s*")
_SENTENCE = re.compile(r"[^.!?]*[.!?]+[\"')\]]*\s*|[^.!?]+$")
_CODE_LINE = re.compile(
    r"^(\s{4,}|\t)|```|[;{}]\s*$|^\s*(def|class|import|from|return|if|for|while|#include|"
    r"public|private|function|var|let|const|SELECT|<\w+)\b"
)
_LABEL = re.compile(r"^\s*(instruction|question|task)\s*:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Segment:
    """A candidate answer: ``text == document.text[start:end]``."""

    doc_id: str
    path: str
    start: int
    end: int
    text: str


def _stripped(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def paragraphs(text: str) -> list[tuple[int, int]]:
    """The spans between blank lines, without surrounding whitespace."""
    spans, start = [], 0
    for gap in _BLANK.finditer(text):
        spans.append(_stripped(text, start, gap.start()))
        start = gap.end()
    spans.append(_stripped(text, start, len(text)))
    return [(s, e) for s, e in spans if e > s]


def not_prose(text: str) -> str | None:
    """``code``, ``table`` or ``navigation`` when most of ``text`` is that; else None."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        return "navigation"
    if sum(bool(_CODE_LINE.search(line)) for line in lines) / len(lines) >= 0.5:
        return "code"
    symbols = sum(text.count(c) for c in "{}[]();=<>\\$_")
    if symbols / max(1, len(text.replace(" ", ""))) > 0.08:
        return "code"
    piped = sum(line.lstrip().startswith("|") or "\t" in line.strip() for line in lines)
    if piped / len(lines) >= 0.5:
        return "table"
    items = [i for i in re.split(r"\s[|»·•/>]\s|\n", text) if i.strip()]
    if len(items) >= 4 and sum(len(i.split()) for i in items) / len(items) <= 3 and \
            not re.search(r"[.?!](\s|$)", text):  # fmt: skip
        return "navigation"
    if sum(line.count("|") >= 2 for line in lines) / len(lines) >= 0.5:
        return "table"
    short = sum(len(line.split()) <= 4 and not line.rstrip().endswith((".", "?", "!", ":"))
                for line in lines)  # fmt: skip
    if len(lines) >= 3 and short / len(lines) >= 0.6:
        return "navigation"
    return None


def _split_long(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """A paragraph over ``MAX_WORDS`` cut at sentence ends into pieces of at most that."""
    pieces: list[tuple[int, int]] = []
    cur: tuple[int, int] | None = None
    for match in _SENTENCE.finditer(text, start, end):
        s, e = _stripped(text, match.start(), match.end())
        if e <= s:
            continue
        if cur is not None and word_count(text[cur[0] : e]) <= MAX_WORDS:
            cur = (cur[0], e)
        else:
            if cur is not None:
                pieces.append(cur)
            cur = (s, e)
    if cur is not None:
        pieces.append(cur)
    return pieces


def segment_text(text: str) -> tuple[list[tuple[int, int]], Counter[str]]:
    """Spans of 40-400 words of prose, and how many passages were left out, by reason."""
    spans: list[tuple[int, int]] = []
    skipped: Counter[str] = Counter()
    cur: tuple[int, int] | None = None

    def flush() -> None:
        if cur is not None:
            words = word_count(text[cur[0] : cur[1]])
            if words < MIN_WORDS:
                skipped["too_short"] += 1
            elif words > MAX_WORDS:
                skipped["too_long"] += 1
            else:
                spans.append(cur)

    for start, end in paragraphs(text):
        kind = not_prose(text[start:end])
        if kind is not None:
            flush()
            cur = None
            skipped[kind] += 1
            continue
        for s, e in _split_long(text, start, end) if word_count(text[start:end]) > MAX_WORDS \
                else [(start, end)]:  # fmt: skip
            words = word_count(text[s:e])
            if cur is not None and word_count(text[cur[0] : cur[1]]) < MIN_WORDS and \
                    word_count(text[cur[0] : e]) <= MAX_WORDS:  # fmt: skip
                cur = (cur[0], e)
                continue
            flush()
            cur = (s, e) if words else None
    flush()
    return spans, skipped


def segment_documents(documents: list[Any]) -> tuple[list[Segment], dict[str, int]]:
    """Every document's segments, and the passages left out by reason."""
    segments: list[Segment] = []
    skipped: Counter[str] = Counter()
    for doc in documents:
        spans, left_out = segment_text(doc.text)
        skipped.update(left_out)
        segments += [Segment(doc.id, doc.path, s, e, doc.text[s:e]) for s, e in spans]
    return segments, dict(skipped.most_common())


@dataclass
class BacktranslatePlanner:
    """Segments in a seeded order, handed out pass by pass until none is left."""

    segments: list[Segment]
    seed: int = 0
    iteration: int = 1
    exhausted: bool = False
    _order: list[Segment] = field(default_factory=list)
    _next: int = 0

    def __post_init__(self) -> None:
        self._order = list(self.segments)
        random.Random(f"{self.seed}\x1fbacktranslate").shuffle(self._order)

    def plan(self, size: int, pass_no: int) -> list[Record]:
        chosen = self._order[self._next : self._next + size]
        self._next += len(chosen)
        self.exhausted = self._next >= len(self._order)
        return [
            Record(
                "grow_segment",
                {
                    "text": s.text,
                    "doc_id": s.doc_id,
                    "path": s.path,
                    "start": s.start,
                    "end": s.end,
                },  # fmt: skip
                id=f"backtranslate{self.iteration}/{s.doc_id}/{s.start}-{s.end}",
                meta={"pass": pass_no},
            )
            for s in chosen
        ]


def few_shot_examples(path: str | Path, k: int = FEW_SHOT) -> list[dict[str, str]]:
    """The ``k`` best-rated pairs of a first iteration (ties by id), for the second."""
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
    rows.sort(key=lambda r: (-int(r["meta"]["grow"].get("score", 0)), r["id"]))
    return [{"instruction": r["instruction"], "output": r["output"]} for r in rows[:k]]


@dataclass
class BacktranslateTask:
    """One segment in: an instruction for it, rated; kept at ``min_score`` or more."""

    min_score: int = 5
    examples: list[dict[str, str]] = field(default_factory=list)

    async def __call__(self, item: Record, ctx: RecordContext) -> Result:
        augment = builtin_template("backtranslate_instruction")
        reply = await ctx.ask(augment, op="backtranslate_instruction", text=item["text"],
                              examples=self.examples)  # fmt: skip
        instruction = _LABEL.sub("", reply.text.strip().splitlines()[0] if reply.text.strip()
                                 else "").strip().strip('"')  # fmt: skip
        source = {k: item[k] for k in ("doc_id", "path", "start", "end")}
        grow = {"method": "backtranslate", "pass": int(item.meta.get("pass", 1)),
                "iteration": 2 if self.examples else 1}  # fmt: skip
        record = Record(
            "instruction", {"instruction": instruction or "(none)", "input": "",
                            "output": item["text"]},
            id=item.id, lineage=[ctx.step("backtranslate_instruction", augment)],
            meta={"grow": grow, "source": source},
        )  # fmt: skip
        if not instruction:
            return Result.reject(record, "empty_instruction", "the model wrote no instruction",
                                 step=STEP, field="$.instruction")  # fmt: skip
        if word_count(instruction) < 3:
            return Result.reject(record, "too_short", f"instruction of {word_count(instruction)}"
                                 " words", step=STEP, field="$.instruction")  # fmt: skip
        curate = builtin_template("backtranslate_curate")
        rating = await ctx.ask(curate, op="backtranslate_curate", instruction=instruction,
                               answer=item["text"])  # fmt: skip
        parsed = rating.parsed or {}
        score = int(parsed.get("score", 0))
        record.fields["instruction"] = instruction
        record.lineage.append(ctx.step("backtranslate_curate", curate))
        grow.update(score=score, curation=str(parsed.get("reason", "")))
        if score < self.min_score:
            return Result.reject(record, "low_score", f"self-curation score {score} < "
                                 f"{self.min_score}", step=STEP)  # fmt: skip
        return Result.accept(record)
