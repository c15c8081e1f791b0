"""The DEITA and AlpaGasus judges: LLM scores per record, as engine tasks.

Scoring runs per record as engine tasks ``(record, ctx) -> Result``, so it gets
the engine's cache, retries and journal:

- :class:`DeitaScorer` -- DEITA (Liu et al., ICLR 2024, arXiv 2312.15685). A judge
  scores the complexity of the instruction and the quality of the (instruction,
  response) pair, each on 1-6, every record alone (``prompts/deita_complexity.yaml``,
  ``prompts/deita_quality.yaml``), so scores compare across the whole set; with
  ``mode="chain"`` (``--deita-mode chain``, the paper's labelling step) a record
  with an evolution chain is rank-scored together with its earlier versions in one
  prompt (``prompts/deita_{complexity,quality}_chain.yaml``). The judge is
  asked for JSON with a schema (``{"score": N}``, ``{"scores": [N, ...]}``), so a
  guided local model always writes a score. With token logprobs the score is the
  expected value over the score tokens. The evol score is
  complexity x quality, summed over the turns of a conversation. Writes
  ``meta["deita"]``.
- :class:`AlpagasusRater` -- AlpaGasus (Chen et al., 2023): a judge rates the
  response's accuracy on 0-5 (``prompts/alpagasus_rating.yaml``). Writes
  ``meta["alpagasus"]``.

An unparseable judge reply rejects the record as ``unparseable_score`` with the
reply's first line (the parsers are in :mod:`.replies`); it is not given a made-up
score.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from evoforge.engine.runner import RecordContext, Result
from evoforge.errors import ConfigError, did_you_mean
from evoforge.llm.base import Completion
from evoforge.options import DEITA_MODES
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.select.replies import (
    ALPAGASUS_SCHEMA,
    DEITA_SCHEMA,
    _deita_chain_at,
    _deita_score_at,
    _first_line,
    deita_chain_schema,
    expected_score,
    parse_alpagasus_score,
)
from evoforge.validators.select.texts import _prompt_field, _turns_text, turn_pairs

__all__ = ["ALPAGASUS_PARAMS", "DEITA_PARAMS", "MAX_CHAIN", "AlpagasusRater", "DeitaScorer"]

# Greedy judges; the replies are a short JSON object (DEITA) or a score and a paragraph.
# DEITA asks for the top token logprobs, for the expected score (a server that
# refuses them is asked without; the parsed integer is the score then).
DEITA_PARAMS = {"max_tokens": 32, "temperature": 0.0, "logprobs": True, "top_logprobs": 10}
ALPAGASUS_PARAMS = {"max_tokens": 256, "temperature": 0.0}


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

    Complexity c and quality q are each scored on 1-6. By default (``mode="record"``)
    every record is scored alone with the single-record prompts, chain or not, so the
    scores compare across the whole set: that is the score the paper's trained scorers
    give at selection time. ``mode="chain"`` (``--deita-mode chain``) is the paper's
    *labelling* step, whose rank scores compare only within one chain:

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
        mode: str = "record",
    ) -> None:
        if mode not in DEITA_MODES:
            raise ConfigError(
                f"DeitaScorer: mode {mode!r}; use one of {', '.join(DEITA_MODES)}"
                + did_you_mean(mode, DEITA_MODES)
            )
        self.mode = mode
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
        """(c, q) of a one-turn record: alone, or (``mode="chain"``) each rank-scored
        with its chain when it has one."""
        chained = self.mode == "chain"
        earlier = _chain_of(record, "instruction_chain") if chained else []
        if earlier:
            extra = str(record.get("input") or "").strip() if record.kind == "instruction" else ""
            variants = [f"{text}\n\n{extra}" if extra else text for text in earlier]
            chains["complexity"] = await self._score_chain(
                ctx, "complexity", instructions=[*variants, instruction]
            )
            c = chains["complexity"][-1]
        else:
            c = await self._score(ctx, "complexity", 0, instruction=instruction)
        earlier = _chain_of(record, "response_chain") if chained else []
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
