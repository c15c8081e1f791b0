"""``demo``: the engine end to end, offline, on the embedded model: answer, evolve, a
RAG evaluation set, IN2 samples, then dedup and a k-center subset, each shown as it
comes out. ``say(text, err)`` prints a line; ``show(summary, title)`` a run's summary."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evoforge.commands.answer import answer
from evoforge.commands.dedup import dedup
from evoforge.commands.evolve import evolve
from evoforge.commands.in2 import in2
from evoforge.commands.rag import rag
from evoforge.commands.select import select
from evoforge.io.readers import load_jsonl
from evoforge.options import EngineOptions, EvolveOptions, In2Options, RagOptions, SelectOptions

Say = Callable[[str, bool], None]


def run_demo(
    out: Path, options: EngineOptions, *, say: Say, show: Callable[[Any, str], None]
) -> list[Any]:
    """Run every stage into ``out``; the run summaries (answer, evolve, rag, in2)."""
    from importlib import resources

    examples = resources.files("evoforge.examples")
    out.mkdir(parents=True, exist_ok=True)
    say(f"evoforge demo: 1/4 answering instructions.jsonl with --llm {options.llm} (the first "
        "run converts the embedded model, about 30 s)", True)  # fmt: skip
    with resources.as_file(examples.joinpath("instructions.jsonl")) as seeds_path:
        answered = answer(seeds_path, out / "answers.jsonl", options=options)
    show(answered, "evoforge demo: answer")
    _show_samples(answered.out, say, limit=2)

    say("\nevoforge demo: 2/4 evolving evolve_seeds.jsonl through 2 Evol-Instruct "
        "rounds, answering each evolution", True)  # fmt: skip
    with resources.as_file(examples.joinpath("evolve_seeds.jsonl")) as seeds_path:
        evolved = evolve(
            seeds_path,
            out / "evolved.jsonl",
            evolution=EvolveOptions(rounds=2, answers=True, final_only=False),
            options=options,
        )
    show(evolved, "evoforge demo: evolve")
    _show_lineage(evolved.out, say)

    say("\nevoforge demo: 3/4 a RAG evaluation set of 4 samples from examples/docs "
        "(knowledge graph with MiniLM embeddings, critics on)", True)  # fmt: skip
    with resources.as_file(examples.joinpath("docs")) as docs_path:
        built = rag(
            [docs_path],
            out / "eval.jsonl",
            rag=RagOptions(n=4, mix="simple=0.5,reasoning=0.5", chunk_size=600, chunk_overlap=60,
                           max_passes=2, graph=str(out / "graph.json")),
            options=options,
        )  # fmt: skip
    show(built, "evoforge demo: rag")
    _show_questions(built.out, say)

    say("\nevoforge demo: 4/4 three IN2 long-context samples from examples/docs (contexts "
        "of 512-2048 tokens here; the paper's 4K-32K is the default)", True)  # fmt: skip
    with resources.as_file(examples.joinpath("docs")) as docs_path:
        long = in2(
            [docs_path],
            out / "in2.jsonl",
            in2=In2Options(n=3, mix="fine_grained=2,short=1", min_tokens=512, max_tokens=2048,
                           max_passes=2),
            options=options,
        )  # fmt: skip
    show(long, "evoforge demo: in2")
    _show_needles(long.out, say)

    say("\nevoforge demo: and last, duplicates and a diverse subset of the answers "
        "and their evolutions", True)  # fmt: skip
    _prune(out, say, answered.out, evolved.out)
    return [answered, evolved, built, long]


def _prune(out: Path, say: Say, *paths: Path) -> None:
    """Dedup the demo's instruction records, then pick a k-center subset (no LLM)."""
    records = [record for path in paths for record in load_jsonl(path)]
    pruned = dedup(records, out / "pool.jsonl", fields=["instruction"])
    kept, dropped = pruned.kept, pruned.dropped
    say(f"dedup: {len(records)} records, {len(dropped)} near-duplicates dropped", False)
    for rejection in dropped[:3]:
        say(f"  {rejection['id']}: {rejection['detail']}", False)
    budget = max(1, len(kept) // 2)
    report = select(out / "pool.jsonl", out / "selected.jsonl",
                    selection=SelectOptions(method="kcenter", budget=budget))  # fmt: skip
    say(f"select (LTD k-center): {report['selected']} of {report['input']} kept in "
        f"{out / 'selected.jsonl'}", False)  # fmt: skip


def _show_needles(path: Path, say: Say) -> None:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            needle = record["needles"][0]
            say(f"\n[{record['sample_type']}] {record['meta']['question']}", False)
            where = f"{needle['char_start']}-{needle['char_end']}"
            say(f"  context {record['context_tokens']} tokens; needle at characters "
                f"{where}: {needle['text'][:100]}", False)  # fmt: skip


def _show_questions(path: Path, say: Say) -> None:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            ref = record["reference_context_ids"][0]
            say(f"\n[{record['synthesizer_name']}] {record['user_input']}", False)
            say(f"  -> {record['reference'][:200]}", False)
            say(f"     ({ref['path']} characters {ref['start']}-{ref['end']})", False)


def _show_lineage(path: Path, say: Say) -> None:
    """Each seed's versions, round by round, so the evolution can be read."""
    by_seed: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            by_seed.setdefault(record["id"].split("/")[0], []).append(record)
    for seed_id, versions in by_seed.items():
        say(f"\n[{seed_id}]", False)
        for record in versions:
            op = record.get("meta", {}).get("evol", {}).get("op", "seed")
            say(f"  {op:>16}: {record['instruction'][:200]}", False)


def _show_samples(path: Path, say: Say, *, limit: int) -> None:
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= limit:
                break
            record = json.loads(line)
            say(f"\n[{record['id']}] {record['instruction']}", False)
            answer_text = record.get("output", "")
            say("  -> " + answer_text[:300].replace("\n", "\n     "), False)
