"""The shapes a loss backend returns (:mod:`evoforge.llm.losses` has the backends)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["LossModel", "PairLoss"]


@dataclass(frozen=True)
class PairLoss:
    """Mean cross-entropy (nats per token) of an answer's first ``tokens`` tokens, with
    the instruction before it (``conditioned``) and without (``unconditioned``)."""

    conditioned: float
    unconditioned: float
    tokens: int


@runtime_checkable
class LossModel(Protocol):
    """Answer losses and greedy completions from one causal LM."""

    identity: str  # the model's name and version: part of every cache key
    forward_passes: int

    def pair_losses(
        self, pairs: Sequence[tuple[str, str]], *, max_answer_tokens: int
    ) -> list[PairLoss | None]:
        """Per (instruction, answer): its losses, ``None`` for an empty answer."""
        ...

    def greedy(
        self, prompts: Sequence[str], *, max_new_tokens: int, chat: bool = True
    ) -> list[str]:
        """Per prompt: its greedy continuation (``chat``: in the chat template)."""
        ...
