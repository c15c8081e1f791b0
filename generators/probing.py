"""VaL probing sets: does a model use every position of a long context?

VArious Long-context probing (An et al., 2024, "Make Your LLM Fully Utilize the
Context", arXiv 2404.16811, §4.1) hides one needle in a long context of similar
units and asks a question that only the needle answers. Scoring the answers by
where the needle sat shows position bias ("lost in the middle"). Three tasks,
each with its own context style and retrieval pattern, as in the paper:

- ``document`` (bi-directional): the context is sentences; the question quotes a
  piece from the middle of one sentence and asks for the whole sentence, so the
  model must recall text both before and after the piece. Gold: the sentence.
  Score: word-level recall, ``|gold words & predicted words| / |gold words|``
  over lower-cased words (the paper's metric; surrounding punctuation is also
  stripped from each word here, so ``fox,`` counts as ``fox``).
- ``code`` (backward): the context is Python functions (extracted with
  :mod:`ast`); the question quotes one line of a function's body and asks for
  the name of the function, which comes before the line. Gold: the name. Score:
  exact match after stripping whitespace, backticks, quotes, ``def`` and a
  trailing ``(...)`` (the paper counts the name anywhere in the reply; ask for the
  name only, as the question does, so the two agree).
- ``database`` (forward): the context is JSON lines ``{"id", "label",
  "description"}``; the question gives an id and asks for the label and the
  description, which come after it. Gold: ``{"label", "description"}``. Score:
  relaxed match, 1 when the reply contains the label or the description
  (case-insensitive, whitespace-normalised, trailing full stop ignored).

Needle positions. Probe ``i`` goes to bucket ``i % buckets``, so bucket counts
differ by at most one; the ``m`` probes of a bucket spread evenly inside it (the
``j``-th aims at ``(bucket + (j + 0.5) / m) / buckets``), so all ``n`` targets
together spread evenly over the whole context. The needle goes between the
filler units nearest to the target that still lie inside the bucket.
``relative_position`` is measured on the finished context: the share of the
other tokens that come before the needle (0 = first, 1 = last).

Uniqueness. The piece, code line or id a question quotes must occur exactly
once in the whole corpus, or that unit is never a needle; fillers are drawn
from the other units only. A corpus too small for ``context_tokens`` is cycled
(each pass reshuffled), so fillers may repeat, but the needle unit never does:
the answer is always unique.

Where things live: the tasks in :mod:`evoforge.generators.probe_tasks`; the
placement in :func:`evoforge.generators.needles.place_needles` (shared with IN2);
scoring and plotting in :mod:`evoforge.probe`, re-exported here.

Reference (the paper's VaL probing results, ~32K contexts, over the three tasks):
FILM-7B reaches an average of 85.9 and a best–worst gap of 13.9 (percent).
:func:`score_probe` reports scores between 0 and 1; multiply by 100 to compare.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, InputError
from evoforge.generators.in2 import TRAINING_INSTRUCTION
from evoforge.generators.needles import Needle, place_needles
from evoforge.generators.probe_tasks import (
    MIN_CODE_LINE_CHARS,
    MIN_SENTENCE_WORDS,
    TASKS,
    CodeFunctions,
    DatabaseEntities,
    DocumentSentences,
    ProbeTarget,
    Unit,
    corpus_files,
    needle_rule,
    task_named,
)
from evoforge.io.writers import JsonlWriter
from evoforge.probe.metrics import (
    entity_match,
    function_name_match,
    score_prediction,
    sentence_recall,
)
from evoforge.probe.plot import plot_probe
from evoforge.probe.score import PREDICTION_KEYS, REFERENCE, score_probe

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_CONTEXT_TOKENS",
    "MIN_CODE_LINE_CHARS",
    "MIN_SENTENCE_WORDS",
    "PREDICTION_KEYS",
    "PROBE_INSTRUCTION",
    "REFERENCE",
    "TASKS",
    "CodeFunctions",
    "DatabaseEntities",
    "DocumentSentences",
    "Needle",
    "ProbeTarget",
    "TokenCounter",
    "Unit",
    "build_probe",
    "build_probe_file",
    "entity_match",
    "function_name_match",
    "plot_probe",
    "score_prediction",
    "score_probe",
    "sentence_recall",
    "write_probe",
]

TokenCounter = Callable[[str], int]

# The FILM-7B prompt (the IN2 training prompt without the model's [INST] tags),
# so that probe scores compare with the paper's.
PROBE_INSTRUCTION = TRAINING_INSTRUCTION

DEFAULT_CONTEXT_TOKENS = 32000  # the paper's VaLProbing-32K
DEFAULT_BUCKETS = 16  # the paper's plots: 16 spans of 50 positions


@dataclass(frozen=True)
class _UnitPiece:
    """A unit as a piece of a context (``needles.Piece``): named by its source and its
    place among the corpus's units, with its token count."""

    doc_id: str
    index: int
    text: str
    tokens: int


