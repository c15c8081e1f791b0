"""What a critic reads from a sample: its question, reference answer and contexts.

A ``rag`` record names them ``user_input``, ``reference``, ``reference_contexts``;
a ``qa`` record ``question``, ``answer``, ``contexts`` (``evoforge.records.sample_fields``
knows which). A question is a string or a list of ``{role, content}`` turns; for turns
the last user turn is the question, read in the light of the earlier ones.
"""

from __future__ import annotations

from collections.abc import Sequence

from evoforge.errors import ConfigError
from evoforge.prompting import PromptTemplate
from evoforge.records import Record, SampleFields, sample_fields
from evoforge.validators import heuristics
from evoforge.validators.base import PASS, Verdict

Question = str | list[dict[str, str]]


def parts_of(record: Record) -> SampleFields:
    """The names of the record's question, answer and contexts fields, by its kind."""
    return sample_fields(record.kind, who=f"critics ({record.id})")


def question_of(record: Record) -> Question:
    """The sample's question: a string, or its ``{role, content}`` turns."""
    return record[parts_of(record).question]


def reference_of(record: Record) -> str:
    """The reference answer (empty when there is none)."""
    return str(record.get(parts_of(record).answer) or "")


def contexts_of(record: Record) -> list[str]:
    """The context texts, as strings."""
    return [str(text) for text in record.get(parts_of(record).contexts) or []]


def question_prompt_text(question: Question) -> str:
    """A question for a prompt; turns read ``user: ...\\nassistant: ...``."""
    if isinstance(question, str):
        return question
    return "\n".join(f"{turn['role']}: {turn['content']}" for turn in question)


def numbered_contexts(contexts: Sequence[str]) -> str:
    """``[1] first``, blank line, ``[2] second``: the contexts as judges see them."""
    return "\n\n".join(f"[{i}] {text.strip()}" for i, text in enumerate(contexts, start=1))


def last_user_index(turns: list[dict[str, str]]) -> int | None:
    """Where the last user turn is (the turn that asks the question), or ``None``."""
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].get("role") == "user":
            return i
    return None


def user_texts(question: Question) -> list[str]:
    """What the user says: the question, or the content of each user turn."""
    if isinstance(question, str):
        return [question]
    return [turn["content"] for turn in question if turn.get("role") == "user"]


def same_words(first: str, second: str) -> bool:
    """Equal once case, spacing and punctuation are set aside."""
    return [w.lower() for w in heuristics.words(first)] == [
        w.lower() for w in heuristics.words(second)
    ]


def has_context(record: Record) -> Verdict:
    """Passes when some context holds text; else fails ``no_context``."""
    if any(text.strip() for text in contexts_of(record)):
        return PASS
    field_name = parts_of(record).contexts
    return Verdict.failed("no_context", f"field {field_name!r} holds no context text")


def require_variables(template: PromptTemplate, names: set[str], what: str) -> None:
    """A critic's own template must fill exactly ``names``: a ``ConfigError`` otherwise."""
    if set(template.variables) != names:
        raise ConfigError(
            f"{what}: template {template.id} ({template.source}) must use exactly the "
            f"variables {sorted(names)}; it declares {sorted(template.variables)}"
        )
