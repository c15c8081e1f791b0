"""Magpie: instructions sampled from an aligned chat model's own template, no seeds.

Xu et al., 2024, "Magpie: Alignment Data Synthesis from Scratch by Prompting Aligned
LLMs with Nothing" (arXiv 2406.08464):

- the model is given only its chat template's *pre-query* text (everything a rendered
  conversation has before the user's words) as a raw-text prompt, and what it writes is
  a user turn; it stops at the template's end-of-turn marker;
- the model then answers that instruction as an ordinary chat turn.

The pre-query text is derived by rendering the model's own chat template with one user
message (a sentinel) and cutting at the sentinel: SmolLM2's template inserts a default
system turn, so its pre-query text is that system turn plus ``<|im_start|>user\\n``, not
the bare ``<|im_start|>user\\n``. The stop marker is what the template writes right
after the user's words. The raw-text call needs a backend with ``complete_text``: the
embedded model, or an OpenAI-compatible ``/v1/completions`` server (vLLM, llama.cpp
server) with ``--chat-template``.

Filters (the paper filters by length, language and duplicates): instructions of 3 to
300 words (``too_short``, ``too_long``), in the ``language`` script (``wrong_language``),
not a copy of the template (``template_echo``), with a non-empty response
(``empty_response``); ROUGE-L near-duplicates of the pool are dropped at the final write.
The sampling settings of both calls are recorded in ``meta.sampling``. Temperature 1 and
top-p 1 for the user turn are our defaults (the paper's settings vary by model;
unverified).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.engine.context import RecordContext
from evoforge.errors import ConfigError
from evoforge.generators.grow_pool import word_count
from evoforge.records import Record
from evoforge.steps import Result
from evoforge.validators.heuristics import dominant_script

SENTINEL = "\x00EVOFORGE-USER-CONTENT\x00"
MIN_WORDS, MAX_WORDS = 3, 300
STEP = "generator.magpie"
_SPECIAL = re.compile(r"<\|[^|>]{1,40}\|>|\[/?INST\]|</?s>")


@dataclass(frozen=True)
class PreQuery:
    """The raw-text prompt that makes a chat model write a user turn, and where it stops."""

    prefix: str
    stop: list[str]


def render_template(template: str, messages: list[dict[str, str]], **tokens: str) -> str:
    """Render a Hugging Face chat template (Jinja) as ``apply_chat_template`` does."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.filters.setdefault("tojson", lambda value, **kw: json.dumps(value, **kw))
    return env.from_string(template).render(messages=messages, add_generation_prompt=False,
                                            **tokens)  # fmt: skip


def pre_query_from(template: dict[str, str]) -> PreQuery:
    """The text before the user's words in ``template`` and the marker after them."""
    tokens = {k: template.get(k, "") for k in ("bos_token", "eos_token")}
    rendered = render_template(template["template"], [{"role": "user", "content": SENTINEL}],
                               **tokens)  # fmt: skip
    if SENTINEL not in rendered:
        raise ConfigError("magpie: the chat template does not write the user's message")
    prefix, _, after = rendered.partition(SENTINEL)
    marker = after.strip().split()[0] if after.strip() else ""
    stop = [s for s in dict.fromkeys([marker, tokens["eos_token"]]) if s]
    if not prefix.strip():
        raise ConfigError("magpie: the chat template writes nothing before the user's message")
    return PreQuery(prefix, stop)


def load_template_file(path: str | Path) -> dict[str, str]:
    """A ``--chat-template``: a Jinja file, or a tokenizer folder's tokenizer_config.json."""
    path = Path(path)
    if path.is_dir():
        config_file = path / "tokenizer_config.json"
        if not config_file.is_file():
            raise ConfigError(f"--chat-template {path}: no tokenizer_config.json in the folder")
        config = json.loads(config_file.read_text("utf-8"))
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"),
                            None)  # fmt: skip
        if not template:
            raise ConfigError(f"--chat-template {path}: the tokenizer has no chat template")

        def token(name: str) -> str:
            value = config.get(name) or ""
            return value.get("content", "") if isinstance(value, dict) else str(value)

        return {"template": template, "bos_token": token("bos_token"),
                "eos_token": token("eos_token")}  # fmt: skip
    if not path.is_file():
        raise ConfigError(f"--chat-template {path}: no such file or folder")
    return {"template": path.read_text("utf-8"), "bos_token": "", "eos_token": ""}


