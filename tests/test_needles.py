"""The one Needle type and placement routine that IN2 and VaL probing share."""

from __future__ import annotations

import random
from dataclasses import asdict

import pytest

from evoforge.generators.in2_assembly import Needle as In2Needle
from evoforge.generators.needles import Needle, place_needles
from evoforge.generators.probe_tasks import TASKS
from evoforge.generators.probing import Needle as ProbingNeedle
from evoforge.generators.segments import Segment
from evoforge.probe import METRICS


def _segment(doc: str, index: int, text: str) -> Segment:
    return Segment(doc, index, 0, len(text), text, len(text.split()))


NEEDLES = [_segment("n", 0, "the needle one"), _segment("n", 1, "needle two")]
FILLERS = [_segment(f"f{i}", 0, f"filler number {i} here") for i in range(6)]


def test_one_needle_type_everywhere() -> None:
    assert In2Needle is Needle and ProbingNeedle is Needle
    assert list(asdict(Needle("d", 0, 1, 2, 3, 4, "t"))) == [
        "doc_id",
        "segment_index",
        "token_start",
        "token_end",
        "char_start",
        "char_end",
        "text",
    ]


@pytest.mark.parametrize("separator, separator_tokens", [("\n\n", 2), (" ", 0)])
def test_a_joint_shuffle_keeps_exact_offsets(separator: str, separator_tokens: int) -> None:
    placement = place_needles(
        NEEDLES,
        FILLERS,
        separator=separator,
        separator_tokens=separator_tokens,
        rng=random.Random(3),
    )
    # The draws are one shuffle of the needles followed by the fillers.
    expected = [(s, True) for s in NEEDLES] + [(s, False) for s in FILLERS]
    random.Random(3).shuffle(expected)
    assert placement.context == separator.join(s.text for s, _ in expected)
    assert placement.fillers == tuple(s for s, needle in expected if not needle)
    for needle in placement.needles:
        assert placement.context[needle.char_start : needle.char_end] == needle.text
        assert needle.token_end - needle.token_start == len(needle.text.split())
    pieces = len(NEEDLES) + len(FILLERS)
    total = sum(s.tokens for s in NEEDLES + FILLERS) + separator_tokens * (pieces - 1)
    assert placement.context_tokens == total


@pytest.mark.parametrize("at", [0, 3, len(FILLERS)])
def test_placing_at_an_index(at: int) -> None:
    placement = place_needles(NEEDLES[:1], FILLERS, separator=" | ", at=at)
    texts = [s.text for s in FILLERS]
    texts.insert(at, NEEDLES[0].text)
    assert placement.context == " | ".join(texts)
    (needle,) = placement.needles
    assert placement.context[needle.char_start :].startswith(NEEDLES[0].text)
    assert placement.context[: needle.char_start].count(" | ") == at
    assert placement.fillers == tuple(FILLERS)


def test_exactly_one_way_of_placing() -> None:
    with pytest.raises(ValueError):
        place_needles(NEEDLES, FILLERS, separator=" ")
    with pytest.raises(ValueError):
        place_needles(NEEDLES, FILLERS, separator=" ", rng=random.Random(0), at=0)
    with pytest.raises(ValueError):
        place_needles(NEEDLES, FILLERS, separator=" ", at=len(FILLERS) + 1)


def test_each_probe_task_scores_with_its_metric() -> None:
    assert list(TASKS) == list(METRICS)
    for name, task in TASKS.items():
        assert task.score is METRICS[name]