def _token_counter(tokenizer: Any) -> TokenCounter:
    """``tokenizer`` as a text -> count function: None (a model-free regex count), a
    function, or an object with ``count_tokens(text)`` or ``encode(text)``."""
    if tokenizer is None:
        from evoforge.io.documents import count_tokens

        return count_tokens
    if hasattr(tokenizer, "count_tokens"):
        return tokenizer.count_tokens
    if hasattr(tokenizer, "encode"):
        return lambda text: len(tokenizer.encode(text))
    if callable(tokenizer):
        return tokenizer
    raise ConfigError(
        f"tokenizer {tokenizer!r}: pass a function text -> token count, or an object "
        "with count_tokens(text) or encode(text)"
    )


# --- building probes -------------------------------------------------------------------


def _bucket_of(relative: float, buckets: int) -> int:
    return min(int(relative * buckets), buckets - 1)


def _targets(n: int, buckets: int) -> list[tuple[int, float]]:
    """``(bucket, target relative position)`` of probe ``i``: buckets cycle, and the
    probes of one bucket spread evenly inside it."""
    per_bucket = [len(range(b, n, buckets)) for b in range(buckets)]
    return [
        (i % buckets, (i % buckets + (i // buckets + 0.5) / per_bucket[i % buckets]) / buckets)
        for i in range(n)
    ]


def _fill(fillers: list[int], tokens: list[int], budget: int, rng: random.Random) -> list[int]:
    """Filler unit indices worth about ``budget`` tokens: shuffled passes over
    ``fillers``, stopping where the total is nearest the budget."""
    chosen: list[int] = []
    total = 0
    order: list[int] = []
    while total < budget:
        if not order:
            order = fillers[:]
            rng.shuffle(order)
        index = order.pop()
        if chosen and total + tokens[index] - budget > budget - total:
            break  # adding it would overshoot by more than stopping undershoots
        chosen.append(index)
        total += tokens[index]
    return chosen


def _insertion_point(sizes: list[int], target: float, bucket: int, buckets: int) -> int:
    """Where the needle goes among fillers of ``sizes`` tokens: nearest to ``target``
    (a share of the filler tokens) among the places inside ``bucket``."""
    total = sum(sizes) or 1
    before = [0]
    for size in sizes:
        before.append(before[-1] + size)
    places = range(len(before))
    inside = [k for k in places if _bucket_of(before[k] / total, buckets) == bucket]
    return min(inside or places, key=lambda k: abs(before[k] / total - target))


def build_probe(
    task: str,
    corpus_paths: str | Path | Iterable[str | Path],
    *,
    n: int,
    context_tokens: int = DEFAULT_CONTEXT_TOKENS,
    buckets: int = DEFAULT_BUCKETS,
    seed: int = 0,
    tokenizer: Any = None,
) -> Iterator[dict[str, Any]]:
    """``n`` VaL probes of ``task`` (``document``, ``code`` or ``database``) built from
    the files or folders ``corpus_paths`` (An et al., 2024, arXiv 2404.16811).

    Each context holds about ``context_tokens`` tokens as counted by ``tokenizer``
    (default: the model-free regex count of :func:`evoforge.io.documents.count_tokens`;
    or any function text -> count, or an object with ``count_tokens`` or
    ``encode``). Needle positions spread evenly over ``buckets`` position buckets
    (the paper's plots use 16). The same arguments and ``seed`` give the same probes.

    Each record: ``id``, ``task``, ``context``, ``question``, ``gold``, ``needle``
    (its text, verbatim in the context), ``position`` (its character offset:
    ``context[position:].startswith(needle)``), ``relative_position``, ``bucket``,
    ``buckets``, ``context_tokens`` (measured), ``messages`` (one user message in the
    FILM-7B prompt: instruction, context, question) and ``meta`` (``query``: what the
    question quotes; ``source``: the needle's file and line; ``target_position``;
    ``filler_units`` and ``distinct_filler_units``, fewer when the corpus was cycled).
    """
    spec = task_named(task)
    if n < 1:
        raise ConfigError(f"n={n}: ask for at least one probe")
    if buckets < 1:
        raise ConfigError(f"buckets={buckets}: use at least one position bucket")
    if context_tokens < 1:
        raise ConfigError(f"context_tokens={context_tokens}: must be positive")
    count = _token_counter(tokenizer)
    files = corpus_files(corpus_paths, spec.suffixes)
    units, seen = [], set()
    for unit in spec.load(files):  # the first occurrence of each text
        if unit.text.strip() and unit.text not in seen:
            seen.add(unit.text)
            units.append(unit)
    where = ", ".join(map(str, files[:3])) + (" ..." if len(files) > 3 else "")
    if len(units) < 2:
        raise InputError(
            f"the {task} probe needs at least 2 distinct units (found {len(units)}): "
            "one needle and something to hide it among",
            path=where,
        )
    tokens = [count(unit.text) for unit in units]
    if not all(isinstance(t, int) and t >= 0 for t in tokens) or not any(tokens):
        raise ConfigError(
            f"tokenizer {tokenizer!r} does not give token counts (non-negative integers, "
            "not all zero); pass a function text -> count"
        )
    pieces = [_UnitPiece(unit.source, k, unit.text, tokens[k]) for k, unit in enumerate(units)]
    corpus = spec.separator.join(unit.text for unit in units)
    order = list(range(len(units)))
    random.Random(f"{seed}:{task}:needles").shuffle(order)  # needles without replacement
    cursor = 0

    for i, (bucket, target) in enumerate(_targets(n, buckets)):
        rng = random.Random(f"{seed}:{task}:{i}")
        needle_index, needle = None, None
        for _ in range(len(order)):
            candidate = order[cursor % len(order)]
            cursor += 1
            needle = spec.needle(units[candidate], rng, corpus)
            if needle is not None:
                needle_index = candidate
                break
        if needle is None or needle_index is None:
            raise InputError(f"no unit can be a {task} needle: {needle_rule(task)}", path=where)
        budget = context_tokens - tokens[needle_index]
        if budget <= 0:
            raise ConfigError(
                f"context_tokens={context_tokens} leaves no room beside the needle "
                f"({tokens[needle_index]} tokens, {needle.unit.source}); ask for more"
            )
        fillers = [
            k for k in range(len(units)) if k != needle_index and needle.key not in units[k].text
        ]
        if not any(tokens[k] for k in fillers):
            raise InputError(
                f"nothing to hide the needle at {needle.unit.source} among: every other "
                f"unit is empty or repeats its quoted text {needle.query!r}",
                path=where,
            )
        chosen = _fill(fillers, tokens, budget, rng)
        place = _insertion_point([tokens[k] for k in chosen], target, bucket, buckets)
        placement = place_needles(
            [pieces[needle_index]], [pieces[k] for k in chosen], separator=spec.separator, at=place
        )
        context = placement.context
        position = placement.needles[0].char_start
        assert context.count(needle.key) == 1 and context.startswith(needle.unit.text, position)

        total = count(context)
        others = total - count(needle.unit.text)
        relative = min(max(count(context[:position]) / others, 0.0), 1.0) if others > 0 else 0.0
        question = spec.question.format(query=needle.query)
        prompt = f"{PROBE_INSTRUCTION}\n\n### Context:\n{context}\n\n### Instruction:\n{question}"
        yield {
            "id": f"val-{task}-{i:05d}",
            "task": task,
            "context": context,
            "question": question,
            "gold": needle.gold,
            "needle": needle.unit.text,
            "position": position,
            "relative_position": relative,
            "bucket": bucket,
            "buckets": buckets,
            "context_tokens": total,
            "messages": [{"role": "user", "content": prompt}],
            "meta": {
                "query": needle.query,
                "direction": spec.direction,
                "source": needle.unit.source,
                "target_position": round(target, 6),
                "filler_units": len(chosen),
                "distinct_filler_units": len(set(chosen)),
                "seed": seed,
            },
        }


def write_probe(probes: Iterable[dict[str, Any]], out: str | Path) -> int:
    """Write ``probes`` as JSONL to ``out`` atomically; returns how many were written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = JsonlWriter(out)
    try:
        for probe in probes:
            writer.write(probe)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.count


def build_probe_file(
    task: str, corpus: str | Path | Iterable[str | Path], n: int, out: str | Path, **kw: Any
) -> dict[str, Any]:
    """Build ``n`` probes (see :func:`build_probe`, which takes ``kw``) into ``out``
    (JSONL, atomic) and return their statistics."""
    per_bucket: dict[int, int] = {}
    buckets = kw.get("buckets", DEFAULT_BUCKETS)
    lengths: list[int] = []
    needles: set[str] = set()
    cycled = 0

    def observed(probes: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal cycled
        for probe in probes:
            per_bucket[probe["bucket"]] = per_bucket.get(probe["bucket"], 0) + 1
            lengths.append(probe["context_tokens"])
            needles.add(probe["needle"])
            meta = probe["meta"]
            cycled += meta["distinct_filler_units"] < meta["filler_units"]
            yield probe

    written = write_probe(observed(build_probe(task, corpus, n=n, **kw)), out)
    return {
        "task": task,
        "out": str(out),
        "n": written,
        "buckets": buckets,
        "per_bucket": [per_bucket.get(b, 0) for b in range(buckets)],
        "context_tokens": {
            "requested": kw.get("context_tokens", DEFAULT_CONTEXT_TOKENS),
            "min": min(lengths),
            "mean": round(sum(lengths) / len(lengths), 1),
            "max": max(lengths),
        },
        "distinct_needles": len(needles),
        "cycled_contexts": cycled,
    }
