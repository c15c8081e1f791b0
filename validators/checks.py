"""Per-record checks by name, composed into a chain with a report of reasons.

Each check reads a record (the flat JSON of any kind), picks the text it needs
(the prompt side and the answer side of its kind), and returns a ``Verdict``.
``ValidatorChain`` runs them in order and stops at the first failure; its
``counts`` say how many records each reason rejected.

Checks (reason codes):

- ``schema``: the kind's JSON Schema (``schema_invalid``, with the JSON path);
- ``length``: answer length within bounds in characters, words or tokens
  (``too_short`` / ``too_long``);
- ``refusal``, ``empty``, ``leak``, ``language``: Evol-Instruct's elimination
  rules (``refusal``, ``empty_answer``, ``prompt_leak``, ``language_drift``);
- ``lima``: LIMA's answer filters (Zhou et al., 2023): first-person answers
  (``first_person``), answers that point at other answers ("as mentioned
  above": ``references_other_answer``), and, with ``lima_length``, answers
  outside 1,200-4,096 characters (``too_short`` / ``too_long``);
- ``context_reference``: the prompt side points at a context its reader cannot
  see ("based on the context": ``context_reference``);
- every other check in the registry (``evoforge.registry``): the evolvers'
  elimination rules (``evol_instruct``, ``evol_quality``, ``rewrite``), the
  critics' model-free screens (``self_contained``, ``well_formed``,
  ``grounded_overlap``, ``has_context``, ``information_gain``) and plugins' checks;
- ``rubric`` (an LLM judge, so it runs after the other checks, through the
  engine's cache and limits: :func:`judge_rows`): ``critics.RubricCritic``
  scores the record against a rubric (``--rubric FILE``; ``low_rating``,
  ``unparseable_rating``, or a failed call's own reason).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext
from evoforge.errors import ConfigError, RequestRejected
from evoforge.records import Record, schema_error
from evoforge.registry import registry
from evoforge.steps import Rejection
from evoforge.validators import heuristics
from evoforge.validators.base import PASS, Check, Verdict, as_check
from evoforge.validators.lima import check_lima

# (prompt side, answer side) of each kind.
_SIDES: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    "instruction": lambda r: (r.get("instruction", ""), r.get("output", "")),
    "qa": lambda r: (_text(r.get("question")), r.get("answer", "")),
    "rag": lambda r: (_text(r.get("user_input")), r.get("reference", "")),
    "in2": lambda r: (r["messages"][0]["content"], r["messages"][-1]["content"]),
    # chat (orca2) and pam: the turns before the last, and the last (the assistant's)
    "chat": lambda r: (_text(r["messages"][:-1]), r["messages"][-1]["content"]),
    "pam": lambda r: (_text(r["messages"][:-1]), r["messages"][-1]["content"]),
}


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "\n".join(turn.get("content", "") for turn in value if isinstance(turn, dict))
    return value or ""


# The JSON paths of (prompt side, answer side) of each kind.
_SIDE_PATHS = {
    "instruction": ("$.instruction", "$.output"),
    "qa": ("$.question", "$.answer"),
    "rag": ("$.user_input", "$.reference"),
    "in2": ("$.messages[0].content", "$.messages[-1].content"),
    "chat": ("$.messages[-2].content", "$.messages[-1].content"),
    "pam": ("$.messages[0].content", "$.messages[-1].content"),
}


def side_path(record: dict[str, Any], kind: str | None = None, *, answer: bool = True) -> str:
    """The JSON path of a record's answer side (or prompt side), ``"$"`` for an unknown kind."""
    paths = _SIDE_PATHS.get(kind or record.get("kind", ""))
    return "$" if paths is None else paths[1 if answer else 0]


def sides(record: dict[str, Any], kind: str | None = None) -> tuple[str, str]:
    """The prompt-side and answer-side text of a record (of ``kind``, else its own)."""
    kind = kind or record.get("kind", "")
    reader = _SIDES.get(kind)
    if reader is None:
        raise ConfigError(f"record {record.get('id')!r}: unknown kind {kind!r}")
    return reader(record)


@dataclass
class Bounds:
    """Length bounds of the answer; ``unit`` is chars, words or tokens (regex count)."""

    min: int | None = None
    max: int | None = None
    unit: str = "words"

    def measure(self, text: str) -> int:
        if self.unit == "chars":
            return len(text)
        if self.unit == "words":
            return heuristics.word_count(text)
        if self.unit == "tokens":
            from evoforge.io.documents import count_tokens

            return count_tokens(text)
        raise ConfigError(f"length unit must be chars, words or tokens, not {self.unit!r}")


def check_length(answer: str, bounds: Bounds) -> Verdict:
    size = bounds.measure(answer)
    if bounds.min is not None and size < bounds.min:
        return Verdict.failed("too_short", f"{size} {bounds.unit}, the minimum is {bounds.min}")
    if bounds.max is not None and size > bounds.max:
        return Verdict.failed("too_long", f"{size} {bounds.unit}, the maximum is {bounds.max}")
    return PASS


@dataclass
class CheckSettings:
    kind: str | None = None  # read every record as this kind (else its own "kind" field)
    length: Bounds = field(default_factory=Bounds)
    lima_length: bool = False
    refusal_max_words: int = 80


def _schema(record: dict[str, Any], settings: CheckSettings) -> Verdict:
    problem = schema_error(record, settings.kind or record.get("kind", ""))
    return PASS if problem is None else Verdict.failed("schema_invalid", problem)


