"""Needles in a long context: where the pieces a question needs sit, to the character.

Both long-context methods of An et al., 2024 ("Make Your LLM Fully Utilize the
Context", arXiv 2404.16811) build a context the same way: the pieces a question
needs (the *needles*) and filler pieces, in some order, joined with a separator.
IN2 training data puts the needles at uniformly random positions (needles and
fillers shuffled jointly); VaL probing puts its one needle at a chosen place, to
score answers by position. :func:`place_needles` is that one routine, with the two
ways of choosing positions; every :class:`Needle` it returns satisfies
``context[char_start:char_end] == text``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class Piece(Protocol):
    """A text a context is made of: where it comes from (``doc_id``, its ``index``
    there), the ``text`` and its token count. An IN2 ``Segment`` is one."""

    @property
    def doc_id(self) -> str: ...

    @property
    def index(self) -> int: ...

    @property
    def text(self) -> str: ...

    @property
    def tokens(self) -> int: ...


@dataclass(frozen=True)
class Needle:
    """A needed piece as placed in a context: ``context[char_start:char_end] == text``.

    ``doc_id`` and ``segment_index`` name the piece (its ``doc_id`` and ``index``).
    Token offsets count the pieces and separators before it (see :func:`place_needles`).
    """

    doc_id: str
    segment_index: int
    token_start: int
    token_end: int
    char_start: int
    char_end: int
    text: str


@dataclass(frozen=True)
class Placement:
    """A context, its token count (the pieces' and separators' sum), the needles in
    context order, and the fillers in context order."""

    context: str
    context_tokens: int
    needles: tuple[Needle, ...]
    fillers: tuple[Piece, ...]


def place_needles(
    needles: Sequence[Piece],
    fillers: Sequence[Piece],
    *,
    separator: str,
    separator_tokens: int = 0,
    rng: random.Random | None = None,
    at: int | None = None,
) -> Placement:
    """Needles and fillers in one context, joined with ``separator``; exact offsets.

    Give exactly one way of placing them:

    - ``rng``: needles and fillers are shuffled jointly (one ``rng.shuffle`` of the
      needles followed by the fillers), so each needle's position is uniform over
      the context (IN2);
    - ``at``: the needles, in their order, go before filler ``at`` (0: first,
      ``len(fillers)``: last), the fillers keeping theirs (VaL probing, which picks
      the place for a target position).

    Token offsets sum each piece's ``tokens`` and ``separator_tokens`` per separator;
    character offsets are exact.
    """
    if (rng is None) == (at is None):
        raise ValueError("place_needles: give either rng (a joint shuffle) or at (an index)")
    pieces: list[tuple[Piece, bool]] = [(piece, True) for piece in needles]
    if rng is not None:
        pieces += [(piece, False) for piece in fillers]
        rng.shuffle(pieces)
    else:
        assert at is not None
        if not 0 <= at <= len(fillers):
            raise ValueError(f"place_needles: at={at} is not a place among {len(fillers)} fillers")
        pieces = [(piece, False) for piece in fillers[:at]] + pieces
        pieces += [(piece, False) for piece in fillers[at:]]

    parts: list[str] = []
    placed: list[Needle] = []
    in_order: list[Piece] = []
    chars = tokens = 0
    for number, (piece, is_needle) in enumerate(pieces):
        if number:
            parts.append(separator)
            chars += len(separator)
            tokens += separator_tokens
        if is_needle:
            placed.append(
                Needle(
                    doc_id=piece.doc_id,
                    segment_index=piece.index,
                    token_start=tokens,
                    token_end=tokens + piece.tokens,
                    char_start=chars,
                    char_end=chars + len(piece.text),
                    text=piece.text,
                )
            )
        else:
            in_order.append(piece)
        parts.append(piece.text)
        chars += len(piece.text)
        tokens += piece.tokens
    return Placement("".join(parts), tokens, tuple(placed), tuple(in_order))
