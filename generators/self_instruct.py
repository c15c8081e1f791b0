"""Self-Instruct: grow a task pool from a few seed instructions.

Wang et al., 2023, "Self-Instruct: Aligning Language Models with Self-Generated
Instructions" (arXiv 2212.10560), as its reference code does it:

- the pool starts as the seeds (at least 8); each prompt shows 8 in-context tasks, 2
  generated ones and 6 seeds, each sampled without replacement; while fewer than 2
  are generated the seeds fill in (``IN_CONTEXT``, ``GENERATED_IN_CONTEXT``);
- the model continues the numbered list with new tasks;
- a new instruction is dropped when it has fewer than 3 or more than 150 words
  (``too_short``, ``too_long``), asks for images, graphs, files or other non-text
  material (``non_text``), starts with punctuation (``bad_start``), or has ROUGE-L F
  >= 0.7 with any pool instruction (``near_duplicate``, with the id it ``lost_to``);
  the last rule is applied to the pool as of the prompt, here, and again against
  every record kept, at the final write (:class:`~evoforge.generators.grow_pool.GrowSelector`);
- each kept instruction is classified (``self_instruct_classify``) and its instance
  written output-first for classification tasks, input-first for the others.

The paper grows its pool one batch of prompts at a time; here the pool grows between
passes of the engine (a pass prompts from the pool left by the one before), so a run
is reproducible and resumable. Rejection reasons: the filters above, plus
``empty_output`` (the instance had no output).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

from evoforge.engine.context import RecordContext
from evoforge.generators.grow_pool import starts_with_punctuation, word_count
from evoforge.generators.rouge import NearDuplicateIndex
from evoforge.prompting import builtin_template
from evoforge.records import Record
from evoforge.steps import Rejection, Result

IN_CONTEXT = 8  # tasks shown per prompt (the reference code's num_prompt_instructions)
GENERATED_IN_CONTEXT = 2  # of which generated ones, when the pool has them
NEW_PER_PROMPT = 8  # new tasks asked for per prompt
MIN_WORDS, MAX_WORDS = 3, 150
MIN_SEEDS = IN_CONTEXT
# Tasks a text-only model cannot do (the reference code's blacklist, our own list).
NON_TEXT_WORDS = frozenset(
    "image images picture pictures photo photos photograph graph graphs chart charts "
    "diagram diagrams flowchart plot draw drawing sketch file files attachment attached "
    "video videos audio recording map maps".split()
)
_NUMBERED = re.compile(r"^\s*(?:task\s*)?(\d{1,3})\s*[.):]\s*(.+?)\s*$", re.IGNORECASE)
STEP = "generator.self_instruct"


def parse_tasks(text: str) -> list[str]:
    """The numbered tasks of a reply, in order (``12. Write ...`` or ``Task 12: ...``); a
    reply with no numbered line gives its lines, but those ending with a colon (a
    preamble such as "Here are the new tasks:")."""
    tasks = []
    for line in text.splitlines():
        match = _NUMBERED.match(line)
        if match and match.group(2).strip():
            tasks.append(match.group(2).strip())
    if tasks:
        return tasks
    return [line.strip() for line in text.splitlines() if line.strip() and
            not line.rstrip().endswith(":")]  # fmt: skip


def in_context_sample(
    seeds: list[tuple[str, str]], generated: list[tuple[str, str]], rng: random.Random
) -> list[tuple[str, str]]:
    """2 generated tasks (fewer while the pool has fewer) and seeds up to 8, without
    replacement, shuffled: the reference code's sampling."""
    chosen = rng.sample(generated, min(GENERATED_IN_CONTEXT, len(generated)))
    chosen += rng.sample(seeds, IN_CONTEXT - len(chosen))
    rng.shuffle(chosen)
    return chosen


def static_filter(instruction: str) -> tuple[str, str] | None:
    """The per-instruction rules: ``(reason, detail)``, or ``None`` when it passes."""
    words = word_count(instruction)
    if words < MIN_WORDS:
        return "too_short", f"{words} words; Self-Instruct keeps {MIN_WORDS} to {MAX_WORDS}"
    if words > MAX_WORDS:
        return "too_long", f"{words} words; Self-Instruct keeps {MIN_WORDS} to {MAX_WORDS}"
    hits = sorted(NON_TEXT_WORDS.intersection(re.findall(r"\w+", instruction.lower())))
    if hits:
        return "non_text", f"asks for non-text material ({', '.join(hits)})"
    if starts_with_punctuation(instruction):
        return "bad_start", "starts with punctuation"
    return None


