"""The parts of the report page: each a :class:`Section` of notes, charts and tables.

:func:`build_sections` turns a folder's :class:`~evoforge.report.trace.Lineage` (and the
sizes of its duplicate groups) into the page's sections, in order: the outputs, the
funnels, the rejection reasons, the length distributions, the per-operator yield and
tokens, the cost online against batch, the judges' scores, the dedup clusters, the IN2
needles, the grow outputs and the per-seed trace.
A part with nothing to show is left out, with a line saying why.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from evoforge.report.charts import (
    COLORS,
    bar_svg,
    barh_svg,
    funnel_svg,
    histograms_svg,
    stacked_svg,
)
from evoforge.report.cost import cost_table
from evoforge.report.data import EVOL_INSTRUCT_RULES, Item
from evoforge.report.efficiency import efficiency_table
from evoforge.report.trace import Lineage

SEED_TABLE_ROWS = 200  # a big run's per-seed table is capped (the counts are not)
TOP_REASONS = 25


@dataclass
class Section:
    """A part of the page: notes, plots and tables, shown in the order they were added."""

    id: str
    title: str
    intro: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def add_plot(self, plot_id: str, svg: str) -> None:
        self.blocks.append({"type": "plot", "id": plot_id, "svg": svg})

    def add_table(
        self, caption: str, head: list[str], rows: list[list[str]], table_id: str = ""
    ) -> None:
        self.blocks.append(
            {"type": "table", "caption": caption, "head": head, "rows": rows, "id": table_id}
        )

    def add_note(self, text: str) -> None:
        self.blocks.append({"type": "note", "text": text})

    @property
    def plot_ids(self) -> list[str]:
        return [b["id"] for b in self.blocks if b["type"] == "plot"]


def build_sections(lineage: Lineage, clusters: list[int]) -> tuple[list[Section], list[str]]:
    """The page's sections, in order, and one line for each part left out, saying why."""
    builder = _SectionBuilder(lineage, clusters)
    return builder.sections(), builder.omitted


