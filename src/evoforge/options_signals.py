"""``select``'s settings for the model-signal and LIMA methods (issue 17), a base of
:class:`evoforge.options.SelectOptions` kept apart so that ``options`` stays short.

Like ``options``, it imports only the standard library; each field's ``metadata``
holds its help text and command-line settings (``panel``: these flags have their own
help section). See ``docs/methods/model-signals.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PANEL = "Model signals and LIMA"
METHODS_HELP = (
    "deita | alpagasus | kcenter | random | ifd | mining | memorisation | lima | balanced"
)


def _option(default: Any, help: str, **cli: Any) -> Any:  # noqa: A002
    return field(default=default, metadata={"help": help, "panel": PANEL, **cli})


@dataclass(kw_only=True)
class SignalOptions:
    """IFD, Instruction Mining, memorisation probing, LIMA and balanced sampling."""

    scorer_model: str | None = _option(
        None, "ifd/mining/memorisation: a causal LM folder or openai:MODEL@URL "
        "(default: the embedded model).",
    )  # fmt: skip
    batch_size: int = _option(8, "Sequences per forward pass.", min=1)
    max_answer_tokens: int = _option(
        512, "ifd/mining: answer tokens scored, with and without the instruction.", min=1
    )
    max_ifd: float = _option(1.0, "ifd: drop records with IFD >= this.")
    then: str | None = _option(None, "ifd/mining/memorisation, then: deita | kcenter.")
    pool: int | None = _option(None, "--then: candidates for it (default: all that pass).")
    fit: str | None = _option(
        None, "mining: fit the rule on JSON lines of {indicators, loss}.", path=True
    )
    mining_rule: str = _option(
        "v1", "mining, no --fit: the paper's rule v1 (Rew, Len, Knn6) | v3 (Rew, judge)."
    )
    reward_field: str | None = _option(None, "mining: reward field, e.g. meta.alpagasus.score.")
    judge: bool = _option(
        False, "mining: rate naturalness, coherence, understandability with --llm.", flag="--judge"
    )
    templates: int = _option(10, "memorisation: templates per fact.", min=1)
    band: str | None = _option(None, "memorisation: levels LOW:HIGH (default: highest first).")
    balance_by: str | None = _option(None, "balanced/lima: category field, e.g. meta.topic.")
    per_category: int | None = _option(None, "balanced/lima: at most this many per category.")
    lima_length: bool = _option(
        False, "lima: answers of 1,200-4,096 characters only.", flag="--lima-length"
    )
