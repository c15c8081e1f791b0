"""The dry run of a recipe: what ``run_recipe`` will send, without calling a model.

``plan_recipe`` (``evoforge run --dry-run``) estimates, per step, the LLM calls,
prompt tokens and completion tokens, and prices them when given a price per
1M tokens. Calls are exact for ``answer``, ``evolve`` (when every evolution
passes) and ``select`` (DEITA on single-turn records); for ``rag`` and ``in2``
they are exact for a first pass that every sample passes, with
``max_calls`` bounding repairs and replacement passes. Prompt tokens come from
the real templates rendered over the real seeds, chunks and planned segments,
counted with ``count_tokens``; completion tokens are each call's reply cap, an
upper bound. See :func:`plan_recipe` for each estimate and how close it comes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from evoforge.api import EvolveOptions, In2Options, RagOptions
from evoforge.errors import ConfigError, InputError
from evoforge.io.documents import count_tokens
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.recipe import Recipe, _with_paths, load_recipe

# Sizes of text the model has not written yet, in count_tokens units. A question a
# generator writes, and the growth of an Evol-Instruct instruction per round (the
# paper asks for 10 to 20 more words).
QUESTION_TOKENS = 30
EVOL_GROWTH_TOKENS = 20
# An answer or response that a later prompt quotes: the reply cap, at most this.
ANSWER_TOKENS = 200


@dataclass
class StepPlan:
    """What one step is expected to cost. ``calls`` is what a run sends when every
    record passes on its first try; ``max_calls`` bounds repairs and extra passes."""

    name: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    records_in: int
    records_out: int
    max_calls: int | None = None
    note: str = ""

    def cost(self, price: tuple[float, float] | None) -> float | None:
        if price is None:
            return None
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6


@dataclass
class RecipePlan:
    recipe: Path
    run_dir: Path
    steps: list[StepPlan]
    price: tuple[float, float] | None = None

    @property
    def calls(self) -> int:
        return sum(step.calls for step in self.steps)

    @property
    def prompt_tokens(self) -> int:
        return sum(step.prompt_tokens for step in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(step.completion_tokens for step in self.steps)

    @property
    def cost(self) -> float | None:
        if self.price is None:
            return None
        return sum(step.cost(self.price) or 0.0 for step in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": str(self.recipe),
            "run_dir": str(self.run_dir),
            "steps": [asdict(step) for step in self.steps],
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
        }

    def render(self) -> str:
        """A table for a terminal."""
        rows = [("step", "records in->out", "LLM calls", "prompt tok", "completion tok", "cost")]
        for step in self.steps:
            calls = str(step.calls)
            if step.max_calls is not None and step.max_calls != step.calls:
                calls += f" (<= {step.max_calls})"
            cost = step.cost(self.price)
            rows.append((step.name, f"{step.records_in} -> {step.records_out}", calls,
                         f"{step.prompt_tokens:,}", f"{step.completion_tokens:,}",
                         "" if cost is None else f"${cost:.4f}"))  # fmt: skip
        total_cost = self.cost
        rows.append(("total", "", str(self.calls), f"{self.prompt_tokens:,}",
                     f"{self.completion_tokens:,}",
                     "" if total_cost is None else f"${total_cost:.4f}"))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )  # fmt: skip
            for row in rows
        ]
        lines.insert(1, "-" * len(lines[0]))
        lines.insert(len(lines) - 1, "-" * len(lines[0]))
        notes = [f"  {step.name}: {step.note}" for step in self.steps if step.note]
        head = f"plan for {self.recipe} (run folder {self.run_dir}); no model was called"
        tail = ("completion tokens are the reply caps (max_tokens), an upper bound; prompt "
                "tokens are evoforge's count_tokens over the rendered templates")  # fmt: skip
        return "\n".join([head, *lines, *notes, tail])


def _prompt_tokens(template: PromptTemplate, **values: Any) -> int:
    """Tokens of ``template`` rendered with ``values`` (only the variables it declares)."""
    values = {name: value for name, value in values.items() if name in template.variables}
    for name in template.variables:
        values.setdefault(name, "")
    return sum(count_tokens(m["content"]) for m in template.render(**values))


def _filler(tokens: int) -> str:
    """A text of ``tokens`` count_tokens units, standing in for text not written yet."""
    return " ".join(["word"] * max(0, tokens))


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {name: k for name, k in counts.items() if k}


def _chain_length(rounds: int, keep_all_rounds: bool) -> int:
    """Versions in a record's chain after ``rounds`` (their mean with keep_all_rounds),
    at most DEITA's ``MAX_CHAIN``."""
    from evoforge.validators.select import MAX_CHAIN

    versions = (rounds + 2) / 2 if keep_all_rounds else rounds + 1
    return min(MAX_CHAIN, max(1, round(versions)))