class _SectionBuilder:
    """Builds each section from the lineage; notes in ``omitted`` the parts it leaves out."""

    def __init__(self, lineage: Lineage, clusters: list[int]) -> None:
        self.lineage = lineage
        self.stages = lineage.stages
        self.chains = lineage.chains
        self.clusters = clusters
        self.omitted: list[str] = []

    def sections(self) -> list[Section]:
        builders = [
            self._overview,
            self._funnels,
            self._reasons,
            self._elimination,
            self._lengths,
            self._operators,
            self._cost,
            self._efficiency,
            self._scores,
            self._clusters,
            self._in2,
            self._grow,
            self._seeds,
        ]
        sections = []
        for build in builders:
            section = build()
            if section is not None:
                sections.append(section)
        return sections

    def _overview(self) -> Section:
        rows = []
        for stage in self.stages:
            model = stage.manifest.get("model") or {}
            rows.append([
                stage.out.name, stage.command, str(len(stage.kept)), str(len(stage.dropped)),
                str(stage.manifest.get("status", "")),
                str(model.get("model", "") if isinstance(model, dict) else model),
                _wall(stage.manifest),
            ])  # fmt: skip
        section = Section("overview", "Outputs", "Every output found in this folder.")
        head = ["output", "step", "kept", "dropped", "status", "model", "wall time"]
        section.add_table("outputs", head, rows)
        return section

    def _funnels(self) -> Section | None:
        if not self.chains:
            self.omitted.append("Funnel: no generation output (answer, evolve, rag, in2) here.")
            return None
        section = Section(
            "funnel",
            "Funnel",
            "Seeds in, records generated, then what remained after each rejection reason "
            "and each later step (validate, dedup, score, select) that saw these records.",
        )
        for chain in self.chains:
            title = f"{chain.source.name} ({chain.source.command})"
            section.add_plot(
                f"plot-funnel-{_slug(chain.source.name)}",
                funnel_svg(self.lineage.funnel(chain), title),
            )
        return section

    def _reasons(self) -> Section | None:
        counts: Counter[str] = Counter()
        for stage in self.stages:
            for drop in stage.dropped:
                counts[f"{drop.reason} ({stage.name})"] += 1
        if not counts:
            self.omitted.append("Rejection reasons: nothing was rejected.")
            return None
        section = Section(
            "reasons", "Rejection reasons", "Why records were dropped, per step (output name)."
        )
        if len(counts) > TOP_REASONS:
            section.add_note(f"The {TOP_REASONS} most common of {len(counts)} reasons.")
        section.add_plot("plot-reasons", barh_svg(counts.most_common(TOP_REASONS), "records"))
        return section

    def _elimination(self) -> Section | None:
        """Per ``evolve`` output of instructions: the count of each of the four rules."""
        tables = []
        for stage in self.stages:
            settings = (stage.manifest.get("config") or {}).get("evolve") or {}
            if stage.command != "evolve" or settings.get("kind", "instruction") != "instruction":
                continue
            counts = Counter(drop.reason for drop in stage.dropped)
            answers = settings.get("answers", False)
            rows = [
                [rule, reason, what, str(counts[reason]) if answers or not needs else "off"]
                for rule, reason, what, needs in EVOL_INSTRUCT_RULES
            ]
            tables.append((stage.name, rows))
        if not tables:
            return None
        section = Section(
            "elimination", "Evol-Instruct elimination rules",
            "Evolutions each of the paper's four rules rejected (Xu et al., 2023). Rules 2 "
            "and 3 judge the answer: they are off under --no-answers.",
        )  # fmt: skip
        for name, rows in tables:
            section.add_table(name, ["rule", "reason", "what it catches", "rejected"], rows)
        return section

    def _lengths(self) -> Section | None:
        before: dict[str, list[Item]] = {}
        after: dict[str, list[Item]] = {}
        for chain in self.chains:
            source = chain.source
            for item in source.kept + [d.item for d in source.dropped if d.item is not None]:
                before.setdefault(item.kind, []).append(item)
            for item in self.lineage.final_items(chain):
                after.setdefault(item.kind, []).append(item)
        section = Section(
            "lengths",
            "Length distributions",
            "Words per prompt and per response, by record kind: every record generated "
            "(before) and those kept at the end of the chain (after).",
        )
        for kind, items in sorted(before.items()):
            panels: list[tuple[str, list[float], list[float] | None]] = []
            for label, attr in (("prompt", "prompt_words"), ("response", "response_words")):
                b = [getattr(i, attr) for i in items if getattr(i, attr) is not None]
                a = [getattr(i, attr) for i in after.get(kind, []) if getattr(i, attr) is not None]
                if b:
                    panels.append((f"{label} words", b, a))
            if panels:
                section.add_plot(f"plot-lengths-{_slug(kind)}", histograms_svg(panels, kind))
        if not section.plot_ids:
            self.omitted.append("Length distributions: no generated records with text.")
            return None
        return section

    def _operators(self) -> Section | None:
        section = Section(
            "operators",
            "Per-operator yield and tokens",
            "Yield: the records each operator (evolution op, rewrite, scenario, sample type) "
            "produced, kept or rejected. Requests and tokens per operator come from the "
            "manifest; a cache hit costs no tokens.",
        )
        for chain in self.chains:
            source = chain.source
            kept = Counter(i.op for i in source.kept)
            rejected = Counter(d.item.op for d in source.dropped if d.item is not None)
            ops = sorted(set(kept) | set(rejected), key=lambda o: (-(kept[o] + rejected[o]), o))
            if not ops:
                continue
            series = [("kept", [kept[o] for o in ops]), ("rejected", [rejected[o] for o in ops])]
            title = f"{source.name}: yield per operator"
            section.add_plot(
                f"plot-yield-{_slug(source.name)}",
                stacked_svg(ops, series, title, "records", (COLORS["kept"], COLORS["drop"])),
            )
            rows = [[o, str(kept[o]), str(rejected[o]), _pct(kept[o], kept[o] + rejected[o])]
                    for o in ops]  # fmt: skip
            section.add_table(title, ["operator", "kept", "rejected", "yield"], rows)
        for stage in self.stages:
            usage = stage.manifest.get("usage")
            if isinstance(usage, dict) and usage:
                self._usage(section, stage.name, usage)
        if not section.plot_ids:
            self.omitted.append("Per-operator yield and tokens: no operators or usage recorded.")
            return None
        return section

    def _usage(self, section: Section, name: str, usage: dict[str, dict[str, int]]) -> None:
        ops = sorted(usage, key=lambda o: (-_usage_total(usage[o]), o))

        def column(key: str) -> list[int]:
            return [int(usage[o].get(key, 0)) for o in ops]

        requests = [("sent", column("calls")), ("cache hits", column("cache_hits"))]
        section.add_plot(
            f"plot-requests-{_slug(name)}",
            stacked_svg(ops, requests, f"{name}: requests per operator", "requests"),
        )
        tokens = [("prompt", column("prompt_tokens")), ("completion", column("completion_tokens"))]
        if sum(tokens[0][1]) + sum(tokens[1][1]):
            section.add_plot(
                f"plot-tokens-{_slug(name)}",
                stacked_svg(ops, tokens, f"{name}: tokens per operator", "tokens"),
            )
        else:
            section.add_note(f"{name}: no tokens spent (every request was a cache hit).")
        keys = ("calls", "cache_hits", "retries", "prompt_tokens", "completion_tokens")
        head = ["operator", "sent", "cache hits", "retries", "prompt tokens", "completion tokens"]
        if any(usage[o].get("cached_tokens") for o in ops):  # issue 19: provider prefix cache
            keys, head = (*keys, "cached_tokens"), [*head, "cached prompt tokens"]
            cached, prompt = sum(column("cached_tokens")), sum(column("prompt_tokens"))
            section.add_note(
                f"{name}: the provider's prefix cache served {cached:,} of {prompt:,} prompt "
                f"tokens ({_pct(cached, prompt)})."
            )
        section.add_table(
            f"{name}: requests and tokens per operator",
            head,
            [[o, *(str(usage[o].get(k, 0)) for k in keys)] for o in ops],
        )

    def _cost(self) -> Section | None:  # issue 19: USD online against batch (report/cost.py)
        table = cost_table(self.stages)
        if table is None:
            self.omitted.append("Cost: no output made model calls.")
            return None
        section = Section("cost", "Cost: online against batch", table["intro"])
        section.add_table(table["caption"], table["head"], table["rows"], "table-cost")
        for note in table["notes"]:
            section.add_note(note)
        return section

    def _efficiency(self) -> Section | None:  # issue 19: per accepted sample (efficiency.py)
        table = efficiency_table(self.stages)
        if table is None:
            return None  # the cost section already says no output made model calls
        section = Section("efficiency", "Calls and tokens per accepted sample", table["intro"])
        section.add_table(table["caption"], table["head"], table["rows"], "table-efficiency")
        return section

    def _scores(self) -> Section | None:
        by_id: dict[str, dict[str, float]] = {}
        for stage in self.stages:
            for item in stage.kept + [d.item for d in stage.dropped if d.item is not None]:
                if item.scores:
                    by_id[item.id] = item.scores
        names = {
            "deita_score": "DEITA score (complexity x quality)",
            "deita_complexity": "DEITA complexity (1-6)",
            "deita_quality": "DEITA quality (1-6)",
            "alpagasus": "AlpaGasus rating (0-5)",
            "ifd": "IFD (answer loss with / without the instruction)",
            "mining": "Instruction Mining predicted loss",
            "memorisation": "Memorisation level (share of templates)",
        }
        panels: list[tuple[str, list[float], list[float] | None]] = []
        for key, label in names.items():
            values = [s[key] for s in by_id.values() if key in s]
            if values:
                panels.append((label, values, None))
        if not panels:
            self.omitted.append("Scores: no DEITA or AlpaGasus scores (select --method deita).")
            return None
        section = Section(
            "scores",
            "Score distributions",
            f"What the judges gave, one score per scored record ({len(by_id)} records).",
        )
        section.add_plot("plot-scores", histograms_svg(panels, "judge scores"))
        return section

    def _clusters(self) -> Section | None:
        if not self.clusters:
            found = any(s.role == "dedup" for s in self.stages)
            self.omitted.append(
                "Dedup clusters: " + ("no duplicates found." if found else "no dedup output here.")
            )
            return None
        sizes = Counter(self.clusters)
        section = Section(
            "clusters",
            "Dedup cluster sizes",
            f"{len(self.clusters)} groups of duplicates; each kept one record and dropped "
            f"the rest ({sum(self.clusters) - len(self.clusters)} records).",
        )
        bars = [(str(size), sizes[size]) for size in sorted(sizes)]
        section.add_plot("plot-clusters", bar_svg(bars, "records in the group", "groups"))
        return section

    def _in2(self) -> Section | None:
        items = [i for c in self.chains for i in self.lineage.final_items(c) if i.kind == "in2"]
        positions = [p for i in items for p in i.needle_positions]
        lengths = [i.context_tokens for i in items if i.context_tokens is not None]
        panels: list[tuple[str, list[float], list[float] | None]] = []
        if positions:
            panels.append(("needle position (0 start, 1 end)", positions, None))
        if lengths:
            panels.append(("context length (tokens)", lengths, None))
        if not panels:
            self.omitted.append("IN2: no in2 records with needles or context lengths here.")
            return None
        section = Section(
            "in2",
            "IN2 needles and contexts",
            f"{len(positions)} needles in {len(items)} kept samples: where each sits in its "
            "context (uniform is the aim), and how long the contexts are.",
        )
        section.add_plot("plot-in2", histograms_svg(panels, "in2", bins=10))
        return section

    def _grow(self) -> Section | None:
        """``grow`` outputs (issue 18): the count asked for and kept, the passes, the
        shortfall and the main rejection reasons, per output."""
        rows = []
        for stage in self.stages:
            if stage.command != "grow":
                continue
            manifest = stage.manifest
            method = str(manifest.get("method", ""))
            gap = (manifest.get("shortfall") or {}).get(method)
            reasons = Counter(drop.reason for drop in stage.dropped).most_common(4)
            rows.append([
                stage.out.name, method, str((manifest.get("plan") or {}).get(method, "")),
                str(len(stage.kept)), str(manifest.get("passes", "")),
                f"{gap['missing']} short ({gap['cause']})" if gap else "none",
                ", ".join(f"{reason} {n}" for reason, n in reasons),
            ])  # fmt: skip
        if not rows:  # no line in "left out": most folders have no grow output
            return None
        section = Section(
            "grow", "Growing the seed set",
            "Self-Instruct, back-translation or Magpie: the records asked for and kept, "
            "the passes it took, any shortfall, and why candidates were dropped "
            "(near_duplicate: ROUGE-L F at or above the threshold with the pool).",
        )  # fmt: skip
        head = ["output", "method", "asked", "kept", "passes", "shortfall", "main reasons"]
        section.add_table("grow", head, rows)
        return section

    def _seeds(self) -> Section | None:
        if not self.chains:
            self.omitted.append("Per-seed trace: no generation output here.")
            return None
        section = Section(
            "seeds",
            "What happened to every seed",
            "Seeds that kept nothing come first, with the reasons their records were "
            'dropped; then the others. "kept" counts records that survived every later step.',
        )
        for chain in self.chains:
            rows, stats = self.lineage.seed_rows(chain)
            why = ", ".join(f"{reason} {n}" for reason, n in stats["why"].items())
            section.add_note(
                f"{chain.source.name}: {stats['seeds']} seeds; {stats['with_output']} kept at "
                f"least one record, {stats['without_output']} kept none"
                + (f" (main reason: {why})" if why else "")
                + "."
            )
            caption = f"{chain.source.name}: per seed"
            if len(rows) > SEED_TABLE_ROWS:
                caption += (
                    f" (the first {SEED_TABLE_ROWS} of {len(rows)} seeds; the counts above "
                    "cover all; every rejection is in the rejects file)"
                )
            section.add_table(
                caption,
                ["seed", "text", "generated", "kept", "what happened"],
                rows[:SEED_TABLE_ROWS],
                table_id=f"seeds-{_slug(chain.source.name)}",
            )
        return section


def _usage_total(stats: dict[str, Any]) -> int:
    return int(stats.get("calls", 0)) + int(stats.get("cache_hits", 0))


def _wall(manifest: dict[str, Any]) -> str:
    wall = manifest.get("wall_s")
    return f"{wall:.1f} s" if isinstance(wall, int | float) else ""


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else ""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x"
