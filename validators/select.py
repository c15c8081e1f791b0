"""Data selection: LLM scores per record (DEITA, AlpaGasus), then whole-set selectors.

Scoring runs per record as engine tasks ``(record, ctx) -> Result``, so it gets
the engine's cache, retries and journal:

- :class:`DeitaScorer` -- DEITA (Liu et al., ICLR 2024, arXiv 2312.15685). A judge
  scores the complexity of the instruction and the quality of the (instruction,
  response) pair, each on 1-6: a record with an evolution chain is rank-scored
  together with its earlier versions in one prompt
  (``prompts/deita_{complexity,quality}_chain.yaml``), one without is scored alone
  (``prompts/deita_complexity.yaml``, ``prompts/deita_quality.yaml``). The judge is
  asked for JSON with a schema (``{"score": N}``, ``{"scores": [N, ...]}``), so a
  guided local model always writes a score. With token logprobs the score is the
  expected value over the score tokens. The evol score is
  complexity x quality, summed over the turns of a conversation. Writes
  ``meta["deita"]``.
- :class:`AlpagasusRater` -- AlpaGasus (Chen et al., 2023): a judge rates the
  response's accuracy on 0-5 (``prompts/alpagasus_rating.yaml``). Writes
  ``meta["alpagasus"]``.

An unparseable judge reply rejects the record as ``unparseable_score`` with the
reply's first line; it is not given a made-up score.

Selection needs no model and sees the whole set; each selector returns
``(selected, dropped)``: the selected records in input order, and a
:class:`~evoforge.engine.runner.Rejection` with a reason code for every other one:

- :func:`select_deita` -- DEITA's Repr filter: ``too_similar`` (with the selected
  record it lost to and the cosine), ``over_budget``, ``unscored``;
- :func:`select_alpagasus` -- keep score >= 4.5: ``low_score``, ``unscored``;
- :func:`select_kcenter` -- LTD, k-means then greedy k-center: ``not_selected``;
- :func:`select_random` -- the baseline: ``not_selected``.

:func:`select` dispatches by name through :data:`SELECTORS`.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import random
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evoforge.embeddings import Embedder
from evoforge.engine.runner import RecordContext, Rejection, Result
from evoforge.errors import ConfigError
from evoforge.llm.base import Completion, TokenLogprob
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record

__all__ = [
    "SELECTORS",
    "AlpagasusRater",
    "DeitaScorer",
    "deita_chain_schema",
    "expected_score",
    "greedy_kcenter",
    "kmeans",
    "parse_alpagasus_score",
    "parse_deita_chain",
    "parse_deita_score",
    "select",
    "select_alpagasus",
    "select_deita",
    "select_kcenter",
    "select_random",
    "text_of",
    "turn_pairs",
]

# Greedy judges; the replies are a short JSON object (DEITA) or a score and a paragraph.
# DEITA asks for the top token logprobs, for the expected score (a server that
# refuses them is asked without; the parsed integer is the score then).
DEITA_PARAMS = {"max_tokens": 32, "temperature": 0.0, "logprobs": True, "top_logprobs": 10}
ALPAGASUS_PARAMS = {"max_tokens": 256, "temperature": 0.0}

# The replies' JSON Schemas. They go to the backend with each request (an OpenAI-style
# ``response_format``; the local model writes them by construction, choosing each
# score among the enum's options), and the reply is read by the parsers below, which
# also take the plain-text forms from a server that ignores the schema.
DEITA_SCORE = {"type": "integer", "enum": [1, 2, 3, 4, 5, 6]}
DEITA_SCHEMA = {
    "type": "object",
    "properties": {"score": DEITA_SCORE},
    "required": ["score"],
    "additionalProperties": False,
}
# AlpaGasus scores 0-5; half points, so that the 4.5 threshold can be met exactly.
ALPAGASUS_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "enum": [k / 2 for k in range(11)]},
        "explanation": {"type": "string"},
    },
    "required": ["score", "explanation"],
    "additionalProperties": False,
}


def deita_chain_schema(n: int) -> dict[str, Any]:
    """``{"scores": [...]}``: exactly ``n`` scores of 1-6, one per variant, in order."""
    return {
        "type": "object",
        "properties": {
            "scores": {"type": "array", "items": DEITA_SCORE, "minItems": n, "maxItems": n}
        },
        "required": ["scores"],
        "additionalProperties": False,
    }


RecordLike = Record | dict[str, Any]


# --- the text of a record ------------------------------------------------------------

# (prompt field, response field) per kind; an ``input`` field joins the instruction.
_PAIR_FIELDS = {
    "instruction": ("instruction", "output"),
    "qa": ("question", "answer"),
    "rag": ("user_input", "reference"),
    "in2": ("question", "answer"),
}


def _as_record(item: RecordLike) -> Record:
    return item if isinstance(item, Record) else Record.from_json(item)


def _turns_text(value: Any) -> str:
    """A string as is; ``{role, content}`` turns as ``role: content`` lines."""
    if isinstance(value, list):
        return "\n".join(
            f"{t.get('role', '')}: {t.get('content', '')}" if isinstance(t, dict) else str(t)
            for t in value
        )
    return "" if value is None else str(value)


def _prompt_field(record: Record) -> tuple[str, str]:
    try:
        return _PAIR_FIELDS[record.kind]
    except KeyError:
        raise ConfigError(
            f"{record.id}: no default text for kind {record.kind!r}; pass fields=[...]"
        ) from None


def text_of(record: RecordLike, fields: Sequence[str] | None = None) -> str:
    """The text that is embedded and compared: ``fields`` joined by newlines, or by kind
    ``instruction [+ input] + output``, ``question + answer``, ``user_input + reference``.
    Turns are written ``role: content``; missing or empty fields are left out."""
    record = _as_record(record)
    if fields is None:
        if isinstance(record.get("messages"), list):
            fields = ["messages"]
        else:
            prompt, response = _prompt_field(record)
            middle = ["input"] if record.kind == "instruction" else []
            fields = [prompt, *middle, response]
    parts = [_turns_text(record.get(name)) for name in fields]
    return "\n".join(part for part in parts if part.strip())


def turn_pairs(record: RecordLike) -> list[tuple[str, str]]:
    """The (user text, assistant text) pairs DEITA scores, one per turn.

    An ``instruction`` record is one pair (instruction, plus its input when there is
    one, and output). A ``messages`` field of ``{role, content}`` turns gives one pair
    per user turn and the assistant turn after it. A ``qa``/``rag`` question given as
    turns gives its user/assistant pairs and then (last user turn, answer).
    """
    record = _as_record(record)
    messages = record.get("messages")
    if isinstance(messages, list):
        return _pairs_from_turns(messages, None)
    prompt, response = _prompt_field(record)
    question, answer = record.get(prompt), _turns_text(record.get(response))
    if isinstance(question, list):
        return _pairs_from_turns(question, answer)
    text = _turns_text(question)
    if record.kind == "instruction" and str(record.get("input") or "").strip():
        text = f"{text}\n\n{record['input']}"
    return [(text, answer)]


def _pairs_from_turns(turns: list[dict[str, Any]], final_answer: str | None) -> list:
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for turn in turns:
        role, content = turn.get("role"), str(turn.get("content") or "")
        if role == "user":
            pending = content if pending is None else f"{pending}\n{content}"
        elif role == "assistant" and pending is not None:
            pairs.append((pending, content))
            pending = None
    if pending is not None:
        pairs.append((pending, final_answer or ""))
    return pairs


# --- parsing the judges' replies -------------------------------------------------------


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def parse_deita_score(text: str, aspect: str) -> float | None:
    """A DEITA judge's 1-6 score, or None.

    Read in order: the JSON reply asked for, ``{"score": N}`` (also
    ``{"complexity": N}`` / ``{"quality": N}``, the number quoted or not); the last
    ``##Complexity: N`` / ``##Quality: N`` line (the DEITA scorer's own format;
    ``#``s and case optional); a reply that is a bare number. This is the parsed
    number; :class:`DeitaScorer` turns it into the expected value when the reply
    carries token logprobs.
    """
    found = _deita_score_at(text, aspect)
    return None if found is None else found[0]


def _in_scale(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 1.0 <= score <= 6.0 else None


def _json_number_at(text: str, keys: str) -> tuple[str, int] | None:
    """The first ``"key": N`` (``"N"`` too) of a JSON reply, ``keys`` a regex
    alternation: (the number's text, its offset in ``text``), or None."""
    match = re.search(rf'"(?:{keys})"\s*:\s*"?{_NUMBER}"?\s*[,}}]', text, re.I)
    return None if match is None else (match.group(1), match.start(1))


def _deita_score_at(text: str, aspect: str) -> tuple[float, int] | None:
    """(score, offset of its number in ``text``) or None."""
    found_json = _json_number_at(text, f"score|{aspect}")
    if found_json is not None:
        score = _in_scale(found_json[0])
        return None if score is None else (score, found_json[1])
    found = list(re.finditer(rf"#*\s*{aspect}\s*(?:score)?\s*[:：]\s*\**\s*{_NUMBER}", text, re.I))
    if found:
        score = _in_scale(found[-1].group(1))
        return None if score is None else (score, found[-1].start(1))
    bare = re.fullmatch(rf"\s*{_NUMBER}\s*\.?\s*", text)
    if bare is None:
        return None
    score = _in_scale(bare.group(1))
    return None if score is None else (score, bare.start(1))


def parse_deita_chain(text: str, n: int) -> list[float] | None:
    """The 1-6 scores of a rank-scoring reply over ``n`` variants, in order, or None.

    The JSON reply asked for, ``{"scores": [N, ...]}`` with exactly ``n`` numbers;
    failing that, one score per variant read from a ``[Score k]: N`` line (also
    ``[Instruction k] Score: N`` / ``[Response k] Score: N``, the paper's own
    format), the last line for a ``k`` winning. None unless all ``n`` are there.
    """
    found = _deita_chain_at(text, n)
    return None if found is None else [score for score, _ in found]


_CHAIN_LINE = re.compile(
    rf"\[\s*(?:score\s*(\d+)\s*\]|(?:instruction|response|query)\s*(\d+)\s*\]\s*score)"
    rf"\s*[:：=]?\s*\**\s*{_NUMBER}",
    re.I,
)


_JSON_SCORES = re.compile(r'"scores"\s*:\s*\[([^\]]*)\]', re.I)
_JSON_ITEM = re.compile(rf'\s*"?{_NUMBER}"?\s*')


def _deita_json_chain_at(text: str, n: int) -> list[tuple[float, int]] | None:
    """The ``{"scores": [...]}`` form: (score, offset) per item, or None."""
    match = _JSON_SCORES.search(text)
    if match is None:
        return None
    found = []
    for item in re.finditer(r"[^,]+", match.group(1)):
        number = _JSON_ITEM.fullmatch(item.group(0))
        score = None if number is None else _in_scale(number.group(1))
        if number is None or score is None:
            return None
        found.append((score, match.start(1) + item.start() + number.start(1)))
    return found if len(found) == n else None


def _deita_chain_at(text: str, n: int) -> list[tuple[float, int]] | None:
    if _JSON_SCORES.search(text):
        return _deita_json_chain_at(text, n)
    scores: dict[int, tuple[float, int]] = {}
    for match in _CHAIN_LINE.finditer(text):
        position = int(match.group(1) or match.group(2))
        score = _in_scale(match.group(3))
        if 1 <= position <= n and score is not None:
            scores[position] = (score, match.start(3))
    if len(scores) != n:
        return None
    return [scores[k] for k in range(1, n + 1)]


SCORE_TOKENS = {str(k): k for k in range(1, 7)}


def expected_score(
    logprobs: Sequence[TokenLogprob] | None, text: str, offset: int | None, parsed: float
) -> float:
    """DEITA's expected score sum p(k) * k over the score tokens "1".."6".

    ``offset`` is where the parsed number starts in ``text``; the token there must
    be the score digit alone (spaces aside). Its top alternatives that are score
    tokens (" 4" and "4" are one) are renormalised to probabilities. Without
    logprobs, when the tokens do not spell ``text``, or when no alternative is a
    score token, the parsed number is returned.
    """
    if not logprobs or offset is None:
        return parsed
    joined = "".join(entry.token for entry in logprobs)
    if joined.strip() != text.strip():
        return parsed
    offset += (len(joined) - len(joined.lstrip())) - (len(text) - len(text.lstrip()))
    start = 0
    for entry in logprobs:
        end = start + len(entry.token)
        if start <= offset < end:
            if entry.token.strip() not in SCORE_TOKENS:
                return parsed
            mass: dict[int, float] = {}
            for token, logprob in entry.top.items():
                k = SCORE_TOKENS.get(token.strip())
                if k is not None:
                    mass[k] = mass.get(k, 0.0) + math.exp(logprob)
            total = sum(mass.values())
            if total <= 0:
                return parsed
            return sum(k * p for k, p in mass.items()) / total
        start = end
    return parsed


def parse_alpagasus_score(text: str) -> float | None:
    """An AlpaGasus judge's 0-5 score, or None.

    The JSON reply asked for, ``{"score": N, "explanation": "..."}``; failing that
    (a server that wrote text), the paper's form: the first non-empty line is the
    score alone (``4.5``; ``4.5/5`` and a trailing period are accepted), else the
    first ``score: N`` anywhere.
    """
    found = _json_number_at(text, "score")
    if found is not None:
        value = found[0]
    else:
        first = _first_line(text)
        match = re.fullmatch(rf"\**{_NUMBER}\**\s*(?:/\s*5(?:\.0)?)?\s*\.?", first)
        if match is None:
            match = re.search(rf"score\s*(?:is|of)?\s*[:：=]?\s*\**\s*{_NUMBER}", text, re.I)
        if match is None:
            return None
        value = match.group(1)
    score = float(value)
    return score if 0.0 <= score <= 5.0 else None


# --- the scorers (engine tasks) ---------------------------------------------------------


class _Unparseable(Exception):
    pass


def _require_variables(template: PromptTemplate, names: set[str], what: str) -> None:
    if set(template.variables) != names:
        raise ConfigError(
            f"{what}: template {template.id} ({template.source}) must use exactly the "
            f"variables {sorted(names)} (it uses {sorted(template.variables)})"
        )


def _with_meta(record: Record, key: str, value: dict[str, Any]) -> Record:
    return dataclasses.replace(record, meta={**record.meta, key: value})


# DEITA evolves a seed five times and rank-scores the six variants together.
MAX_CHAIN = 6


def _chain_of(record: Record, key: str) -> list[str]:
    """The earlier versions an evolver kept in ``meta[key]`` (oldest first), as far back
    as fits ``MAX_CHAIN`` with the record itself; [] when there are none."""
    chain = record.meta.get(key)
    if not isinstance(chain, list) or not all(isinstance(v, str) and v.strip() for v in chain):
        return []
    return chain[-(MAX_CHAIN - 1) :]


class DeitaScorer:
    """DEITA's evol score (Liu et al., ICLR 2024, arXiv 2312.15685), judged directly.

    Complexity c and quality q are each scored on 1-6:

    - a record with an evolution chain is rank-scored with it, as in the paper: the
      earlier instructions in ``meta["instruction_chain"]`` (written by
      ``EvolInstruct``'s in-depth ops) and the record's own instruction go into one
      prompt (``prompts/deita_complexity_chain.yaml``, op
      ``deita_complexity_chain``) that scores every variant; the earlier responses
      in ``meta["response_chain"]`` (Evol-Quality rewrites of the same instruction)
      likewise for quality (``prompts/deita_quality_chain.yaml``). The record's
      score is the one at its own (last) position; the chain's scores are kept in
      ``meta["deita"]["chain"]``. At most ``MAX_CHAIN`` = 6 variants (the seed and
      five evolutions in the paper): a longer chain keeps its latest versions;
    - otherwise the item is scored alone (``prompts/deita_complexity.yaml``,
      ``prompts/deita_quality.yaml``, ops ``deita_complexity``/``deita_quality``).

    Each request carries a JSON Schema (:data:`DEITA_SCHEMA`, ``{"score": N}`` with N
    one of 1..6; :func:`deita_chain_schema`, ``{"scores": [...]}`` with exactly one
    score per variant): a server gets it as its ``response_format``, the local model
    writes the JSON by construction and picks each score among 1..6. The reply is
    not held to it: a server that writes the paper's text forms anyway
    (``##Complexity: 4``, ``[Score 2]: 5``) is read by the same parsers.

    The params ask for the top token logprobs; when the reply has them, a score is
    the expected value sum p(k) * k over the tokens "1".."6" at the score's
    position (:func:`expected_score`), otherwise the parsed integer. The record
    gets ``meta["deita"] = {"complexity": c, "quality": q, "score": c * q}``. A
    conversation (scored turn by turn, alone) sums c * q over its turns
    (``score``), keeps the per-turn scores in ``turns``, and reports the mean c
    and q.

    Differences from the paper, on purpose: the paper trains 7B scorers, we ask a
    judge model. Rejections: ``unparseable_score`` (with the reply's first
    line), ``missing_response`` (no response to score).
    """

    def __init__(
        self,
        *,
        complexity_template: PromptTemplate | None = None,
        quality_template: PromptTemplate | None = None,
        complexity_chain_template: PromptTemplate | None = None,
        quality_chain_template: PromptTemplate | None = None,
        params: dict[str, Any] | None = None,
    ) -> None:
        self.complexity_template = complexity_template or builtin_template("deita_complexity")
        self.quality_template = quality_template or builtin_template("deita_quality")
        self.complexity_chain_template = complexity_chain_template or builtin_template(
            "deita_complexity_chain"
        )
        self.quality_chain_template = quality_chain_template or builtin_template(
            "deita_quality_chain"
        )
        _require_variables(self.complexity_template, {"instruction"}, "DeitaScorer")
        _require_variables(self.quality_template, {"instruction", "response"}, "DeitaScorer")
        _require_variables(self.complexity_chain_template, {"instructions"}, "DeitaScorer")
        _require_variables(self.quality_chain_template, {"instruction", "responses"}, "DeitaScorer")
        self.params = dict(DEITA_PARAMS if params is None else params)

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        pairs = turn_pairs(record)
        if not pairs or any(not answer.strip() for _, answer in pairs):
            return Result.reject(record, "missing_response", "DEITA quality needs a response")
        turns = []
        chains: dict[str, list[float]] = {}
        try:
            if len(pairs) == 1:
                c, q = await self._score_single_turn(record, ctx, *pairs[0], chains)
                turns.append({"complexity": c, "quality": q, "score": c * q})
            else:
                for i, (instruction, response) in enumerate(pairs):
                    c = await self._score(ctx, "complexity", i, instruction=instruction)
                    q = await self._score(
                        ctx, "quality", i, instruction=instruction, response=response
                    )
                    turns.append({"complexity": c, "quality": q, "score": c * q})
        except _Unparseable as exc:
            return Result.reject(record, "unparseable_score", str(exc))
        if len(turns) == 1:
            deita: dict[str, Any] = dict(turns[0])
            if chains:
                deita["chain"] = chains
        else:
            deita = {
                "complexity": sum(t["complexity"] for t in turns) / len(turns),
                "quality": sum(t["quality"] for t in turns) / len(turns),
                "score": sum(t["score"] for t in turns),
                "turns": turns,
            }
        return Result.accept(_with_meta(record, "deita", deita))

    async def _score_single_turn(
        self,
        record: Record,
        ctx: RecordContext,
        instruction: str,
        response: str,
        chains: dict[str, list[float]],
    ) -> tuple[float, float]:
        """(c, q) of a one-turn record: each rank-scored with its chain when it has one."""
        earlier = _chain_of(record, "instruction_chain")
        if earlier:
            extra = str(record.get("input") or "").strip() if record.kind == "instruction" else ""
            variants = [f"{text}\n\n{extra}" if extra else text for text in earlier]
            chains["complexity"] = await self._score_chain(
                ctx, "complexity", instructions=[*variants, instruction]
            )
            c = chains["complexity"][-1]
        else:
            c = await self._score(ctx, "complexity", 0, instruction=instruction)
        earlier = _chain_of(record, "response_chain")
        if earlier:
            chains["quality"] = await self._score_chain(
                ctx, "quality", instruction=instruction, responses=[*earlier, response]
            )
            q = chains["quality"][-1]
        else:
            q = await self._score(ctx, "quality", 0, instruction=instruction, response=response)
        return c, q

    async def _score(self, ctx: RecordContext, aspect: str, turn: int, **values: str) -> float:
        template = self.complexity_template if aspect == "complexity" else self.quality_template
        reply = await ctx.ask(
            template,
            op=f"deita_{aspect}",
            params=self.params,
            schema=DEITA_SCHEMA,
            validate=False,
            **values,
        )
        found = _deita_score_at(reply.text, aspect)
        if found is None:
            where = f" (turn {turn + 1})" if turn else ""
            raise _Unparseable(
                f"deita {aspect}{where}: no 1-6 score in the reply: {_first_line(reply.text)!r}"
            )
        return _expected(reply, *found)

    async def _score_chain(self, ctx: RecordContext, aspect: str, **values: Any) -> list[float]:
        """One rank-scoring call over a chain; the scores of its variants, in order."""
        if aspect == "complexity":
            template, n = self.complexity_chain_template, len(values["instructions"])
        else:
            template, n = self.quality_chain_template, len(values["responses"])
        params = dict(self.params)
        if "max_tokens" in params:  # room for one "[Score k]: N" line (~8 tokens) each
            params["max_tokens"] = max(int(params["max_tokens"]), 8 * n + 16)
        reply = await ctx.ask(
            template,
            op=f"deita_{aspect}_chain",
            params=params,
            schema=deita_chain_schema(n),
            validate=False,
            **values,
        )
        found = _deita_chain_at(reply.text, n)
        if found is None:
            raise _Unparseable(
                f"deita {aspect} chain of {n}: not one 1-6 score per variant in the reply: "
                f"{_first_line(reply.text)!r}"
            )
        return [_expected(reply, score, offset) for score, offset in found]


def _expected(reply: Completion, score: float, offset: int) -> float:
    return expected_score(reply.logprobs, reply.text, offset, score)


class AlpagasusRater:
    """AlpaGasus (Chen et al., 2023): a judge rates the response's accuracy on 0-5.

    One call (op ``alpagasus_rating``) per record, with :data:`ALPAGASUS_SCHEMA`:
    ``{"score": s, "explanation": "..."}``, the score first as in the paper, on 0-5
    in half points. A text reply is read the paper's way (:func:`parse_alpagasus_score`).
    Writes ``meta["alpagasus"] = {"score": s}``.
    Rejections: ``unparseable_score`` (with the reply's first line),
    ``missing_response``. Turns are shown to the judge as ``role: content`` lines.
    """

    def __init__(
        self, *, template: PromptTemplate | None = None, params: dict[str, Any] | None = None
    ) -> None:
        self.template = template or builtin_template("alpagasus_rating")
        _require_variables(self.template, {"instruction", "input", "response"}, "AlpagasusRater")
        self.params = dict(ALPAGASUS_PARAMS if params is None else params)

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        prompt, response_field = _prompt_field(record)
        response = _turns_text(record.get(response_field))
        if not response.strip():
            return Result.reject(record, "missing_response", f"field {response_field!r} is empty")
        reply = await ctx.ask(
            self.template,
            op="alpagasus_rating",
            params=self.params,
            schema=ALPAGASUS_SCHEMA,
            validate=False,
            instruction=_turns_text(record.get(prompt)),
            input=str(record.get("input") or "") if record.kind == "instruction" else "",
            response=response,
        )
        score = parse_alpagasus_score(reply.text)
        if score is None:
            return Result.reject(
                record,
                "unparseable_score",
                f"alpagasus: no 0-5 score in the reply: {_first_line(reply.text)!r}",
            )
        return Result.accept(_with_meta(record, "alpagasus", {"score": score}))


# --- selection ----------------------------------------------------------------------


def _check_budget(budget: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigError(f"selection budget must be an integer >= 0 (got {budget!r})")
    return budget


def _drop(record: Record, reason: str, detail: str) -> Rejection:
    return Rejection(record.id, reason, detail, record.to_json())


def _meta_score(record: Record, key: str) -> float | None:
    block = record.meta.get(key)
    score = block.get("score") if isinstance(block, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        return None
    return float(score)


def _split(
    records: list[Record], chosen: set[int], dropped: dict[int, Rejection]
) -> tuple[list[Record], list[Rejection]]:
    """Selected records and rejections, both in input order."""
    selected = [r for i, r in enumerate(records) if i in chosen]
    return selected, [dropped[i] for i in sorted(dropped)]


def _embed(records: list[Record], embedder: Embedder, fields: Sequence[str] | None):
    if not records:
        return np.zeros((0, 1), dtype=np.float32)
    vectors = np.asarray(embedder.embed([text_of(r, fields) for r in records]), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def select_deita(
    records: Sequence[RecordLike],
    budget: int,
    tau: float = 0.9,
    embedder: Embedder | None = None,
    *,
    fields: Sequence[str] | None = None,
) -> tuple[list[Record], list[Rejection]]:
    """DEITA's score-first, diversity-aware selection (the "Repr filter").

    Sort by ``meta.deita.score`` descending (ties: lowest id), walk the list and add
    a record only when its cosine similarity to *every* record selected so far is
    <= ``tau`` (the paper's algorithm; distilabel's DeitaFiltering compares against
    the whole pool instead); stop at ``budget``. ``tau >= 1`` skips the embedding and
    gives exactly the top ``budget`` by score. Paper: tau = 0.9, budgets 6K / 10K.
    Dropped: ``too_similar`` (naming the closest selected record and the cosine),
    ``over_budget``, ``unscored`` (no ``meta.deita.score``).
    """
    budget = _check_budget(budget)
    items = [_as_record(r) for r in records]
    dropped: dict[int, Rejection] = {}
    scored = []
    for i, record in enumerate(items):
        score = _meta_score(record, "deita")
        if score is None:
            dropped[i] = _drop(record, "unscored", "no meta.deita.score; run DeitaScorer first")
        else:
            scored.append((-score, record.id, i))
    scored.sort()
    check = tau < 1.0
    if check and embedder is None:
        raise ConfigError("select_deita: tau < 1 needs an embedder (e.g. load_embedder())")
    vectors = _embed(items, embedder, fields) if check and scored else None
    chosen: list[int] = []
    # The selected vectors, filled row by row: each candidate meets them in one product.
    kept = np.empty((min(budget, len(scored)), vectors.shape[1] if vectors is not None else 0))
    for _, _, i in scored:
        record = items[i]
        if len(chosen) >= budget:
            dropped[i] = _drop(record, "over_budget", f"budget {budget} already filled")
            continue
        if check and chosen:
            assert vectors is not None
            sims = kept[: len(chosen)] @ vectors[i]
            best = int(np.argmax(sims))
            if sims[best] > tau:
                closest = items[chosen[best]].id
                dropped[i] = _drop(
                    record,
                    "too_similar",
                    f"too similar to {closest} (cosine {sims[best]:.4f} > tau {tau})",
                )
                continue
        if vectors is not None:
            kept[len(chosen)] = vectors[i]
        chosen.append(i)
    return _split(items, set(chosen), dropped)


def select_alpagasus(
    records: Sequence[RecordLike], min_score: float = 4.5, *, budget: int | None = None
) -> tuple[list[Record], list[Rejection]]:
    """AlpaGasus (Chen et al., 2023): keep ``meta.alpagasus.score >= min_score`` (4.5 in
    the paper: Alpaca 52K -> ~9K). Dropped: ``low_score`` (with the score),
    ``unscored``. With ``budget``, only the best ``budget`` of those kept stay (ties:
    lowest id), the rest dropped ``over_budget``: not in the paper, off by default.
    """
    items = [_as_record(r) for r in records]
    dropped: dict[int, Rejection] = {}
    kept: list[tuple[float, str, int]] = []
    for i, record in enumerate(items):
        score = _meta_score(record, "alpagasus")
        if score is None:
            dropped[i] = _drop(
                record, "unscored", "no meta.alpagasus.score; run AlpagasusRater first"
            )
        elif score < min_score:
            dropped[i] = _drop(record, "low_score", f"score {score:g} < {min_score:g}")
        else:
            kept.append((-score, record.id, i))
    if budget is not None:
        kept.sort()
        for _, _, i in kept[_check_budget(budget) :]:
            dropped[i] = _drop(items[i], "over_budget", f"budget {budget} already filled")
        kept = kept[:budget]
    return _split(items, {i for _, _, i in kept}, dropped)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(len(points), len(centres))`` squared Euclidean distances, without the
    ``n x k x d`` intermediate a broadcast difference would build."""
    sq = (points**2).sum(axis=1)[:, None] - 2.0 * points @ centres.T + (centres**2).sum(axis=1)
    return np.maximum(sq, 0.0)


def kmeans(
    vectors: np.ndarray, k: int, rng: np.random.Generator, *, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii, 2007).

    Returns ``(labels, centroids)``. All randomness comes from ``rng``. An emptied
    cluster is re-seeded at the point farthest from its centroid.
    """
    n = len(vectors)
    k = max(1, min(k, n))
    centroids = np.empty((k, vectors.shape[1]))
    centroids[0] = vectors[rng.integers(n)]
    closest = ((vectors - centroids[0]) ** 2).sum(axis=1)
    for j in range(1, k):
        total = closest.sum()
        pick = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centroids[j] = vectors[pick]
        closest = np.minimum(closest, ((vectors - centroids[j]) ** 2).sum(axis=1))
    labels = np.full(n, -1)
    for _ in range(max_iter):
        distances = _squared_distances(vectors, centroids)
        new_labels = distances.argmin(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = vectors[labels == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
            else:
                far = int(distances[np.arange(n), labels].argmax())
                centroids[j] = vectors[far]
    return labels, centroids


def greedy_kcenter(vectors: np.ndarray, m: int, *, first: int = 0) -> list[int]:
    """Farthest-point greedy k-center (Gonzalez, 1985): start at ``first``, then
    repeatedly add the point whose Euclidean distance to the selected set is largest
    (ties: lowest index). Returns ``min(m, len(vectors))`` indexes in pick order."""
    n = len(vectors)
    if n == 0 or m <= 0:
        return []
    picked = [first]
    gap = np.sqrt(((vectors - vectors[first]) ** 2).sum(axis=1))
    gap[first] = -1.0
    while len(picked) < min(m, n):
        nxt = int(np.argmax(gap))
        picked.append(nxt)
        gap = np.minimum(gap, np.sqrt(((vectors - vectors[nxt]) ** 2).sum(axis=1)))
        gap[picked] = -1.0
    return picked


def _allocate(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` across clusters in proportion to their sizes (largest remainder,
    ties: lower cluster index), never more than a cluster holds."""
    quotas = [0] * len(sizes)
    left = min(budget, sum(sizes))
    while left > 0:
        open_ = [j for j, size in enumerate(sizes) if quotas[j] < size]
        room = sum(sizes[j] - quotas[j] for j in open_)
        shares = {j: left * (sizes[j] - quotas[j]) / room for j in open_}
        given = 0
        for j in open_:
            add = min(int(shares[j]), sizes[j] - quotas[j])
            quotas[j] += add
            given += add
        rest = left - given
        order = sorted(open_, key=lambda j: (-(shares[j] - int(shares[j])), j))
        for j in order:
            if rest == 0:
                break
            if quotas[j] < sizes[j]:
                quotas[j] += 1
                rest -= 1
        left = rest
    return quotas


def select_kcenter(
    records: Sequence[RecordLike],
    budget: int,
    embedder: Embedder,
    k: int | None = None,
    seed: int = 0,
    *,
    fields: Sequence[str] | None = None,
) -> tuple[list[Record], list[Rejection]]:
    """LTD, "Maybe Only 0.5% Data is Needed" (Chen et al., 2023): embed each record
    (instruction + response by default), L2-normalise, k-means, then greedy k-center
    inside each cluster, starting from the point nearest its centroid.

    The budget is split across clusters in proportion to their sizes (largest
    remainder). ``k`` defaults to ``max(1, budget // 10)``: the paper's encoder and K
    are not verified here, so both are parameters. Deterministic for a given
    ``seed`` (a NumPy generator made from it). Dropped: ``not_selected``.
    """
    budget = _check_budget(budget)
    items = [_as_record(r) for r in records]
    chosen: set[int] = set()
    if items and budget:
        vectors = _embed(items, embedder, fields)
        clusters = max(1, budget // 10) if k is None else k
        if clusters < 1:
            raise ConfigError(f"select_kcenter: k must be >= 1 (got {k})")
        labels, centroids = kmeans(vectors, clusters, np.random.default_rng(seed))
        groups = [np.flatnonzero(labels == j) for j in range(len(centroids))]
        quotas = _allocate([len(g) for g in groups], budget)
        for group, centroid, quota in zip(groups, centroids, quotas, strict=True):
            if quota == 0:
                continue
            members = vectors[group]
            start = int(((members - centroid) ** 2).sum(axis=1).argmin())
            chosen.update(int(group[p]) for p in greedy_kcenter(members, quota, first=start))
    dropped = {
        i: _drop(r, "not_selected", f"k-center kept {len(chosen)} of {len(items)}")
        for i, r in enumerate(items)
        if i not in chosen
    }
    return _split(items, chosen, dropped)


def select_random(
    records: Sequence[RecordLike], budget: int, seed: int = 0
) -> tuple[list[Record], list[Rejection]]:
    """The baseline: ``budget`` records drawn uniformly without replacement, with a
    ``random.Random(seed)`` of its own. Dropped: ``not_selected``."""
    budget = _check_budget(budget)
    items = [_as_record(r) for r in records]
    chosen = set(random.Random(seed).sample(range(len(items)), min(budget, len(items))))
    dropped = {
        i: _drop(r, "not_selected", f"random sample of {len(chosen)} (seed {seed})")
        for i, r in enumerate(items)
        if i not in chosen
    }
    return _split(items, chosen, dropped)


def _alpagasus(records: Sequence[RecordLike], budget: int | None = None, **kw: Any):
    return select_alpagasus(records, budget=budget, **kw)


SELECTORS: dict[str, Callable[..., tuple[list[Record], list[Rejection]]]] = {
    "deita": select_deita,
    "alpagasus": _alpagasus,
    "kcenter": select_kcenter,
    "random": select_random,
}


def select(
    records: Sequence[RecordLike], method: str, budget: int | None = None, **kw: Any
) -> tuple[list[Record], list[Rejection]]:
    """Run the selector named ``method`` (``deita``, ``alpagasus``, ``kcenter``,
    ``random``); ``kw`` go to it. Only ``alpagasus`` runs without a budget."""
    selector = SELECTORS.get(method)
    if selector is None:
        hint = difflib.get_close_matches(method, list(SELECTORS), n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"unknown selection method {method!r}; use one of {', '.join(SELECTORS)}.{suggestion}"
        )
    if budget is None and method != "alpagasus":
        raise ConfigError(f"selection method {method!r} needs a budget")
    known = set(inspect.signature(selector).parameters) - {"records", "budget"}
    if method == "alpagasus":
        known = set(inspect.signature(select_alpagasus).parameters) - {"records", "budget"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ConfigError(
            f"selection method {method!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return selector(records, budget=budget, **kw)
