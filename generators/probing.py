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

Reference (the paper's VaL probing results, ~32K contexts, over the three tasks):
FILM-7B reaches an average of 85.9 and a best–worst gap of 13.9 (percent).
:func:`score_probe` reports scores between 0 and 1; multiply by 100 to compare.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import string
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, InputError
from evoforge.generators.in2 import TRAINING_INSTRUCTION
from evoforge.io.readers import iter_rows
from evoforge.io.writers import JsonlWriter

TokenCounter = Callable[[str], int]

# The FILM-7B prompt (the IN2 training prompt without the model's [INST] tags),
# so that probe scores compare with the paper's.
# The paper's training prompt, so probe scores compare with FILM-7B's.
PROBE_INSTRUCTION = TRAINING_INSTRUCTION
REFERENCE = {"FILM-7B": {"average": 85.9, "gap": 13.9, "scale": "percent"}}
PREDICTION_KEYS = ("prediction", "output", "response")

DEFAULT_CONTEXT_TOKENS = 32000  # the paper's VaLProbing-32K
DEFAULT_BUCKETS = 16  # the paper's plots: 16 spans of 50 positions
MIN_SENTENCE_WORDS = 8  # a needle sentence keeps at least one word each side of its piece
MIN_CODE_LINE_CHARS = 12  # "x = 0" or "return y" is too common to name one function


@dataclass(frozen=True)
class Unit:
    """One piece of context: a sentence, a function or an entity line."""

    text: str
    source: str  # "path:line"
    data: Any = None  # code: the function name and first body line; database: the record


@dataclass(frozen=True)
class Needle:
    """The unit a probe hides, what its question quotes, and the expected answer."""

    unit: Unit
    query: str  # the piece, code line or id the question names
    key: str  # text that occurs exactly once in the context: the needle's own
    gold: Any


# --- the three tasks -----------------------------------------------------------------


def _words(text: str) -> set[str]:
    stripped = (word.strip(string.punctuation + "“”‘’«»") for word in text.lower().split())
    return {word for word in stripped if word}


def sentence_recall(prediction: str, gold: str) -> float:
    """Share of the gold sentence's distinct words that the prediction contains."""
    gold_words = _words(gold)
    if not gold_words:
        return 0.0
    return len(gold_words & _words(prediction)) / len(gold_words)


def _function_name(text: str) -> str:
    name = text.strip().strip("`'\"").strip()
    name = re.sub(r"^(?:async\s+)?def\s+", "", name)
    name = re.sub(r"\s*\(.*\)\s*:?$", "", name, flags=re.S)
    name = name.strip().rstrip(".:").strip("`'\" ")
    if re.fullmatch(r"[\w.]+", name):
        name = name.rsplit(".", 1)[-1]  # Ledger.receive_goods names receive_goods
    return name


def function_name_match(prediction: str, gold: str) -> float:
    """1.0 when the prediction is the gold function name (``foo()``, `` `foo` `` allowed)."""
    return float(_function_name(prediction) == gold.strip())


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def entity_match(prediction: str, gold: dict[str, str]) -> float:
    """1.0 when the prediction contains the gold label or the gold description."""
    said = _normalised(prediction)
    for field in ("label", "description"):
        expected = _normalised(str(gold.get(field, ""))).rstrip(".")
        if expected and expected in said:
            return 1.0
    return 0.0


class DocumentSentences:
    """Document sentence retrieval (bi-directional): sentences of ``.txt``/``.md`` files."""

    name = "document"
    direction = "bi-directional"
    separator = " "
    suffixes = (".txt", ".md")
    question = (
        'In the context above, which sentence contains the piece "{query}"? '
        "Output the complete sentence."
    )
    score = staticmethod(sentence_recall)

    # After . ! ? (and a closing quote or bracket) before a capital or digit; after 。！？.
    _SPLIT = re.compile(
        r"(?:(?<=[.!?])|(?<=[.!?][\"')\]”’]))\s+(?=[\"'(\[“‘]?[A-Z0-9])" r"|(?<=[。！？])"
    )
    _ENDS = re.compile(r"[.!?。！？][\"')\]”’]*$")

    def load(self, files: Sequence[Path]) -> list[Unit]:
        units = []
        for path in files:
            for line_no, paragraph in _paragraphs(_read_text(path)):
                if paragraph.startswith("#"):  # a Markdown heading
                    continue
                for sentence in self._SPLIT.split(" ".join(paragraph.split())):
                    sentence = sentence.strip()
                    if sentence and self._ENDS.search(sentence):  # drop titles and fragments
                        units.append(Unit(sentence, f"{path}:{line_no}"))
        return units

    def needle(self, unit: Unit, rng: random.Random, corpus: str) -> Needle | None:
        words = list(re.finditer(r"\S+", unit.text))
        if len(words) < MIN_SENTENCE_WORDS:
            return None
        size = max(4, len(words) // 3)
        starts = list(range(1, len(words) - size))  # at least one word each side
        rng.shuffle(starts)
        for start in starts:
            piece = unit.text[words[start].start() : words[start + size - 1].end()]
            if corpus.count(piece) == 1:
                return Needle(unit, query=piece, key=piece, gold=unit.text)
        return None


class CodeFunctions:
    """Code function retrieval (backward): functions and methods of ``.py`` files."""

    name = "code"
    direction = "backward"
    separator = "\n\n"
    suffixes = (".py",)
    question = (
        'In the context above, which function contains the line "{query}"? '
        "Answer with the function name only."
    )
    score = staticmethod(function_name_match)

    def load(self, files: Sequence[Path]) -> list[Unit]:
        units = []
        for path in files:
            source = _read_text(path)
            try:
                tree = ast.parse(source, filename=str(path))
            except SyntaxError as exc:
                raise InputError(
                    f"is not valid Python: {exc.msg}", path=str(path), line=exc.lineno
                ) from None
            for node in _functions(tree):
                segment = ast.get_source_segment(source, node, padded=True)
                if not segment:
                    continue
                body = node.body[1:] if _docstring_first(node) else node.body
                first_body_line = body[0].lineno - node.lineno if body else None
                units.append(
                    Unit(
                        textwrap.dedent(segment),
                        f"{path}:{node.lineno}",
                        data=(node.name, first_body_line),
                    )
                )
        return units

    def needle(self, unit: Unit, rng: random.Random, corpus: str) -> Needle | None:
        name, first_body_line = unit.data
        if first_body_line is None:
            return None
        own_name = re.compile(rf"\b{re.escape(name)}\b")
        lines = [
            line.strip()
            for line in unit.text.splitlines()[first_body_line:]
            if len(line.strip()) >= MIN_CODE_LINE_CHARS
            and not line.strip().startswith("#")
            and not own_name.search(line)  # a recursive call would give the answer away
        ]
        rng.shuffle(lines)
        for line in lines:
            if corpus.count(line) == 1:
                return Needle(unit, query=line, key=line, gold=name)
        return None


class DatabaseEntities:
    """Database entity retrieval (forward): ``{"id", "label", "description"}`` JSONL records."""

    name = "database"
    direction = "forward"
    separator = "\n"
    suffixes = (".jsonl",)
    question = (
        "In the context above, what are the label and the description of the entity "
        'with id "{query}"? Answer with the label and the description.'
    )
    score = staticmethod(entity_match)

    def load(self, files: Sequence[Path]) -> list[Unit]:
        units: list[Unit] = []
        seen: dict[str, str] = {}
        for path in files:
            for line_no, row in _jsonl(path):
                record = _entity(row, path=path, line=line_no)
                where = f"{path}:{line_no}"
                if record["id"] in seen:
                    raise InputError(
                        f"id {record['id']!r} is used again (first at {seen[record['id']]}); "
                        "ids must be unique, or the answer would be ambiguous",
                        path=str(path),
                        line=line_no,
                        field="id",
                    )
                seen[record["id"]] = where
                units.append(Unit(json.dumps(record, ensure_ascii=False), where, data=record))
        return units

    def needle(self, unit: Unit, rng: random.Random, corpus: str) -> Needle | None:
        record = unit.data
        key = '{"id": ' + json.dumps(record["id"], ensure_ascii=False) + ","
        if corpus.count(key) != 1:
            return None
        gold = {"label": record["label"], "description": record["description"]}
        return Needle(unit, query=record["id"], key=key, gold=gold)


TASKS: dict[str, Any] = {
    task.name: task for task in (DocumentSentences(), CodeFunctions(), DatabaseEntities())
}


def _task(name: str) -> Any:
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"probe task {name!r}: use one of {', '.join(TASKS)}") from None


def score_prediction(task: str, prediction: str, gold: Any) -> float:
    """The score of one answer under ``task``'s metric, between 0 and 1."""
    return float(_task(task).score(prediction, gold))


# --- reading the corpus ----------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"is not UTF-8 text ({exc.reason})", path=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror}", path=str(path)) from None


def _paragraphs(text: str) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` of each blank-line-separated paragraph."""
    start, lines = 0, []
    for line_no, line in enumerate([*text.split("\n"), ""], start=1):
        if line.strip():
            start = start or line_no
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines)
            start, lines = 0, []


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and the methods of module-level classes, in file order."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, kinds):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from (child for child in node.body if isinstance(child, kinds))


def _docstring_first(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0]
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a bad line raises InputError."""
    for item in iter_rows(path):
        if isinstance(item, InputError):
            raise item
        yield item


def _entity(row: dict[str, Any], *, path: Path, line: int) -> dict[str, str]:
    record = {}
    for field in ("id", "label", "description"):
        value = row.get(field)
        if field == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            problem = "is missing" if value is None else "must be a non-empty string"
            raise InputError(problem, path=str(path), line=line, field=field)
        record[field] = value.strip()
    return record


def _corpus_files(
    paths: str | Path | Iterable[str | Path], suffixes: tuple[str, ...]
) -> list[Path]:
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for given in map(Path, paths):
        if not given.exists():
            raise InputError("no such file or directory", path=str(given))
        if given.is_dir():
            found = sorted(
                p
                for p in given.rglob("*")
                if p.is_file()
                and p.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in p.relative_to(given).parts)
            )
            if not found:
                raise InputError(f"holds no {' or '.join(suffixes)} files", path=str(given))
            files.extend(found)
        else:
            files.append(given)
    if not files:
        raise InputError("no corpus given")
    return files


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
    spec = _task(task)
    if n < 1:
        raise ConfigError(f"n={n}: ask for at least one probe")
    if buckets < 1:
        raise ConfigError(f"buckets={buckets}: use at least one position bucket")
    if context_tokens < 1:
        raise ConfigError(f"context_tokens={context_tokens}: must be positive")
    count = _token_counter(tokenizer)
    files = _corpus_files(corpus_paths, spec.suffixes)
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
            raise InputError(f"no unit can be a {task} needle: {_needle_rule(task)}", path=where)
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
        texts = [units[k].text for k in chosen]
        texts.insert(place, needle.unit.text)
        context = spec.separator.join(texts)
        position = len(spec.separator.join(texts[:place])) + (len(spec.separator) if place else 0)
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


def _needle_rule(task: str) -> str:
    return {
        "document": f"sentences of at least {MIN_SENTENCE_WORDS} words whose middle piece "
        "occurs once in the corpus",
        "code": f"functions with a body line of at least {MIN_CODE_LINE_CHARS} characters "
        "that occurs once in the corpus and does not name the function",
        "database": "records whose id occurs once",
    }[task]


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


# --- scoring ---------------------------------------------------------------------------


def _read_gold(path: Path) -> dict[str, dict[str, Any]]:
    probes: dict[str, dict[str, Any]] = {}
    for line_no, row in _jsonl(path):
        for field in ("id", "task", "gold", "bucket", "relative_position"):
            if field not in row:
                raise InputError(
                    "is missing (is this a probe file from build_probe?)",
                    path=str(path),
                    line=line_no,
                    field=field,
                )
        if row["task"] not in TASKS:
            raise InputError(
                f"{row['task']!r} is not a probe task ({', '.join(TASKS)})",
                path=str(path),
                line=line_no,
                field="task",
            )
        if not isinstance(row["bucket"], int) or row["bucket"] < 0:
            raise InputError(
                "must be a non-negative integer", path=str(path), line=line_no, field="bucket"
            )
        key = str(row["id"])
        if key in probes:
            raise InputError(f"id {key!r} is used twice", path=str(path), line=line_no, field="id")
        probes[key] = row
    if not probes:
        raise InputError("holds no probes", path=str(path))
    return probes


def _read_predictions(path: Path) -> dict[str, str | None]:
    predictions: dict[str, str | None] = {}
    for line_no, row in _jsonl(path):
        if "id" not in row:
            raise InputError("is missing", path=str(path), line=line_no, field="id")
        key = next((k for k in PREDICTION_KEYS if k in row), None)
        if key is None:
            raise InputError(
                f'has no "prediction" field (nor "output" or "response"); '
                f"found {', '.join(sorted(row)) or 'no fields'}",
                path=str(path),
                line=line_no,
            )
        value = row[key]
        if value is not None and not isinstance(value, str):
            raise InputError(
                f"must be a string, got {type(value).__name__}",
                path=str(path),
                line=line_no,
                field=key,
            )
        probe_id = str(row["id"])
        if probe_id in predictions:
            raise InputError(
                f"id {probe_id!r} is predicted twice", path=str(path), line=line_no, field="id"
            )
        predictions[probe_id] = value
    return predictions


def _summary(scored: list[tuple[dict[str, Any], float, bool]], buckets: int) -> dict[str, Any]:
    """Per-bucket means, their average and the best–worst gap (empty buckets left out)."""
    rows = []
    for b in range(buckets):
        scores = [score for probe, score, _ in scored if probe["bucket"] == b]
        rows.append(
            {
                "bucket": b,
                "range": [round(b / buckets, 6), round((b + 1) / buckets, 6)],
                "n": len(scores),
                "mean": sum(scores) / len(scores) if scores else None,
            }
        )
    means = [row["mean"] for row in rows if row["mean"] is not None]
    return {
        "n": len(scored),
        "missing": sum(missing for _, _, missing in scored),
        "mean": sum(score for _, score, _ in scored) / len(scored) if scored else None,
        "average": sum(means) / len(means) if means else None,
        "gap": max(means) - min(means) if means else None,
        "buckets": rows,
    }


def score_probe(
    pred_path: str | Path, gold_path: str | Path, *, plot_path: str | Path | None = None
) -> dict[str, Any]:
    """Score predictions on a probe file, by position bucket.

    ``pred_path`` is JSONL ``{"id", "prediction"}`` (``"output"`` or ``"response"``
    are read too); ``gold_path`` is the file :func:`build_probe_file` wrote. A probe
    with no prediction (or a null one) scores 0 and is counted in ``missing``;
    predictions for ids not in the gold file are counted in ``unknown_ids``.

    Returns ``n``, ``missing``, ``unknown_ids``, ``mean`` (over probes), ``average``
    (over non-empty buckets: the paper's headline number), ``gap`` (best minus worst
    bucket mean), ``buckets`` (``bucket``, ``range``, ``n``, ``mean``), the same
    summary per task under ``tasks``, ``reference`` and ``plot``. Scores are 0–1.
    For comparison, FILM-7B reaches an average of 85.9 and a gap of 13.9 (percent,
    ~32K contexts, over document/code/database; An et al., 2024, arXiv 2404.16811).
    With ``plot_path``, a PNG of the bucket means against relative position (one
    line per task) is written there.
    """
    gold_path, pred_path = Path(gold_path), Path(pred_path)
    probes = _read_gold(gold_path)
    predictions = _read_predictions(pred_path)
    buckets = max(
        max(int(p.get("buckets") or 0) for p in probes.values()),
        max(int(p["bucket"]) for p in probes.values()) + 1,
    )
    scored: list[tuple[dict[str, Any], float, bool]] = []
    for probe_id, probe in probes.items():
        prediction = predictions.get(probe_id)
        if prediction is None:
            scored.append((probe, 0.0, True))
        else:
            scored.append(
                (probe, score_prediction(probe["task"], prediction, probe["gold"]), False)
            )
    tasks = sorted({probe["task"] for probe in probes.values()})
    report = {
        "gold": str(gold_path),
        "predictions": str(pred_path),
        **_summary(scored, buckets),
        "unknown_ids": sum(probe_id not in probes for probe_id in predictions),
        "tasks": {
            task: _summary([item for item in scored if item[0]["task"] == task], buckets)
            for task in tasks
        },
        "reference": REFERENCE,
        "plot": None,
    }
    if plot_path is not None:
        report["plot"] = str(plot_probe(report, plot_path))
    return report


def plot_probe(report: dict[str, Any], out: str | Path) -> Path:
    """Write a PNG of bucket mean score against relative needle position (atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)  # no pyplot, no global backend switch
    axes = figure.add_subplot()
    for task, summary in report["tasks"].items():
        points = [(sum(row["range"]) / 2, row["mean"]) for row in summary["buckets"] if row["n"]]
        axes.plot(
            [x for x, _ in points],
            [y for _, y in points],
            marker="o",
            label=f"{task} (avg {summary['average']:.3f}, gap {summary['gap']:.3f})",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("relative position of the needle in the context")
    axes.set_ylabel("score")
    average, gap = report["average"], report["gap"]
    axes.set_title(f"VaL probing: average {average:.3f}, best–worst gap {gap:.3f}")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
