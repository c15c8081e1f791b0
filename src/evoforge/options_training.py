"""The settings of the two training-data methods, ``orca2`` and ``pam``: defaults and help
text written once, as in :mod:`evoforge.options` (whose ``option`` they use; they live
apart only to keep that module small). The CLI derives their flags, recipes read them,
and the Python API takes them::

    from evoforge import Orca2Options, orca2

    orca2("seeds.jsonl", "out/orca2.jsonl", orca=Orca2Options(strategy_map="math=step_by_step"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evoforge.errors import ConfigError, did_you_mean
from evoforge.options import option

# Orca 2's five reasoning strategies (Mitra et al., 2023); prompts/orca2_<name>.yaml each.
ORCA2_STRATEGIES = (
    "step_by_step",
    "recall_then_generate",
    "recall_reason_generate",
    "extract_generate",
    "direct_answer",
)
# The generic system message the student's record keeps (our wording).
DEFAULT_STUDENT_SYSTEM = (
    "You are a careful assistant. Read each request closely, work out what it needs, "
    "and give an answer that is correct, complete and honest about what you are unsure of."
)
# Appended to the question in the user turn of a pam record (our wording).
DEFAULT_PAM_TRIGGER = "Answer, then check your answer and correct it if it is wrong."


def parse_pairs(text: str | None, what: str) -> dict[str, str]:
    """``"a=x,b=y"`` as ``{"a": "x", "b": "y"}``; a malformed pair is a ConfigError."""
    pairs: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"{what} {part.strip()!r}: write NAME=VALUE, e.g. math=step_by_step")
        pairs[key.strip()] = value.strip()
    return pairs


@dataclass
class Orca2Options:
    """What ``orca2`` does (Mitra et al., 2023): the strategy per seed, and the system
    message left in the student's record after the strategy prompt is erased."""

    strategy_map: str | None = option(  # None: the classifier picks every seed's strategy
        None,
        "task=strategy,... for seeds with a task field; '*=strategy' covers the rest "
        "(default: a classifier call picks each seed's strategy).",
        flag="--strategy-map",
    )
    student_system: str = option(
        DEFAULT_STUDENT_SYSTEM, "The system message the student's record keeps.",
        flag="--student-system",
    )  # fmt: skip
    allow_truncated: bool = option(False, "Keep answers cut at max tokens.")

    def strategies(self) -> dict[str, str]:
        """The parsed ``strategy_map``: task -> strategy."""
        return parse_pairs(self.strategy_map, "--strategy-map")

    def __post_init__(self) -> None:
        for task, strategy in self.strategies().items():
            if strategy not in ORCA2_STRATEGIES:
                raise ConfigError(
                    f"--strategy-map {task}={strategy}: unknown strategy {strategy!r}; use one "
                    f"of {', '.join(ORCA2_STRATEGIES)}" + did_you_mean(strategy, ORCA2_STRATEGIES)
                )
        if not self.student_system.strip():
            raise ConfigError("--student-system is empty")


@dataclass
class PamOptions:
    """What ``pam`` does (Han et al., 2024, partial answer masking): the student answers,
    the teacher (``--llm``) verifies and corrects, and ``balance`` sets the mix."""

    student: str = option(  # any --llm spec; the embedded model by default
        "local", "The student model, any --llm spec (default: the embedded model).",
        flag="--student",
    )  # fmt: skip
    student_args: dict[str, Any] = option(
        {}, "Settings for the student's backend (Python API and recipes).", cli=False
    )
    balance: str | None = option(  # "correct=0.5": drop the surplus of the larger side
        None,
        "correct=SHARE: keep this share of correct initial answers, dropping the surplus "
        "(reason surplus); default: keep all.",
        flag="--balance",
    )
    trigger: str = option(DEFAULT_PAM_TRIGGER, "The self-check trigger appended to each question.")
    allow_truncated: bool = option(False, "Keep answers cut at max tokens.")

    def correct_share(self) -> float | None:
        """The share of correct records ``balance`` asks for (``None``: keep all)."""
        pairs = parse_pairs(self.balance, "--balance")
        if not pairs:
            return None
        if set(pairs) != {"correct"}:
            raise ConfigError(f"--balance {self.balance!r}: write correct=SHARE, e.g. correct=0.5")
        try:
            share = float(pairs["correct"])
        except ValueError:
            raise ConfigError(f"--balance {self.balance!r}: SHARE is a number in [0, 1]") from None
        if not 0 <= share <= 1:
            raise ConfigError(f"--balance {self.balance!r}: SHARE is a number in [0, 1]")
        return share

    def __post_init__(self) -> None:
        self.correct_share()
        if not self.student.strip():
            raise ConfigError("--student is empty; give an --llm spec such as local")
