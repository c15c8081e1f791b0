"""IFD, instruction-following difficulty ("From Quantity to Quality", Li et al., 2023,
arXiv 2308.12032, "Cherry LLM"; Superfiltering, Li et al., 2024, arXiv 2402.00530).

``IFD = loss(answer | instruction) / loss(answer)``: each loss is the mean
cross-entropy over the answer's tokens, the first in the model's chat template after
the instruction, the second after the BOS token alone, both over the same answer
tokens (the first ``max_answer_tokens``, 512 by default). An IFD near 0 means the
instruction gives the answer away (a copy); near 1, the instruction hardly helps (a
generic answer); at or above 1 the instruction does not help at all.

Cherry LLM scores with a model briefly trained on the data ("pre-experienced");
scoring with the raw model is Superfiltering's variant, and is what evoforge does by
default with the embedded SmolLM2 (``--scorer-model DIR`` takes any causal LM folder,
such as your own pre-experienced one).

:class:`IfdScorer` writes ``meta.ifd = {score, loss, unconditioned_loss,
answer_tokens, max_answer_tokens, model}``; :func:`select_ifd` drops IFD >= 1
(``ifd_not_below_one``) and keeps the highest IFD below it up to the budget
(``over_budget``; ``unscored`` for a record without a score).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evoforge.engine.runner import Rejection
from evoforge.llm.losses import DEFAULT_MAX_ANSWER_TOKENS, LossModel
from evoforge.records import Record
from evoforge.validators.select.ranking import select_by_signal
from evoforge.validators.select.score_cache import digest
from evoforge.validators.select.texts import RecordLike, _as_record, turn_pairs

__all__ = ["IFD_VERSION", "IfdScorer", "ifd_accept", "last_pair", "select_ifd"]

IFD_VERSION = 1  # part of the cache key: bump when the way losses are taken changes


def last_pair(record: RecordLike) -> tuple[str, str]:
    """The (instruction, answer) a record is scored on: its last turn's."""
    pairs = turn_pairs(_as_record(record))
    return pairs[-1] if pairs else ("", "")


class IfdScorer:
    """IFD of each record under ``model`` (a :class:`~evoforge.llm.losses.LossModel`)."""

    method = "ifd"

    def __init__(self, model: LossModel, *, max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS):
        self.model = model
        self.max_answer_tokens = int(max_answer_tokens)
        self.batch_size = int(getattr(model, "batch_size", 8))
        self.identity = f"ifd/v{IFD_VERSION}/{model.identity}/answer{self.max_answer_tokens}"

    def key(self, record: Any) -> str:
        return digest(*last_pair(record))

    def score_batch(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        pairs = [last_pair(record) for record in records]
        losses = self.model.pair_losses(pairs, max_answer_tokens=self.max_answer_tokens)
        blocks: list[dict[str, Any]] = []
        for loss in losses:
            if loss is None:
                blocks.append({"error": "empty answer", "model": self.model.identity})
            elif loss.unconditioned <= 0:
                blocks.append({"error": "zero unconditioned loss", "model": self.model.identity})
            else:
                blocks.append(
                    {
                        "score": round(loss.conditioned / loss.unconditioned, 6),
                        "loss": round(loss.conditioned, 6),
                        "unconditioned_loss": round(loss.unconditioned, 6),
                        "answer_tokens": loss.tokens,
                        "max_answer_tokens": self.max_answer_tokens,
                        "model": self.model.identity,
                    }
                )
        return blocks


def ifd_accept(max_ifd: float = 1.0):
    """The filter of :func:`select_ifd`: IFD >= ``max_ifd`` is dropped."""

    def accept(block: dict[str, Any]) -> tuple[str, str] | None:
        score = float(block["score"])
        if score >= max_ifd:
            return (
                "ifd_not_below_one",
                f"IFD {score:.4f} >= {max_ifd:g}: the instruction does not help",
            )
        return None

    return accept


def select_ifd(
    records: Sequence[RecordLike], budget: int | None = None, *, max_ifd: float = 1.0
) -> tuple[list[Record], list[Rejection]]:
    """Keep the highest ``meta.ifd.score`` below ``max_ifd`` (1: the paper's cut), up to
    ``budget``. Dropped: ``ifd_not_below_one``, ``over_budget``, ``unscored``."""
    return select_by_signal(
        records, method="ifd", budget=budget, descending=True, accept=ifd_accept(max_ifd)
    )
