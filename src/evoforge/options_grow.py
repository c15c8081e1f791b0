"""What ``grow`` does: its settings, defaults and help text, written once.

Kept beside :mod:`evoforge.options` (which is at its size limit) in the same form: the
CLI derives ``evoforge grow``'s flags from these fields, recipes read their defaults
from them and the Python API takes them as ``grow=GrowOptions(...)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoforge.errors import ConfigError, did_you_mean
from evoforge.options import option

GROW_METHODS = ("self-instruct", "backtranslate", "magpie")


@dataclass
class GrowOptions:
    """How ``grow`` makes new instructions: Self-Instruct (Wang et al., 2023) from seeds,
    instruction back-translation (Li et al., 2023) from documents, or Magpie (Xu et al.,
    2024) from a local chat model's own template."""

    method: str = option("self-instruct", "self-instruct | backtranslate | magpie")
    n: int = option(100, "New instruction records to produce, exactly.", flag="--n", required=True)
    threshold: float = option(  # Self-Instruct's ROUGE-L rule; the pool dedup of all three
        0.7, "Drop an instruction whose ROUGE-L F with the pool is at or above this."
    )
    instances: bool = option(
        True, "self-instruct: classify each task and write its input and output.",
        flag="--instances/--no-instances", panel="Self-Instruct",
    )  # fmt: skip
    min_score: int = option(  # Humpback's self-curation keeps the 5s
        5, "backtranslate: keep pairs the model rates at least this (1-5).", panel="Backtranslate"
    )
    iterations: int = option(
        1, "backtranslate: 2 = a second pass with the curated pairs as few-shot examples.",
        panel="Backtranslate",
    )  # fmt: skip
    text_field: str = option("text", "backtranslate: text field of .jsonl documents.",
                             panel="Backtranslate")  # fmt: skip
    chat_template: str | None = option(  # None: the model's own (--llm local)
        None, "magpie: a Jinja chat template file or a tokenizer folder (default: the "
        "model's own).", panel="Magpie", path=True,
    )  # fmt: skip
    magpie_temperature: float = option(1.0, "magpie: temperature of the sampled user turn.",
                                       panel="Magpie")  # fmt: skip
    magpie_top_p: float = option(1.0, "magpie: top_p of the sampled user turn.", panel="Magpie")
    language: str = option(  # a script name from validators.heuristics, or "any"
        "Latin", "magpie: keep instructions in this script (Latin, Han, ...) or any.",
        panel="Magpie",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if self.method not in GROW_METHODS:
            raise ConfigError(
                f"--method {self.method!r}: use one of {', '.join(GROW_METHODS)}"
                + did_you_mean(self.method, GROW_METHODS)
            )
        if self.n < 1:
            raise ConfigError("--n must be at least 1")
        if not 0 < self.threshold <= 1:
            raise ConfigError("--threshold must be in (0, 1]")
        if not 1 <= self.min_score <= 5:
            raise ConfigError("--min-score must be 1 to 5")
        if self.iterations not in (1, 2):
            raise ConfigError("--iterations must be 1 or 2")
