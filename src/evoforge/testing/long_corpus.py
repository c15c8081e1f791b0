"""Long, made-up documents for measuring what a provider's prefix cache serves.

:func:`make_corpus` writes Markdown documents of a few thousand words each from a
seeded grammar (places, people, works and what they did, with years and counts),
so a ``rag`` run over them has chunks as long as real reports have, the same text
on every run, and no download. Used by ``bench/prefix_cache.py`` and its test.
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["make_corpus"]

_PLACES = [
    "Arlen", "Brevik", "Calder", "Dunmore", "Elsworth", "Farrow", "Glenholm", "Harwick",
    "Islay", "Jarrow", "Kelso", "Lanark", "Morven", "Norham", "Oban", "Penrith",
]  # fmt: skip
_PEOPLE = [
    "Ada Linwood", "Bram Osgood", "Clara Venn", "Dmitri Hale", "Edith Marsh", "Felix Roan",
    "Greta Lund", "Hugo Pell", "Irene Sato", "Jonas Weir", "Karin Holt", "Leon Abara",
]  # fmt: skip
_THINGS = [
    "tidal mill", "glass furnace", "rope walk", "salt pan", "printing shop", "weather station",
    "lighthouse", "canal lock", "brick kiln", "observatory", "paper mill", "ferry crossing",
    "grain store", "iron foundry", "botanical garden", "signal tower",
]  # fmt: skip
_VERBS = ["built", "repaired", "expanded", "surveyed", "documented", "restored", "funded"]
_ADJ = ["narrow", "busy", "quiet", "coastal", "upland", "marshy", "wooded", "rocky"]
_EFFECTS = [
    "doubled the output of the valley", "drew traders from the southern ports",
    "cut the journey to the market by a day", "kept records that historians still use",
    "trained a generation of apprentices", "survived three winter floods",
    "changed how the harbour was run", "set the price of grain for the district",
]  # fmt: skip


def make_corpus(folder: Path, *, docs: int, words: int, seed: int = 0) -> None:
    """``docs`` Markdown documents of about ``words`` words each, from a seeded grammar."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for d in range(docs):
        place = _PLACES[d % len(_PLACES)]
        thing = _THINGS[(d * 5) % len(_THINGS)]
        lines = [f"# The {thing} of {place}", ""]
        count = 0
        while count < words:
            sentences = []
            for _ in range(rng.randint(4, 7)):
                year = rng.randint(1610, 1990)
                person, other = rng.sample(_PEOPLE, 2)
                sentence = rng.choice(
                    [
                        f"In {year}, {person} {rng.choice(_VERBS)} the {rng.choice(_THINGS)} "
                        f"near {place}, on the {rng.choice(_ADJ)} side of the river.",
                        f"The {thing} of {place} {rng.choice(_EFFECTS)} after {year}.",
                        f"{person} wrote to {other} that the {rng.choice(_THINGS)} "
                        f"{rng.choice(_EFFECTS)}.",
                        f"By {year} the {rng.choice(_ADJ)} road to {rng.choice(_PLACES)} "
                        f"carried {rng.randint(2, 90)} carts a week past the {thing}.",
                        f"Local accounts from {year} say the {thing} employed "
                        f"{rng.randint(3, 400)} people and {rng.choice(_EFFECTS)}.",
                    ]
                )
                sentences.append(sentence)
            paragraph = " ".join(sentences)
            count += len(paragraph.split())
            lines += [paragraph, ""]
        (folder / f"doc{d:02d}.md").write_text("\n".join(lines), "utf-8")