async def pre_query(model: Any, chat_template: str | None) -> PreQuery:
    """The model's pre-query text: from ``chat_template`` if given, else its own template.
    A model without raw-text completion or without a known template is a ConfigError."""
    if not callable(getattr(model, "complete_text", None)):
        raise ConfigError(
            "magpie needs raw-text completion: --llm local, or openai:MODEL@URL of a server "
            "with /v1/completions (vLLM, llama.cpp server)"
        )
    if chat_template is not None:
        return pre_query_from(load_template_file(chat_template))
    template = await model.chat_template() if hasattr(model, "chat_template") else None
    if not template:
        raise ConfigError(
            "magpie needs the model's chat template: this model has none; pass "
            "--chat-template FILE (Jinja) or a tokenizer folder"
        )
    return pre_query_from(template)


def plan_slots(size: int, pass_no: int) -> list[Record]:
    """``size`` sampling slots; each slot's id seeds its sample."""
    return [Record("grow_slot", {}, id=f"magpie/p{pass_no:03d}/{i:05d}", meta={"pass": pass_no})
            for i in range(size)]  # fmt: skip


@dataclass
class MagpieTask:
    """One slot in: a sampled user turn and the model's response to it."""

    query: PreQuery
    sampling: dict[str, Any]
    language: str = "Latin"

    async def __call__(self, item: Record, ctx: RecordContext) -> Result:
        params = {**self.sampling, "seed": ctx.rng().randrange(2**31)}
        sampled = await ctx.client.complete_text(self.query.prefix, op="magpie_instruction",
                                                 params=params)  # fmt: skip
        instruction = sampled.text
        for stop in self.query.stop:
            instruction = instruction.split(stop, 1)[0]
        instruction = instruction.strip()
        grow = {"method": "magpie", "pass": int(item.meta.get("pass", 1))}
        meta: dict[str, Any] = {"grow": grow, "sampling": {"instruction": params}}
        lineage = [{**ctx.step("magpie_instruction"), "pre_query_chars": len(self.query.prefix)}]
        record = Record("instruction", {"instruction": instruction or "(none)"}, id=item.id,
                        lineage=lineage, meta=meta)  # fmt: skip
        problem = self._filter(instruction)
        if problem is not None:
            return Result.reject(record, *problem, step=STEP, field="$.instruction")
        response_params = {"seed": ctx.rng(1).randrange(2**31)}
        answer = await ctx.client.complete(
            [{"role": "user", "content": instruction}], op="magpie_response", params=response_params
        )
        output = answer.text.strip()
        meta["sampling"]["response"] = {**ctx.client.params, **response_params}
        record.fields.update(instruction=instruction, input="", output=output)
        record.lineage.append(ctx.step("magpie_response"))
        if not output:
            return Result.reject(record, "empty_response", "the model gave no response",
                                 step=STEP, field="$.output")  # fmt: skip
        return Result.accept(record)

    def _filter(self, instruction: str) -> tuple[str, str] | None:
        if instruction and (_SPECIAL.search(instruction) or instruction in self.query.prefix):
            return "template_echo", "the sample repeats chat-template markup"
        words = word_count(instruction)
        if words < MIN_WORDS:
            return "too_short", f"{words} words; Magpie keeps {MIN_WORDS} to {MAX_WORDS}"
        if words > MAX_WORDS:
            return "too_long", f"{words} words; Magpie keeps {MIN_WORDS} to {MAX_WORDS}"
        script = dominant_script(instruction)
        if self.language != "any" and script != self.language:
            return "wrong_language", f"written in {script or 'no'} script, not {self.language}"
        return None
