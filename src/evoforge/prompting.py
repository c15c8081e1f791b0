"""Prompt templates: data files under ``prompts/``, rendered strictly.

A template file is YAML::

    id: answer
    version: 1
    description: Answer an instruction.
    variables: [instruction, input]      # every variable the messages use, no more
    output_schema: null                  # or a JSON Schema the reply must follow
    examples: []                         # optional few-shot: [{variables: {...}, output: "..."}]
    preamble: null                       # or a shared system message (prompts/_preambles.yaml)
    messages:
      - role: system
        content: You are a helpful assistant.
      - role: user
        content: "{{ instruction }}"

Rendering uses Jinja's sandbox with ``StrictUndefined``. Values are passed as
data, so a seed containing ``{{ 7*7 }}`` or ``{% for %}`` comes out literally:
Jinja never renders the text of a value. The declared variables are checked
against the ones the messages use when the template loads, and the file's
content hash goes into lineage and the cache key.

Few-shot examples are sent as user/assistant turns between the system message and
the user message, unless a message uses ``{{ examples }}``: then they are written
there as text, one ``Input:``/``Reply:`` pair of JSON lines each.

``preamble: rag`` starts the template with the shared system message of that name
from ``prompts/_preambles.yaml`` (the template then has no system message of its
own, and its examples must go in ``{{ examples }}``). Every RAG template uses it and
opens its user message with the numbered contexts, so the calls over one chunk,
whatever their task, begin with the same tokens: a provider's prefix cache serves
that shared beginning at a discount (issue 19; docs/cost.md, "Prefix caching").
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jinja2 import DictLoader, StrictUndefined, TemplateError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from evoforge.errors import ConfigError, yaml_problem
from evoforge.llm.base import Message

_ALLOWED_KEYS = {
    "id",
    "version",
    "description",
    "variables",
    "output_schema",
    "examples",
    "messages",
    "preamble",
}
EXAMPLES_VARIABLE = "examples"
"""A message that uses this variable (not declared in ``variables``) gets the few-shot
examples as text there."""
_ROLES = {"system", "user", "assistant"}


# The longest string or list a template may build with ``*`` (a prompt, not a bomb).
MAX_RENDERED_ITEMS = 1_000_000


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, plus: no ``include`` / ``import`` of any file (the
    loader holds no templates) and no ``'a' * 10**9`` or ``9 ** 10**9`` bombs."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                sized = isinstance(seq, str | list | tuple) and isinstance(times, int)
                if sized and len(seq) * times > MAX_RENDERED_ITEMS:
                    raise SecurityError(
                        f"a template may not build more than {MAX_RENDERED_ITEMS} items with *"
                    )
        if operator == "**" and isinstance(right, int) and abs(right) > 1000:
            raise SecurityError("exponent too large in a template")
        return super().call_binop(context, operator, left, right)


def _environment() -> ImmutableSandboxedEnvironment:
    return _BoundedSandbox(
        loader=DictLoader({}),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@dataclass(frozen=True)
class PromptTemplate:
    id: str
    version: int
    variables: tuple[str, ...]
    messages: tuple[Message, ...]
    output_schema: dict[str, Any] | None
    examples: tuple[dict[str, Any], ...]
    content_hash: str
    source: str
    description: str = ""
    preamble: str | None = None
    inline_examples: bool = False
    _compiled: tuple[Any, ...] = field(default=(), repr=False, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # A compiled Jinja template does not pickle (a Ray shard gets its task's
        # templates): a template travels as its fields and is compiled again on arrival.
        state = {name: getattr(self, name) for name in self.__dataclass_fields__}
        state.pop("_compiled")
        return (_recompiled, (state,))

    @property
    def ref(self) -> dict[str, str]:
        """What goes into a record's lineage: id, version and content hash."""
        return {"prompt_id": f"{self.id}@v{self.version}", "prompt_hash": self.content_hash}

    def render(self, **values: Any) -> list[Message]:
        """Render the messages with ``values``; unknown or missing names are errors."""
        missing = [name for name in self.variables if name not in values]
        extra = [name for name in values if name not in self.variables]
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(extra)}")
            raise ConfigError(f"prompt {self.id}: {'; '.join(parts)}")
        rendered: list[Message] = []
        if self.inline_examples:
            values = {**values, EXAMPLES_VARIABLE: examples_text(self.examples)}
        else:
            for example in self.examples:
                rendered.extend(self._render_example(example))
        for message, template in zip(self.messages, self._compiled, strict=True):
            if isinstance(template, str):
                rendered.append({"role": message["role"], "content": template})
                continue
            try:
                content = template.render(**values).strip()
            except (TemplateError, OverflowError) as exc:  # OverflowError: range too big
                raise ConfigError(f"prompt {self.id} ({self.source}): {exc}") from exc
            rendered.append({"role": message["role"], "content": content})
        return _hoist_system(rendered)

    def _render_example(self, example: dict[str, Any]) -> list[Message]:
        user_turns = [
            t if isinstance(t, str) else t.render(**example["variables"]).strip()
            for m, t in zip(self.messages, self._compiled, strict=True)
            if m["role"] == "user"
        ]
        output = example["output"]
        if not isinstance(output, str):
            output = json.dumps(output, ensure_ascii=False)
        return [{"role": "user", "content": "\n\n".join(user_turns)}] + [
            {"role": "assistant", "content": output}
        ]


