"""Guided decoding: keeping each guided reply on its scaffold, token by token.

One ``generate`` call serves a whole batch: :class:`_ScaffoldProcessor`, a logits
processor, edits each guided row's next-token scores through its
:class:`_ScaffoldCursor` (force a literal's next token, mask a string slot to the
tokens a JSON string may hold, pick an enum's option), and the cursor reads back the
token chosen. :class:`_TokenClasses` sorts the tokenizer's vocabulary once for the
string slots. The scaffolds themselves come from :mod:`evoforge.llm.local.guided_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from evoforge.llm.base import TokenLogprob
from evoforge.llm.local.guided_json import (
    _ChoiceSlot,
    _json_string_tail,
    _JsonScaffold,
    _Piece,
    _read_json_escapes,
    _TextSlot,
)
from evoforge.llm.local.weights import MODEL_NAME

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class _TokenClasses:
    """Which tokens may appear in a string value, computed once per tokenizer."""

    opening: torch.Tensor  # bool per token: may start a value (visible, not closing)
    inside: torch.Tensor  # may continue a value: plain text, or text and the closing quote
    closers: frozenset[int]  # end with the closing quote
    endings: torch.Tensor  # ids that would end a value some other way: '",', newlines, specials
    quote: int  # the bare quote, forced when a value has used its tokens
    end_of_turn: int

    @classmethod
    def build(cls, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> _TokenClasses:
        import torch

        quote_ids = tokenizer('"', add_special_tokens=False)["input_ids"]
        if len(quote_ids) != 1 or tokenizer.eos_token_id is None:
            raise RuntimeError(f"{MODEL_NAME}: this tokenizer cannot guide JSON")
        quote = quote_ids[0]
        banned = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        inside, opening, endings = [quote], [], []
        closers = {quote}
        texts = tokenizer.batch_decode([[t] for t in range(min(vocab_size, len(tokenizer)))])
        for token, text in enumerate(texts):
            if token == quote:
                continue
            if token in banned or text[:1] in ('"', "\n"):
                endings.append(token)
                continue
            closes = text.endswith('"') and not text.endswith('\\"')
            body = text[:-1] if closes else text
            if '"' in body or any(ch < " " for ch in body):  # a raw quote, newline, tab...
                continue
            inside.append(token)
            if closes:
                closers.add(token)
            elif body.strip():
                opening.append(token)

        def mask(ids: list[int]) -> torch.Tensor:
            flags = torch.zeros(vocab_size, dtype=torch.bool)
            flags[ids] = True
            return flags

        return cls(
            opening=mask(opening),
            inside=mask(inside),
            closers=frozenset(closers),
            endings=torch.tensor(endings, dtype=torch.long),
            quote=quote,
            end_of_turn=tokenizer.eos_token_id,
        )


@dataclass(frozen=True)
class _Step:
    """One piece of a scaffold, in tokens: a literal's ids, or each option's ids."""

    piece: _Piece
    sequences: tuple[tuple[int, ...], ...] = ()


class _ScaffoldCursor:
    """Walks one reply through its scaffold as ``generate`` writes it.

    :meth:`constrain` edits the next-token scores (forces a literal's next token,
    masks a string slot, picks an option); :meth:`advance` reads the token that was
    chosen. The text so far is kept as JSON, so :meth:`json_text` is valid JSON at
    any point (an unfinished value is cut where it stands).
    """

    def __init__(
        self,
        scaffold: _JsonScaffold,
        tokenizer: PreTrainedTokenizerBase,
        classes: _TokenClasses,
    ) -> None:
        self._tokenizer = tokenizer
        self._classes = classes
        self._field_tokens = scaffold.field_tokens
        self._steps = [self._compile(piece) for piece in scaffold.pieces]
        self._written = [scaffold.prefix]  # finished pieces, as JSON
        self._current: list[int] = []  # tokens of the piece being written
        self.consumed = 0  # tokens read by advance()
        # index of a generated token that chose between options -> {token: logprob}
        self.choice_odds: dict[int, dict[int, float]] = {}

    @property
    def done(self) -> bool:
        return len(self._written) > len(self._steps)

    def _compile(self, piece: _Piece) -> _Step:
        def ids(text: str) -> tuple[int, ...]:
            return tuple(self._tokenizer(text, add_special_tokens=False)["input_ids"])

        if isinstance(piece, str):
            return _Step(piece, (ids(piece),))
        if isinstance(piece, _ChoiceSlot) and piece.bare:
            return _Step(piece, tuple(ids(option) for option in piece.options))
        if isinstance(piece, _ChoiceSlot):
            quote = self._classes.quote
            options = tuple((*ids(_json_string_tail(o)[:-1]), quote) for o in piece.options)
            return _Step(piece, options)
        return _Step(piece)

    def constrain(self, scores: torch.Tensor) -> None:
        """Restrict one row of next-token scores, in place, to what the scaffold allows."""
        forced = self._forced_token(scores)
        if forced is not None:
            scores.fill_(float("-inf"))
            scores[forced] = 0.0
            return
        classes = self._classes
        if self._current:  # a model that would end the value another way closes it instead
            ending = scores[classes.endings].logsumexp(0)
            scores[classes.quote] = scores[classes.quote].logaddexp(ending)
        allowed = classes.inside if self._current else classes.opening
        scores.masked_fill_(~allowed, float("-inf"))

    def _forced_token(self, scores: torch.Tensor) -> int | None:
        """The one token allowed next, or ``None`` while the model writes a string."""
        if self.done:
            return self._classes.end_of_turn
        step = self._steps[len(self._written) - 1]
        written = len(self._current)
        if isinstance(step.piece, str):
            return step.sequences[0][written]
        if isinstance(step.piece, _ChoiceSlot):  # the next token of the best-ranked option
            so_far = tuple(self._current)
            candidates = {seq[written] for seq in step.sequences if seq[:written] == so_far}
            if len(candidates) > 1:  # kept for the reply's token logprobs
                logp = scores.float().log_softmax(-1)
                self.choice_odds[self.consumed] = {t: float(logp[t]) for t in candidates}
            return max(candidates, key=lambda token: float(scores[token]))
        return self._classes.quote if written >= self._field_tokens else None

    def advance(self, token: int) -> None:
        """Take the token ``generate`` chose after the last :meth:`constrain`."""
        self.consumed += 1
        if self.done:
            return
        step = self._steps[len(self._written) - 1]
        self._current.append(token)
        if isinstance(step.piece, str):
            if len(self._current) == len(step.sequences[0]):
                self._finish(step.piece)
        elif isinstance(step.piece, _ChoiceSlot):
            so_far = tuple(self._current)
            for option, sequence in zip(step.piece.options, step.sequences, strict=True):
                if sequence == so_far:
                    self._finish(option if step.piece.bare else _json_string_tail(option))
                    break
        elif token in self._classes.closers:
            self._finish(_json_string_tail(self._text_value(step.piece)))

    def catch_up(self, generated: list[int]) -> None:
        """Read the tokens ``generate`` made after its last call to the processor."""
        for token in generated[self.consumed :]:
            if self.done:
                break
            self.advance(token)

    def with_choice_odds(self, entries: tuple[TokenLogprob, ...]) -> tuple[TokenLogprob, ...]:
        """A guided reply's token logprobs, spelling :meth:`json_text` where the tokens
        do: the opening first (it is in the prompt: certain), and where an enum's options
        part, the model's own logprob for each option's token (before the choice was
        forced), so that a caller can weigh the options, e.g. DEITA's expected score."""
        opening = self._written[0]
        result = [TokenLogprob(opening, 0.0, {opening: 0.0})]
        for index, entry in enumerate(entries):
            odds = self.choice_odds.get(index)
            if odds is None:
                result.append(entry)
                continue
            top: dict[str, float] = {}
            for token, logprob in odds.items():
                top.setdefault(self._tokenizer.decode([token]), logprob)
            result.append(TokenLogprob(entry.token, top.get(entry.token, entry.logprob), top))
        return tuple(result)

    def json_text(self) -> str:
        """The reply so far as JSON: unfinished values as they stand, the rest empty."""
        if self.done:
            return "".join(self._written)
        parts = list(self._written)
        for number, step in enumerate(self._steps[len(parts) - 1 :]):
            if isinstance(step.piece, str):
                parts.append(step.piece)
            elif isinstance(step.piece, _TextSlot) and number == 0:
                parts.append(_json_string_tail(self._text_value(step.piece)))
            elif isinstance(step.piece, _ChoiceSlot) and step.piece.bare:
                parts.append("null")  # no number yet; the engine's validation says so
            else:
                parts.append('"')
        return "".join(parts)

    def _text_value(self, slot: _TextSlot) -> str:
        raw = self._tokenizer.decode(self._current, skip_special_tokens=True)
        if raw.endswith('"'):
            raw = raw[:-1]
        value = _read_json_escapes(raw).strip()
        return value if slot.max_length is None else value[: slot.max_length]

    def _finish(self, json_piece: str) -> None:
        self._written.append(json_piece)
        self._current = []


class _ScaffoldProcessor:
    """A ``generate`` logits processor that keeps guided rows on their scaffold.

    Rows without a cursor (plain requests in the same batch) are left alone. Rows
    stay in place during greedy and sampled decoding, so row ``i`` of the scores is
    always request ``i``; the first call sees only the prompts (``width`` tokens).
    """

    def __init__(self, cursors: list[_ScaffoldCursor | None], width: int) -> None:
        self._cursors = cursors
        self._width = width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        fresh = input_ids.shape[1] > self._width
        for row, cursor in enumerate(self._cursors):
            if cursor is None:
                continue
            if fresh:
                cursor.advance(int(input_ids[row, -1]))
            cursor.constrain(scores[row])
        return scores