@dataclass
class SelfInstructPlanner:
    """The prompts of each pass: ids ``self-instruct/pPASS/INDEX``, each with its 8
    in-context tasks drawn from the pool left by the previous pass."""

    seeds: list[tuple[str, str]]
    seed: int = 0
    exhausted: set[str] = field(default_factory=set)

    def plan(self, prompts: int, pass_: int, generated: list[tuple[str, str]]) -> list[Record]:
        items = []
        for index in range(prompts):
            item_id = f"self-instruct/p{pass_:03d}/{index:05d}"
            rng = random.Random(f"{self.seed}\x1f{item_id}")
            tasks = in_context_sample(self.seeds, generated, rng)
            fields = {"tasks": [text for _, text in tasks], "task_ids": [i for i, _ in tasks]}
            items.append(Record("grow_prompt", fields, id=item_id, meta={"pass": pass_}))
        return items


@dataclass
class SelfInstructTask:
    """One prompt in, up to ``NEW_PER_PROMPT`` instruction records out (see the module).

    ``pool`` is the pool as of the current pass (set by the driver before each pass);
    ``instances=False`` writes the instructions alone, without input and output."""

    instances: bool = True
    pool: NearDuplicateIndex = field(default_factory=NearDuplicateIndex)

    async def __call__(self, item: Record, ctx: RecordContext) -> Result:
        propose = builtin_template("self_instruct_propose")
        tasks = list(item["tasks"])
        reply = await ctx.ask(
            propose, op="self_instruct_propose", tasks=tasks, start=len(tasks) + 1,
            count=NEW_PER_PROMPT,
        )  # fmt: skip
        result = Result()
        pass_ = int(item.meta.get("pass", 1))
        shown = {text.strip().lower() for text in tasks}
        fresh = [t for t in parse_tasks(reply.text) if t.strip().lower() not in shown]
        ctx.count("self_instruct.parse", seen=1, kept=len(fresh))
        for k, instruction in enumerate(fresh[:NEW_PER_PROMPT]):
            meta = {
                "grow": {"method": "self-instruct", "pass": pass_, "in_context": item["task_ids"]}
            }
            record = Record(
                "instruction", {"instruction": instruction}, id=f"{item.id}/{k}",
                lineage=[ctx.step("self_instruct_propose", propose)], meta=meta,
            )  # fmt: skip
            problem = static_filter(instruction)
            if problem is None:
                match = self.pool.closest(instruction)
                if match is not None:
                    detail = f"ROUGE-L F {match.score:.3f} >= {self.pool.threshold} with {match.id}"
                    result.rejections.append(Rejection.of(
                        record, "near_duplicate", detail, step=STEP, field="$.instruction",
                        lost_to=match.id,
                    ))  # fmt: skip
                    continue
            else:
                result.rejections.append(
                    Rejection.of(record, *problem, step=STEP, field="$.instruction")
                )
                continue
            made = await self._instance(record, ctx) if self.instances else record
            if isinstance(made, Rejection):
                result.rejections.append(made)
            else:
                result.records.append(made)
        return result

    async def _instance(self, record: Record, ctx: RecordContext) -> Record | Rejection:
        """Classify the task, then write its instance output-first or input-first."""
        instruction = record["instruction"]
        classify = builtin_template("self_instruct_classify")
        verdict = await ctx.ask(classify, op="self_instruct_classify", instruction=instruction)
        label = str((verdict.parsed or {}).get("classification", "no")).lower()
        is_classification = label == "yes"
        order = "output_first" if is_classification else "input_first"
        template = builtin_template(f"self_instruct_{order}")
        reply = await ctx.ask(template, op=f"self_instruct_{order}", instruction=instruction)
        parsed: dict[str, Any] = reply.parsed or {}
        output = str(parsed.get("output", "")).strip()
        if not output:
            return Rejection.of(
                record, "empty_output", "the instance has no output", step=STEP,
                field="$.output",
            )  # fmt: skip
        meta = {**record.meta}
        meta["grow"] = {**meta["grow"], "is_classification": is_classification, "order": order}
        fields = {"instruction": instruction, "input": str(parsed.get("input", "")).strip(),
                  "output": output}  # fmt: skip
        lineage = [*record.lineage, ctx.step("self_instruct_classify", classify),
                   ctx.step(f"self_instruct_{order}", template)]  # fmt: skip
        return Record("instruction", fields, id=record.id, lineage=lineage, meta=meta)