def _weighted(weights: dict[str, float], value: dict[str, float]) -> float:
    total = sum(weights.values())
    return sum(weights[name] * value[name] for name in weights if weights[name]) / total


class _Planner:
    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.reply = recipe.llm.max_output_tokens or 512
        self.answer_tokens = min(self.reply, ANSWER_TOKENS)
        self.steps: list[StepPlan] = []
        # Versions DEITA rank-scores together: (instructions, responses) per record.
        self.chain = (1, 1)
        # Whether the records reaching selection carry an answer for the judges.
        self.answered = True

    def plan(self) -> list[StepPlan]:
        recipe = self.recipe
        kind = recipe.generator_type
        count, record_kind = 0, "instruction"
        if kind == "answer":
            count = self._answer()
        elif kind == "evolve":
            count = self._evolve("evolve", recipe.generator, self._seed_texts(), None)
            record_kind = recipe.generator.kind
        elif kind == "rag":
            count = self._rag()
            record_kind = "rag"
        elif kind == "in2":
            count = self._in2()
            record_kind = "in2"
        if recipe.evolvers is not None:
            evolution = recipe.evolvers
            if kind is not None:
                evolution = replace(evolution, kind=record_kind)
                texts = None
            else:
                texts = self._seed_texts()
            count = self._evolve("evolvers", evolution, texts, count)
        no_calls = "no model calls; records out is an upper bound"
        if recipe.validators is not None:
            self.steps.append(StepPlan("validate", 0, 0, 0, count, count, note=no_calls))
        if recipe.dedup is not None:
            self.steps.append(StepPlan("dedup", 0, 0, 0, count, count, note=no_calls))
        if recipe.selection is not None:
            self._select(count)
        return self.steps

    # -- sources

    def _seed_records(self, kind: str = "instruction") -> list[Any]:
        from evoforge.io.readers import SEED_FIELDS, read_records
        from evoforge.records import Record

        seeds = self.recipe.resolve(self.recipe.source.seeds or "")
        items = read_records(
            seeds, kind=kind, field_map=self.recipe.source.field_map, **SEED_FIELDS[kind]
        )
        return [item for item in items if isinstance(item, Record)]

    def _seed_texts(self) -> list[tuple[str, str, bool]]:
        """(instruction, input, has an output) of each valid instruction seed."""
        return [
            (r["instruction"], r.get("input") or "", bool(r.get("output")))
            for r in self._seed_records()
        ]

    # -- steps

    def _answer(self) -> int:
        template = builtin_template("answer")
        seeds = self._seed_texts()
        prompt = sum(_prompt_tokens(template, instruction=i, input=x) for i, x, _ in seeds)
        self.steps.append(
            StepPlan(
                "answer",
                len(seeds),
                prompt,
                len(seeds) * self.reply,
                len(seeds),
                len(seeds),
                note="one call per seed, exact",
            )  # fmt: skip
        )
        return len(seeds)

    def _evolve(
        self, name: str, evolution: EvolveOptions, seeds: list | None, count: int | None
    ) -> int:
        if evolution.kind != "instruction":
            return self._rewrite(name, evolution, count)
        from evoforge.evolvers.base import parse_weights
        from evoforge.evolvers.evol_instruct import JUDGE_PARAMS, OPS
        from evoforge.evolvers.evol_quality import QUALITY_OPS

        if seeds is None:  # the previous step's records: answered instructions
            seeds = [(_filler(QUESTION_TOKENS), "", True)] * (count or 0)
        weights = parse_weights(evolution.ops, OPS)
        templates = {op: builtin_template(f"evol_{op}") for op in OPS}
        judge, answer = builtin_template("evol_equal"), builtin_template("answer")
        per_round = 1 + int(evolution.judge) + int(evolution.answers)
        calls = len(seeds) * evolution.rounds * per_round
        prompt = completion = 0
        for instruction, source_input, _has_output in seeds:
            text = instruction
            for _round in range(evolution.rounds):
                prompt += round(_weighted(weights, {
                    op: _prompt_tokens(t, instruction=text, input=source_input)
                    for op, t in templates.items()
                }))  # fmt: skip
                new = f"{text} {_filler(EVOL_GROWTH_TOKENS)}"
                completion += self.reply
                if evolution.judge:
                    prompt += _prompt_tokens(judge, first=text, second=new)
                    completion += JUDGE_PARAMS["max_tokens"]
                if evolution.answers:
                    prompt += _prompt_tokens(answer, instruction=new, input=source_input)
                    completion += self.reply
                text = new
        out = len(seeds) * (evolution.rounds + 1 if evolution.keep_all_rounds else 1)
        # An evolved instruction drops its stale answer unless the round answers it.
        self.answered = evolution.answers or (
            evolution.rounds == 0 and all(has_output for _, _, has_output in seeds)
        )
        self.chain = (
            _chain_length(evolution.rounds, evolution.keep_all_rounds)
            if any(weights[op] for op in OPS if op != "breadth")
            else 1,
            _chain_length(evolution.quality_rounds, evolution.keep_all_rounds),
        )
        note = (f"{evolution.rounds} rounds x {len(seeds)} seeds x {per_round} calls "
                "(evolve" + (" + judge" if evolution.judge else "")
                + (" + answer" if evolution.answers else "") + "); exact when every "
                "evolution passes, fewer when one is rejected before its judge")  # fmt: skip
        if evolution.quality_rounds:
            quality = parse_weights(evolution.quality_ops, QUALITY_OPS, flag="--quality-ops")
            q_templates = {op: builtin_template(f"evol_quality_{op}") for op in QUALITY_OPS}
            # Evol-Quality rewrites the records Evol-Instruct passes on that have an
            # answer: the seed (round 0) when it came with one, an evolution when answered.
            kept = range(evolution.rounds + 1) if evolution.keep_all_rounds else [evolution.rounds]
            answered = 0
            for instruction, source_input, has_output in seeds:
                with_output = sum(has_output if r == 0 else evolution.answers for r in kept)
                answered += with_output
                per_call = round(_weighted(quality, {
                    op: _prompt_tokens(t, instruction=instruction, input=source_input,
                                       response=_filler(self.answer_tokens))
                    for op, t in q_templates.items()
                }))  # fmt: skip
                prompt += with_output * evolution.quality_rounds * per_call
            q_calls = answered * evolution.quality_rounds
            calls += q_calls
            completion += q_calls * self.reply
            note += f"; Evol-Quality: {evolution.quality_rounds} rounds x {answered} answers"
            if not answered:
                note += " (nothing to rewrite: set answers: true)"
        self.steps.append(StepPlan(name, calls, prompt, completion, len(seeds), out, note=note))
        return out

    def _rewrite(self, name: str, evolution: EvolveOptions, count: int | None) -> int:
        from evoforge.api import DEFAULT_REWRITE_MIX
        from evoforge.evolvers.ragas_rewrites import (
            DEFAULT_MAX_WORDS,
            _as_prompt_text,
            mix_from_spec,
        )
        from evoforge.records import sample_fields

        if count is None:
            records = self._seed_records(evolution.kind)
            n = len(records)
        else:
            records, n = [], count
        plan = mix_from_spec(evolution.mix or DEFAULT_REWRITE_MIX, n, self.recipe.seed)
        limits = {**DEFAULT_MAX_WORDS, **(evolution.max_words or {})}
        prompt = 0
        for i in range(n):
            op = plan.op_for(i)
            assert op is not None
            template = builtin_template(f"rewrite_{op}")
            if records:
                record = records[i]
                fields = sample_fields(record.kind, who="question rewrites")
                question = _as_prompt_text(record.get(fields.question) or "")
                answer = record.get(fields.answer) or ""
                contexts = list(record.get(fields.contexts) or [])
            else:
                question, answer = _filler(QUESTION_TOKENS), _filler(self.answer_tokens)
                contexts = [_filler(self.answer_tokens)] * 2
            values = {"question": question, "answer": answer, "max_words": limits.get(op, 0),
                      "context": "\n\n".join(contexts[:1] if op == "multi_context" else contexts),
                      "second_context": contexts[1] if len(contexts) > 1 else ""}  # fmt: skip
            prompt += _prompt_tokens(template, **values)
        note = f"one rewrite per seed by the mix {_nonzero(plan.counts)}, exact"
        self.steps.append(StepPlan(name, n, prompt, n * self.reply, n, n, note=note))
        return n

    def _rag(self) -> int:
        from evoforge.evolvers.ragas_rewrites import DEFAULT_MAX_WORDS
        from evoforge.generators.rag import parse_mix, plan_counts
        from evoforge.io.documents import chunk_documents, load_documents
        from evoforge.validators.critics import VERDICT_PARAMS, numbered_contexts

        rag: RagOptions = self.recipe.generator
        report = load_documents(
            [self.recipe.resolve(d) for d in self.recipe.source.docs or []],
            text_field=rag.text_field,
        )
        chunks = chunk_documents(
            report.documents, size=rag.chunk_size, overlap=rag.chunk_overlap, unit=rag.chunk_unit
        )
        if not chunks:
            raise InputError("the documents gave no chunks of text to ask questions about")
        counts = plan_counts(rag.n, parse_mix(rag.mix), self.recipe.seed)
        seed_template = builtin_template("rag_seed_question")
        seed_prompt = sum(_prompt_tokens(seed_template, context=c.text) for c in chunks) / len(
            chunks
        )
        typical = sorted(chunks, key=lambda c: len(c.text))[len(chunks) // 2].text
        question, answer = _filler(QUESTION_TOKENS), _filler(self.answer_tokens)
        judges = [builtin_template("critic_grounded"), builtin_template("critic_answerable")]
        limits = {**DEFAULT_MAX_WORDS, **(rag.max_words or {})}
        calls = prompt = completion = 0
        for kind, k in counts.items():
            contexts = [typical, typical] if kind == "multi_context" else [typical]
            per = 1
            tokens = seed_prompt
            done = self.reply
            if kind != "simple":
                per += 1
                tokens += _prompt_tokens(
                    builtin_template(f"rewrite_{kind}"), question=question, answer=answer,
                    context=typical, second_context=typical, max_words=limits.get(kind, 0),
                )  # fmt: skip
                done += self.reply
            if rag.critics:
                for judge in judges:
                    per += 1
                    tokens += _prompt_tokens(judge, question=question, reference=answer,
                                             contexts=numbered_contexts(contexts))  # fmt: skip
                    done += VERDICT_PARAMS["max_tokens"]
                if kind != "simple":
                    per += 1
                    tokens += _prompt_tokens(
                        builtin_template("evol_equal"), first=question, second=question
                    )
                    done += 8
            calls += per * k
            prompt += round(tokens * k)
            completion += done * k
        # A sample failing a critic costs one fix and its critics again; a failed
        # sample is replaced in a later pass with up to 1.5x margin.
        per_max = 2 * (calls / rag.n) + 1
        passes = 1 + 1.5 * (rag.max_passes - 1)
        upper = round(per_max * rag.n * passes)
        note = (f"{len(chunks)} chunks from {len(report.documents)} documents; plan "
                f"{_nonzero(counts)}; exact when every sample passes the critics on the first try; "
                "repairs and replacement passes add up to the bound")  # fmt: skip
        self.steps.append(
            StepPlan("rag", calls, prompt, completion, len(chunks), rag.n, upper, note)
        )
        return rag.n

    def _in2(self) -> int:
        in2: In2Options = _with_paths(self.recipe.generator, self.recipe, Path("."))
        corpus = [self.recipe.resolve(d) for d in self.recipe.source.docs or []]
        counts, planned = _in2_first_pass(corpus, in2, self.recipe.seed)
        fine, integration = (
            builtin_template("in2_fine_grained"),
            builtin_template("in2_integration"),
        )
        calls = prompt = 0
        for item in planned:
            kind = item["sample_type"]
            if kind == "general":
                continue
            calls += 1
            segments = item["segments"]
            if kind == "integration":
                pieces = "\n\n".join(f"# Piece {i}: {s['text']}" for i, s in enumerate(segments, 1))
                prompt += _prompt_tokens(integration, pieces=pieces)
            else:
                prompt += _prompt_tokens(fine, segment=segments[0]["text"])
        note = (f"plan {_nonzero(counts)}; one call per fine_grained, integration and short sample "
                "(general ones are copied), exact on the first pass; failed samples are "
                f"replaced in up to {in2.max_passes - 1} more passes")  # fmt: skip
        upper = round(calls * (1 + 1.5 * (in2.max_passes - 1)))
        self.steps.append(
            StepPlan("in2", calls, prompt, calls * self.reply, len(planned), in2.n, upper, note)
        )
        return in2.n

    def _select(self, count: int) -> None:
        from evoforge.validators.select import ALPAGASUS_PARAMS, DEITA_PARAMS

        spec = self.recipe.selection
        assert spec is not None
        out = count if spec.budget is None else min(count, spec.budget)
        if spec.method in ("deita", "alpagasus") and not self.answered:
            note = (f"{spec.method}: the records have no answers, so each is rejected as "
                    "missing_response without a call (set answers: true)")  # fmt: skip
            self.steps.append(StepPlan("select", 0, 0, 0, count, 0, note=note))
            return
        instruction, response = _filler(QUESTION_TOKENS), _filler(self.answer_tokens)
        if spec.method == "deita":
            # Evolved records are rank-scored with their earlier versions in one call.
            versions, responses = self.chain
            if versions > 1:
                per = _prompt_tokens(
                    builtin_template("deita_complexity_chain"),
                    instructions=[instruction] * versions,
                )
            else:
                per = _prompt_tokens(builtin_template("deita_complexity"), instruction=instruction)
            if responses > 1:
                per += _prompt_tokens(
                    builtin_template("deita_quality_chain"),
                    instruction=instruction,
                    responses=[response] * responses,
                )
            else:
                per += _prompt_tokens(
                    builtin_template("deita_quality"), instruction=instruction, response=response
                )
            step = StepPlan("select", 2 * count, per * count, 2 * count * DEITA_PARAMS[
                "max_tokens"], count, out, note="DEITA: complexity + quality per record "
                "with an answer; exact for single-turn records")  # fmt: skip
        elif spec.method == "alpagasus":
            template = builtin_template("alpagasus_rating")
            per = _prompt_tokens(template, instruction=instruction, input="", response=response)
            step = StepPlan("select", count, per * count, count * ALPAGASUS_PARAMS["max_tokens"],
                            count, count, note="AlpaGasus: one rating per record")  # fmt: skip
        else:
            step = StepPlan("select", 0, 0, 0, count, out, note=f"{spec.method}: no model calls")
        self.steps.append(step)


def _in2_first_pass(
    corpus: Sequence[Path], in2: In2Options, seed: int
) -> tuple[dict[str, int], list[Any]]:
    """The counts and first-pass scenarios ``in2_async`` plans for the same options
    (general records are not read: they cost no call)."""
    from evoforge.evolvers.base import exact_mix
    from evoforge.generators.in2 import In2Planner, SourceSampler, mix_weights
    from evoforge.generators.in2_assembly import Decontaminator, iter_corpus, load_tokenizer

    weights = mix_weights(in2.mix, has_general=in2.general is not None)
    if in2.short_ratio is not None:
        rest = sum(v for k, v in weights.items() if k != "short")
        weights = {k: (v / rest) * (1 - in2.short_ratio) for k, v in weights.items()}
        weights["short"] = in2.short_ratio
    counts = exact_mix(in2.n, weights, seed)
    decontaminator = Decontaminator.from_file(in2.decontaminate) if in2.decontaminate else None
    sampler = SourceSampler(
        counts, load_tokenizer(in2.tokenizer), segment_tokens=in2.segment_tokens,
        max_short_tokens=in2.max_tokens, pool_capacity=in2.pool_capacity, seed=seed,
    )  # fmt: skip
    for doc in iter_corpus(corpus, text_field=in2.text_field):
        if decontaminator is None or not decontaminator.contaminated(doc.text):
            sampler.consume(doc.id, doc.text)
    if sampler.documents == 0:
        raise InputError(f"no usable documents in {', '.join(map(str, corpus))}")
    planned = In2Planner(sampler, [], seed=seed).plan({**counts, "general": 0})
    return counts, planned


def plan_recipe(
    recipe: str | Path | Recipe,
    *,
    out: str | Path | None = None,
    price: tuple[float, float] | None = None,
) -> RecipePlan:
    """What ``run_recipe`` will send, without calling a model (``--dry-run``).

    Per step: LLM calls, prompt tokens and completion tokens. Prompt tokens
    render the real templates over the real seeds (answer, evolve), chunks
    (rag) and planned segments (in2), counted with ``count_tokens``; text the
    model has not written yet stands in as ``QUESTION_TOKENS`` for a question,
    ``min(max_output_tokens, ANSWER_TOKENS)`` for an answer and
    ``EVOL_GROWTH_TOKENS`` of growth per Evol-Instruct round. Completion tokens
    are each call's cap: ``max_output_tokens`` (default 512), or the judges'
    own caps (8 for the equality judge, 120 for critics, 32 for DEITA).

    Calls are exact for ``answer``, question rewrites, ``in2`` (first pass)
    and DEITA on single-turn records; for Evol-Instruct when every evolution
    passes (one rejected before its judge saves the judge and answer calls);
    for ``rag`` when every sample passes its critics first time, with
    ``max_calls`` bounding repairs and replacement passes. Records after
    validate / dedup are upper bounds, so a later select may score fewer.
    ``price`` is (input, output) dollars per 1M tokens.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    steps = _Planner(recipe).plan()
    return RecipePlan(recipe.path, recipe.run_dir(out), steps, price)


def parse_price(text: str) -> tuple[float, float]:
    """``"0.15,0.60"`` -> (input, output) per 1M tokens; one number prices both."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []  # refused below, with the other malformed prices
    if len(values) not in (1, 2) or any(v < 0 for v in values):
        raise ConfigError(f"--price {text!r}: give IN_PER_1M[,OUT_PER_1M], e.g. 0.15,0.60")
    return (values[0], values[-1])


__all__ = ["RecipePlan", "StepPlan", "parse_price", "plan_recipe"]
