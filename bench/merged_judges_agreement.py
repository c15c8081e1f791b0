"""Merged against separate RAG judges on a labelled fixture: do they agree?

``bench/data/rag_judge_labels.jsonl`` holds 24 RAG samples over six passages, each
labelled per criterion: grounded (the reference is supported by the context),
answerable (the question can be answered from it) and information gain (the question
asks more than its seed). Each passage has one sample that passes everything and one
that fails each criterion in turn.

Every sample is judged twice with the same model: SEPARATE (three calls: the
``critic_grounded``, ``critic_answerable`` and ``evol_equal`` judges, each asked even
after a failure) and MERGED (one ``critic_rag_judge_evolved`` call,
``validators.critics.merged.MergedJudge``). Prints, per criterion, how often the two
agree and how often each matches the label, and how often the panel's outcome (the
first failing critic, or a pass) is the same; an unreadable reply counts as a
disagreement. Default model: the embedded one (``--llm local``, greedy).

    .venv/bin/python bench/merged_judges_agreement.py [--llm local] [--limit 24]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from evoforge.commands.common import build_client, close_client
from evoforge.engine.runner import RecordContext
from evoforge.errors import RequestRejected
from evoforge.options import EngineOptions
from evoforge.records import Record
from evoforge.validators.critics import Answerable, Grounded, InformationGain
from evoforge.validators.critics.merged import MergedJudge

FIXTURE = Path(__file__).resolve().parent / "data" / "rag_judge_labels.jsonl"
CRITERIA = ("grounded", "answerable", "information_gain")


def sample(row: dict[str, Any]) -> Record:
    fields = {
        "user_input": row["question"],
        "reference": row["reference"],
        "reference_contexts": [row["context"]],
        "synthesizer_name": "reasoning",
    }
    return Record("rag", fields, id=row["id"], meta={"seed_question": row["seed"]})


def _ok(verdict: Any) -> bool | None:
    """A verdict's pass/fail; None for a reply the judge could not read."""
    return None if isinstance(verdict, RequestRejected) else bool(verdict.ok)


async def separate(record: Record, ctx: RecordContext) -> dict[str, bool | None]:
    got: dict[str, bool | None] = {}
    for name, critic in zip(CRITERIA, (Grounded(), Answerable(), InformationGain()), strict=True):
        try:
            got[name] = _ok(await critic.judge(record, ctx))
        except RequestRejected:
            got[name] = None
    return got


async def merged(record: Record, ctx: RecordContext) -> dict[str, bool | None]:
    try:
        verdicts = await MergedJudge().judge_all(record, ctx)
    except RequestRejected:
        return dict.fromkeys(CRITERIA)
    return {name: _ok(verdicts[name]) for name in CRITERIA}


def outcome(got: dict[str, bool | None]) -> str:
    """What the panel would do: the first criterion that fails (or is unreadable)."""
    for name in CRITERIA:
        if got[name] is not True:
            return name if got[name] is False else f"{name}?"
    return "pass"


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    rows = [json.loads(line) for line in FIXTURE.read_text("utf-8").splitlines() if line]
    rows = rows[: args.limit]
    options = EngineOptions(llm=args.llm, cache=False, quiet=True, temperature=0.0)
    client = build_client(options)
    results = []
    timing = {"separate": 0.0, "merged": 0.0}
    try:
        for row in rows:
            record = sample(row)
            ctx = RecordContext(client, 0, record.id)
            started = time.perf_counter()
            one = await separate(record, ctx)
            timing["separate"] += time.perf_counter() - started
            started = time.perf_counter()
            two = await merged(record, ctx)
            timing["merged"] += time.perf_counter() - started
            results.append({"id": row["id"], "labels": row["labels"], "separate": one,
                            "merged": two})  # fmt: skip
            print(f"{row['id']:>22}: separate {outcome(one):>18}  merged {outcome(two):>18}  "
                  f"label {outcome(row['labels'])}", flush=True)  # fmt: skip
    finally:
        await close_client(client)
    n = len(results)
    figures: dict[str, Any] = {"samples": n, "llm": args.llm, "seconds": timing}
    for name in CRITERIA:
        figures[name] = {
            "agree": sum(r["separate"][name] == r["merged"][name] for r in results) / n,
            "separate_vs_label": sum(r["separate"][name] == r["labels"][name] for r in results) / n,
            "merged_vs_label": sum(r["merged"][name] == r["labels"][name] for r in results) / n,
        }
    figures["outcome_agree"] = (
        sum(outcome(r["separate"]) == outcome(r["merged"]) for r in results) / n
    )
    figures["verdicts_agree"] = sum(
        r["separate"][c] == r["merged"][c] for r in results for c in CRITERIA
    ) / (3 * n)
    for side in ("separate", "merged"):
        figures[f"{side}_verdicts_vs_label"] = sum(
            r[side][c] == r["labels"][c] for r in results for c in CRITERIA
        ) / (3 * n)
        figures[f"{side}_outcome_vs_label"] = (
            sum(outcome(r[side]) == outcome(r["labels"]) for r in results) / n
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--llm", default="local")
    parser.add_argument("--limit", type=int, default=24)
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    for name in CRITERIA:
        f = figures[name]
        print(f"{name:>16}: merged = separate on {f['agree']:.0%}; vs label: separate "
              f"{f['separate_vs_label']:.0%}, merged {f['merged_vs_label']:.0%}")  # fmt: skip
    print(f"vs label, all verdicts: separate {figures['separate_verdicts_vs_label']:.0%}, "
          f"merged {figures['merged_verdicts_vs_label']:.0%}; panel outcome: separate "
          f"{figures['separate_outcome_vs_label']:.0%}, merged "
          f"{figures['merged_outcome_vs_label']:.0%}")  # fmt: skip
    print(f"all verdicts agree: {figures['verdicts_agree']:.0%}; panel outcome agrees: "
          f"{figures['outcome_agree']:.0%} of {figures['samples']} samples; seconds: "
          f"separate {figures['seconds']['separate']:.0f}, "
          f"merged {figures['seconds']['merged']:.0f}")  # fmt: skip
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