def examples_text(examples: tuple[dict[str, Any], ...]) -> str:
    """Few-shot examples written into a message: an ``Input:`` line (the example's
    variables as JSON) and a ``Reply:`` line each."""
    lines = ["Examples, each an input and the reply it should get:"]
    for example in examples:
        output = example["output"]
        if not isinstance(output, str):
            output = json.dumps(output, ensure_ascii=False)
        variables = json.dumps(example["variables"], ensure_ascii=False)
        lines += ["", f"Input: {variables}", f"Reply: {output}"]
    return "\n".join(lines)


@cache
def preambles() -> dict[str, str]:
    """The shared system messages of ``prompts/_preambles.yaml``, by name."""
    text = resources.files("evoforge.prompts").joinpath("_preambles.yaml").read_text("utf-8")
    return {str(name): str(content).strip() for name, content in yaml.safe_load(text).items()}


def rag_prompt(messages: list[Message]) -> tuple[str, list[str]] | None:
    """A RAG template's prompt cut into ``(task, contexts)``, for scripted models.

    The RAG templates (``preamble: rag``) send the shared preamble as the system
    message and then one user message: ``Contexts:``, the numbered contexts
    (``[1] ...``, ``[2] ...``), then ``Task:`` and the rest. ``task`` is the text
    after ``Task:`` (instructions, examples, the question and so on), ``contexts`` the
    contexts in order. Any other prompt gives ``None``. Scripted test models use it
    (``evoforge.testing.scripted`` re-exports it), and so does the dry run's counting
    model, to quote a RAG prompt's passage.
    """
    if len(messages) < 2 or messages[0].get("content") != preambles()["rag"]:
        return None
    user = str(messages[1].get("content", ""))
    head, separator, task = user.rpartition("\n\nTask:\n")
    if not separator or not head.startswith("Contexts:\n"):
        return None
    block = head[len("Contexts:\n") :]
    contexts: list[str] = []
    number = 1
    while block.startswith(f"[{number}] "):
        text, more, rest = block[len(f"[{number}] ") :].partition(f"\n\n[{number + 1}] ")
        contexts.append(text)
        block = f"[{number + 1}] {rest}" if more else ""
        number += 1
    return task, contexts


def _hoist_system(messages: list[Message]) -> list[Message]:
    """Keep system messages first, so few-shot turns sit between system and user."""
    system = [m for m in messages if m["role"] == "system"]
    rest = [m for m in messages if m["role"] != "system"]
    return system + rest


