"""Following records along their chain: the funnel and every seed's fate.

A generation output (``answer``, ``evolve``, ``rag``, ``in2``) and the later stages its
records went through (validate, dedup, score, select: records keep their ids through
them) form a :class:`~evoforge.report.data.Chain`. :class:`Lineage` builds the chains of
a folder and counts along each one: what remained after each rejection reason and each
later step (the funnel), and per seed, what it generated, what it kept at the end and
why the rest was dropped. The page and the summary both read these counts.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from evoforge.report.data import Chain, Item, Stage

FUNNEL_REASONS = 8  # a funnel names its commonest reasons; the others share one step

_ROLE_VERB = {
    "score": "scored",
    "validate": "passed validation",
    "dedup": "deduplicated",
    "select": "selected",
}


class Lineage:
    """The stages of a folder, the chain of each generation output, and their counts."""

    def __init__(self, stages: list[Stage]) -> None:
        self.stages = stages
        self.chains = [self._chain(s) for s in stages if s.role == "generate"]
        self._seed_rows: dict[str, tuple[list[list[str]], dict[str, Any]]] = {}

    def _chain(self, source: Stage) -> Chain:
        ids = source.kept_ids
        later = []
        for stage in self.stages:
            if stage.role != "generate" and stage.input_ids & ids:
                later.append(stage)
        later.sort(key=lambda s: (-len(s.input_ids & ids), s.mtime, s.name))
        return Chain(source, later)

    def funnel(self, chain: Chain) -> list[tuple[str, int]]:
        """``(step, records left)``: seeds, generated, then after each commonest rejection
        reason and each later stage."""
        source = chain.source
        seeds = self.seed_map(chain)
        made = [d for d in source.dropped if d.item is not None]  # not e.g. bad_seed
        generated = len(source.kept) + len(made)
        n_seeds = source.seeds_read
        if n_seeds is None:  # an older run: its journal's seeds, else the records' own
            n_seeds = len(set(source.seed_ids or []) | set(seeds.values()))
        steps = [(_seed_label(source.command), n_seeds), ("generated", generated)]
        remaining = generated
        reasons = Counter(d.reason for d in made).most_common()
        for reason, count in reasons[:FUNNEL_REASONS]:
            remaining -= count
            steps.append((f"passed {reason} check", remaining))
        if len(reasons) > FUNNEL_REASONS:  # the rest are in the rejection-reasons plot
            remaining -= sum(count for _, count in reasons[FUNNEL_REASONS:])
            steps.append((f"passed {len(reasons) - FUNNEL_REASONS} other checks", remaining))
        alive = source.kept_ids
        for stage in chain.later:
            alive = alive - {d.id for d in stage.dropped}
            verb = _ROLE_VERB.get(stage.role, stage.role)
            steps.append((f"{verb} ({stage.name})", len(alive & stage.kept_ids)))
        return steps

    def seed_map(self, chain: Chain) -> dict[str, str]:
        """Record id -> seed id, for every record the generation stage wrote or dropped."""
        source = chain.source
        known = set(source.seed_ids or [])
        ids = [i.id for i in source.kept] + [d.id for d in source.dropped]
        return {record_id: _seed_of(record_id, known) for record_id in ids}

    def final_items(self, chain: Chain) -> list[Item]:
        """The generated records that no later stage dropped."""
        return [item for item in chain.source.kept if chain.fate(item.id) is None]

    def seed_rows(self, chain: Chain) -> tuple[list[list[str]], dict[str, Any]]:
        """One row per seed: seed id, text, generated, kept at the end, what happened
        (seeds that kept nothing first), and the counts over all seeds."""
        name = chain.source.name
        if name not in self._seed_rows:  # the page and the summary both use it
            self._seed_rows[name] = self._trace_seeds(chain)
        return self._seed_rows[name]

    def _trace_seeds(self, chain: Chain) -> tuple[list[list[str]], dict[str, Any]]:
        seeds = self.seed_map(chain)
        order = list(dict.fromkeys([*(chain.source.seed_ids or []), *seeds.values()]))
        generated: Counter[str] = Counter(seeds[i.id] for i in chain.source.kept)
        generated.update(seeds[d.id] for d in chain.source.dropped if d.item is not None)
        kept: Counter[str] = Counter()
        events: dict[str, Counter[str]] = {s: Counter() for s in order}
        lost_later: dict[str, str] = {}  # a seed's record that a later step dropped: why
        text: dict[str, str] = {}
        for item in chain.source.kept:
            seed = seeds[item.id]
            if item.id == seed or seed not in text:
                text[seed] = item.text
            fate = chain.fate(item.id)
            if fate is None:
                kept[seed] += 1
            else:
                stage, drop = fate
                lost = f" to {drop.lost_to}" if drop.lost_to else ""
                events[seed][f"{drop.reason}{lost} at {stage.name}"] += 1
                lost_later[seed] = f"{drop.reason} at {stage.name}"
        for drop in chain.source.dropped:
            seed = seeds[drop.id]
            if drop.item is not None and (drop.id == seed or seed not in text):
                text[seed] = drop.item.text
            events[seed][drop.reason] += 1
        rows = []
        for seed in order:
            happened = "; ".join(
                f"{reason} x{n}" if n > 1 else reason for reason, n in events[seed].most_common()
            )
            rows.append([seed, text.get(seed, ""), str(generated.get(seed, 0)),
                         str(kept[seed]), happened or "all kept"])  # fmt: skip
        lost_all = [r for r in rows if r[3] == "0"]
        # Why a seed ended with nothing: the step that dropped its last records, else the
        # commonest reason its records were rejected when generated.
        last_reason: Counter[str] = Counter()
        for seed in (r[0] for r in lost_all):
            if seed in lost_later:
                last_reason[lost_later[seed]] += 1
            elif events[seed]:
                last_reason[events[seed].most_common(1)[0][0]] += 1
            else:
                last_reason["nothing generated"] += 1
        stats = {
            "seeds": len(rows),
            "with_output": len(rows) - len(lost_all),
            "without_output": len(lost_all),
            "why": dict(last_reason.most_common()),
        }
        rows = lost_all + [r for r in rows if r[3] != "0"]
        return rows, stats


def _seed_of(record_id: str, known: set[str]) -> str:
    """The seed a record came from: the longest journal seed id that prefixes it (ids grow
    by ``/suffix`` per step), else its first path part."""
    if known:
        parts = record_id.split("/")
        for end in range(len(parts), 0, -1):
            prefix = "/".join(parts[:end])
            if prefix in known:
                return prefix
    return record_id.split("/")[0]


def _seed_label(command: str) -> str:
    return {"rag": "planned scenarios", "in2": "planned samples"}.get(command, "seeds")