CHECKS: dict[str, Callable[[dict[str, Any], CheckSettings], Verdict]] = {
    "schema": _schema,
    "length": lambda r, s: check_length(sides(r, s.kind)[1], s.length),
    "refusal": lambda r, s: heuristics.refusal(sides(r, s.kind)[1], max_words=s.refusal_max_words),
    "empty": lambda r, s: heuristics.empty_answer(sides(r, s.kind)[1]),
    "leak": lambda r, s: heuristics.prompt_leak(" ".join(sides(r, s.kind))),
    "language": lambda r, s: heuristics.language_drift(*sides(r, s.kind)),
    "lima": lambda r, s: check_lima(sides(r, s.kind)[1], lima_length=s.lima_length),
}
DEFAULT_CHECKS = ("schema",)
# Checks that ask an LLM judge: not in ``ValidatorChain.check``, but in ``judge_rows``.
JUDGED_CHECKS = ("rubric",)


def _answer_path(record: dict[str, Any], settings: CheckSettings | None) -> str:
    return side_path(record, settings.kind if settings else None)


def _prompt_path(record: dict[str, Any], settings: CheckSettings | None) -> str:
    return side_path(record, settings.kind if settings else None, answer=False)


def _context_reference(record: dict[str, Any], settings: CheckSettings) -> Verdict:
    return heuristics.context_reference(sides(record, settings.kind)[0])


# Each check as a step (``Check``): what the registry's built-in checks resolve to.
_WHERE = {"schema": "$", "leak": "$", "context_reference": _prompt_path}
CHECK_STEPS: dict[str, Check] = {
    name: Check(name, test, _WHERE.get(name, _answer_path), CheckSettings())
    for name, test in {**CHECKS, "context_reference": _context_reference}.items()
}


def check_step(name: str) -> Check:
    """The check named ``name``: a built-in one here, else the registry's (plugins)."""
    return CHECK_STEPS.get(name) or as_check(name, registry("check").lookup(name, flag="--checks"))


def parse_checks(spec: str | Sequence[str] | None) -> list[str]:
    """Check names from ``"schema,refusal"`` (or a list); each must be a known check: a
    built-in, a judged one, or one in the check registry (plugins included)."""
    names = spec.split(",") if isinstance(spec, str) else list(spec or DEFAULT_CHECKS)
    names = [name.strip() for name in names if name.strip()]
    known = [*CHECKS, *JUDGED_CHECKS]
    for name in names:
        if name in known:
            continue
        registered = registry("check")
        if name in registered:
            continue
        known += [other for other in registered if other not in known]
        import difflib

        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"--checks: unknown check {name!r}{suggestion}; checks: {', '.join(known)}"
        )
    return names


@dataclass
class ValidatorChain:
    """Named checks in order; the first failure is the record's verdict."""

    checks: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKS))
    settings: CheckSettings = field(default_factory=CheckSettings)
    counts: Counter[str] = field(default_factory=Counter)
    _resolved: list[Check] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def judged(self) -> list[str]:
        """The named checks that need an LLM judge (run them with ``judge_rows``)."""
        return [name for name in self.checks if name in JUDGED_CHECKS]

    def check(self, record: dict[str, Any]) -> Verdict:
        """The checks that need no model, in order; judged checks are skipped here."""
        for step in self._steps():
            verdict = step.test(record, self.settings)
            if not verdict.ok:
                self.counts[verdict.reason or step.name] += 1
                return verdict
        self.counts["passed"] += 1
        return PASS

    def rejection(self, record: dict[str, Any]) -> Rejection | None:
        """``check`` as the step contract: ``None``, or the first failure's ``Rejection``
        (``step`` "check.NAME", ``field`` the JSON path it is about)."""
        for step in self._steps():
            verdict = step.test(record, self.settings)
            if not verdict.ok:
                self.counts[verdict.reason or step.name] += 1
                return step.reject(record, verdict, self.settings)
        self.counts["passed"] += 1
        return None

    def _steps(self) -> list[Check]:
        if self._resolved is None:
            self._resolved = [check_step(n) for n in self.checks if n not in JUDGED_CHECKS]
        return self._resolved

    def count_judged(self, verdict: Verdict) -> None:
        """Move a record that passed ``check`` to its judged failure's reason."""
        if not verdict.ok:
            self.counts["passed"] -= 1
            self.counts[verdict.reason or "judged"] += 1


async def judge_rows(
    rows: Sequence[dict[str, Any]],
    critic: Any,
    client: LLMClient,
    *,
    kind: str | None = None,
    seed: int = 0,
    chunk: int = 256,
) -> list[Verdict]:
    """``critic.review`` (a ``critics.Critic``) of each row, in order, ``chunk`` rows at a
    time (the client bounds the requests in flight). A row is read as ``kind`` (else
    its own); one without an id gets ``row<N>``. A failed call is that row's failed
    verdict, with the engine's reason (``retries_exhausted``, ``invalid_json``, ...)."""

    async def one(i: int, row: dict[str, Any]) -> Verdict:
        data = {**row, "kind": kind or row.get("kind"), "id": str(row.get("id") or f"row{i}")}
        record = Record.from_json(data)
        try:
            return await critic.review(record, RecordContext(client, seed, record.id))
        except RequestRejected as exc:
            return Verdict.failed(exc.reason, f"{exc} ({critic.name})")

    verdicts: list[Verdict] = []
    for start in range(0, len(rows), chunk):
        batch = rows[start : start + chunk]
        verdicts.extend(await asyncio.gather(*(one(start + i, row) for i, row in enumerate(batch))))
    return verdicts