def parse_template(text: str, *, source: str) -> PromptTemplate:
    """Parse and check a template file's text; errors name the file and the field."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {yaml_problem(exc)}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a template is a mapping with id, variables and messages")
    unknown = set(data) - _ALLOWED_KEYS
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(_ALLOWED_KEYS))}"
        )
    for key in ("id", "variables", "messages"):
        if key not in data:
            raise ConfigError(f'{source}: field "{key}" is missing')
    variables = tuple(data["variables"] or ())
    messages = data["messages"]
    if not isinstance(messages, list) or not messages:
        raise ConfigError(f'{source}: field "messages" must be a non-empty list')
    preamble = data.get("preamble")
    hashed = text
    if preamble is not None:
        known = preambles()
        if preamble not in known:
            raise ConfigError(
                f'{source}: field "preamble": no preamble {preamble!r}; known: {", ".join(known)}'
            )
        if any(isinstance(m, dict) and m.get("role") == "system" for m in messages):
            raise ConfigError(
                f'{source}: field "messages": a template with a preamble has no system message'
            )
        messages = [{"role": "system", "content": known[preamble]}, *messages]
        hashed = f"{text}\0{known[preamble]}"
    env = _environment()
    used: set[str] = set()
    compiled = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _ROLES:
            raise ConfigError(f'{source}: messages[{i}] needs a "role" of {sorted(_ROLES)}')
        content = message.get("content")
        if not isinstance(content, str):
            raise ConfigError(f'{source}: messages[{i}] field "content" must be a string')
        try:
            names = meta.find_undeclared_variables(env.parse(content))
            used |= names
            # A message without variables is rendered once, here.
            template = env.from_string(content)
            compiled.append(template if names else template.render().strip())
        except (TemplateError, OverflowError) as exc:
            raise ConfigError(f"{source}: messages[{i}]: {exc}") from exc
    # {{ examples }} is the few-shot examples' place, unless the template declares a
    # variable of that name (backtranslate_instruction.yaml passes curated pairs so).
    inline_examples = EXAMPLES_VARIABLE in used and EXAMPLES_VARIABLE not in variables
    if inline_examples:
        used.discard(EXAMPLES_VARIABLE)
    if used != set(variables):
        raise ConfigError(
            f"{source}: declared variables {sorted(variables)} but the messages use {sorted(used)}"
        )
    examples = tuple(data.get("examples") or ())
    if inline_examples and not examples:
        raise ConfigError(f"{source}: a message uses {{{{ examples }}}} but there are no examples")
    if preamble is not None and examples and not inline_examples:
        raise ConfigError(
            f"{source}: a template with a preamble writes its examples in a message "
            "with {{ examples }} (example turns would come between the preamble and "
            "the contexts)"
        )
    for i, example in enumerate(examples):
        if set(example) != {"variables", "output"} or set(example["variables"]) != set(variables):
            raise ConfigError(
                f"{source}: examples[{i}] needs variables {sorted(variables)} and an output"
            )
    return PromptTemplate(
        id=str(data["id"]),
        version=int(data.get("version", 1)),
        variables=variables,
        messages=tuple({"role": m["role"], "content": m["content"]} for m in messages),
        output_schema=data.get("output_schema"),
        examples=examples,
        content_hash=hashlib.sha256(hashed.encode("utf-8")).hexdigest()[:16],
        source=source,
        description=str(data.get("description", "")),
        preamble=None if preamble is None else str(preamble),
        inline_examples=inline_examples,
        _compiled=tuple(compiled),
    )


def _recompiled(state: dict[str, Any]) -> PromptTemplate:
    """A pickled template (see ``PromptTemplate.__reduce__``), its messages compiled again."""
    env = _environment()
    compiled: list[Any] = []
    for message in state["messages"]:
        template = env.from_string(message["content"])
        names = meta.find_undeclared_variables(env.parse(message["content"]))
        compiled.append(template if names else template.render().strip())
    return PromptTemplate(**state, _compiled=tuple(compiled))


def load_template(path: str | Path) -> PromptTemplate:
    """Load a template from a file path (your own prompts)."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read template: {exc.strerror}") from exc
    return parse_template(text, source=str(path))


@cache
def builtin_template(template_id: str) -> PromptTemplate:
    """Load one of the templates shipped in ``evoforge.prompts`` by id."""
    files = resources.files("evoforge.prompts")
    resource = files.joinpath(f"{template_id}.yaml")
    if not resource.is_file():
        known = sorted(
            p.name[:-5]
            for p in files.iterdir()
            if p.name.endswith(".yaml") and not p.name.startswith("_")
        )
        raise ConfigError(f"no built-in prompt {template_id!r}; known: {', '.join(known)}")
    return parse_template(resource.read_text("utf-8"), source=f"prompts/{template_id}.yaml")


def resolve_template(
    template: PromptTemplate | str | Path | None, builtin_id: str
) -> PromptTemplate:
    """``template`` itself, the file it names, or (when ``None``) the built-in
    ``builtin_id``: how every evolution op finds its prompt."""
    if isinstance(template, PromptTemplate):
        return template
    if template is None:
        return builtin_template(builtin_id)
    return load_template(template)
