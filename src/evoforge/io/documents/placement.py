"""Place a splitter's pieces back in the text they came from, as exact covering spans.

A splitter may change whitespace and repeated text makes a piece occur several
times; :func:`locate_chunks` finds the one placement where the pieces cover the
text in order, then small pieces are folded into their neighbours.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate

_WHITESPACE = re.compile(r"\s*")


def locate_chunks(
    text: str, pieces: Sequence[str], *, lookback: Callable[[str], int] = len
) -> list[tuple[int, int]]:
    """``(start, end)`` in ``text`` of each piece, in order, covering ``text``.

    A piece that is not a substring (a splitter that changed whitespace) is
    matched with flexible whitespace and replaced by the text it matches; one
    that cannot be matched at all is left out. Repeated text makes a piece
    occur several times: the placement searched for is one where the pieces
    cover the text (each starts inside or right after the text covered so far;
    the first and last reach its first and last non-space character).
    ``lookback(previous_piece)`` is how many characters at most a piece shares
    with the one before (the overlap): the search tries places after that point
    first, then, if that fails, the latest places first. If both fail within a
    small search budget (only text made of a few characters repeated at random
    gets there), each piece goes to its first occurrence after the previous one
    and spans are stretched over any gap, so the text is still covered.
    """
    located: list[str] = []
    greedy: list[int] = []
    position = 0
    for piece in pieces:
        found = text.find(piece, position)
        if found == -1:
            match = _flexible_search(text, piece, position) or _flexible_search(text, piece, 0)
            if match is None:
                continue
            found, piece = match.start(), match.group(0)
        located.append(piece)
        greedy.append(found)
        position = found
    for latest_first in (False, True):
        starts = _covering_placement(text, located, lookback, latest_first=latest_first)
        if starts is not None:
            return [
                (start, start + len(piece)) for start, piece in zip(starts, located, strict=True)
            ]
    spans = [(start, start + len(piece)) for start, piece in zip(greedy, located, strict=True)]
    return _close_gaps(text, spans)


def _close_gaps(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` (sorted by start) stretched so that only whitespace lies between them."""
    if not spans:
        return spans
    closed = [(len(text) - len(text.lstrip()), spans[0][1])]
    for start, end in spans[1:]:
        previous_start, previous_end = closed[-1]
        if text[previous_end:start].strip():
            gap_end = start
            while text[gap_end - 1].isspace():
                gap_end -= 1
            closed[-1] = (previous_start, gap_end)
        closed.append((start, end))
    closed[-1] = (closed[-1][0], max(closed[-1][1], len(text.rstrip())))
    return closed


def _flexible_search(text: str, piece: str, position: int) -> re.Match[str] | None:
    words = piece.split()
    if not words:
        return None
    return re.compile(r"\s+".join(re.escape(word) for word in words)).search(text, position)


def _covering_placement(
    text: str, pieces: list[str], lookback: Callable[[str], int], *, latest_first: bool
) -> list[int] | None:
    """Starts for ``pieces`` that cover ``text`` (depth-first search, bounded).

    A placement is cut off as soon as the pieces left hold fewer non-space
    characters than the text left to cover: with repeated text, placing
    pieces too early is the usual dead end.
    """
    if not pieces:
        return []
    first = len(text) - len(text.lstrip())
    last = len(text.rstrip())
    spaces = array("q", accumulate(map(str.isspace, text), initial=0))
    left = [0] * (len(pieces) + 1)  # non-space characters in pieces[k:]
    for k in range(len(pieces) - 1, -1, -1):
        left[k] = left[k + 1] + len(pieces[k]) - sum(map(str.isspace, pieces[k]))
    budget = 50 * len(pieces) + 1000
    starts: list[int] = []
    covered: list[int] = []  # the furthest end reached after each placed piece
    options: list[Iterator[int]] = [iter([first] if text.startswith(pieces[0], first) else [])]
    while options:
        budget -= 1
        if budget < 0:
            return None
        k = len(starts)
        start = next(options[-1], None)
        if start is None:
            options.pop()
            if starts:
                starts.pop()
                covered.pop()
            continue
        end = start + len(pieces[k])
        reach = max(covered[-1] if covered else 0, end)
        if (last - reach) - (spaces[last] - spaces[reach]) > left[k + 1]:
            continue
        if k == len(pieces) - 1:
            return [*starts, start]
        starts.append(start)
        covered.append(reach)
        expected = None if latest_first else end - lookback(pieces[k])
        options.append(_candidates(text, pieces[k + 1], start, reach, expected))
    return None


def _candidates(
    text: str, piece: str, previous_start: int, reach: int, expected: int | None
) -> Iterator[int]:
    """Where ``piece`` may start: not before the previous piece, not after a gap.

    First the places that extend the covered text from ``expected`` on (where
    the splitter puts the next chunk), then those before it, latest first, then
    places inside the covered text (a piece the splitter repeated). Without
    ``expected``, the latest places come first.
    """
    latest = _WHITESPACE.match(text, reach).end()  # only whitespace may be skipped
    extending = max(previous_start, reach - len(piece) + 1)
    expected = latest if expected is None else min(max(expected, extending), latest)
    found = text.find(piece, expected, latest + len(piece))
    while found != -1:
        yield found
        found = text.find(piece, found + 1, latest + len(piece))
    found = text.rfind(piece, extending, expected + len(piece) - 1)
    while found != -1:
        yield found
        found = text.rfind(piece, extending, found + len(piece) - 1)
    found = text.find(piece, previous_start, reach)
    while found != -1 and found < extending:
        yield found
        found = text.find(piece, found + 1, reach)
