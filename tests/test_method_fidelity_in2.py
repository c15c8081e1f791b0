"""Issue 14, items 4, 8 and 10: IN2 integration places every piece it shows; exact-N
passes adapt to the acceptance rate and a shortfall says whether a re-run can help
(exit code 3); benchmark decontamination for evolve, rag and validate."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from test_in2 import SMALL as IN2_SMALL
from test_in2 import in2_responder, make_corpus

from evoforge import EngineOptions
from evoforge.api import EvolveOptions, In2Options, RagOptions, evolve, in2, rag
from evoforge.commands.exact_n import MAX_FACTOR, pass_sizes
from evoforge.generators.decontamination import Benchmarks, record_text
from evoforge.testing.scripted import ScriptedChatModel, rag_prompt
from helpers import rag_responder, read_jsonl, run_cli, write_jsonl

DOCS = Path(__file__).resolve().parent.parent / "examples" / "docs"
RAG_SMALL = {"embedder": "hashing", "chunk_size": 400, "chunk_overlap": 40}
BENCHMARK_SENTENCE = (
    "A colony has one queen, who lays the eggs, a few hundred male drones, and a large "
    "number of female workers"
)


# Item 4: every integration piece shown to the model is a needle of the context.


def test_every_integration_piece_shown_is_placed_as_a_needle(tmp_path):
    shown: dict[str, list[str]] = {}

    def responder(messages, n):
        user = messages[-1]["content"]
        if "numbered pieces" in messages[0]["content"]:
            pieces = re.findall(r"# Piece \d+: (.*?)(?=\n\n# Piece \d+: |\Z)", user, re.S)
            reply = json.loads(in2_responder(messages, n))
            shown[reply["question"]] = pieces
            return json.dumps(reply)  # names pieces 1 and 2 only
        return in2_responder(messages, n)

    corpus = make_corpus(tmp_path / "corpus", n_docs=12)
    in2(
        [corpus], tmp_path / "o.jsonl",
        in2=In2Options(n=4, mix="integration=1", **IN2_SMALL),
        options=EngineOptions(quiet=True, cache=False),
        model=ScriptedChatModel(responder, record=False),
    )  # fmt: skip
    records = read_jsonl(tmp_path / "o.jsonl")
    assert len(records) == 4
    for record in records:
        pieces = shown[record["meta"]["question"]]
        assert len(pieces) > 2  # the model named two; every one shown is placed
        assert sorted(n["text"] for n in record["needles"]) == sorted(pieces)
        assert record["meta"]["pieces"] == [1, 2]
        user = record["messages"][0]["content"]
        context = user[record["context_start"] : record["context_start"] + record["context_chars"]]
        for needle in record["needles"]:
            assert context[needle["char_start"] : needle["char_end"]] == needle["text"]


# Item 8: pass sizes from the acceptance rate; shortfall causes; exit code 3.


def test_pass_sizes_follow_the_acceptance_rate():
    counts = {"simple": 10, "reasoning": 4}
    assert pass_sizes(counts, Counter(), Counter()) == counts  # pass 1: exactly the counts
    # simple kept 5 of 10 planned (rate 0.5): its gap of 5 needs 10; reasoning kept 0 of
    # 4, so it takes the overall rate 5/14.
    need = pass_sizes(counts, Counter(simple=5), Counter(simple=10, reasoning=4))
    assert need == {"simple": 10, "reasoning": 12}
    # nothing kept anywhere: at most MAX_FACTOR times the gap
    assert pass_sizes({"a": 3}, Counter(), Counter(a=3)) == {"a": int(3 * MAX_FACTOR)}
    assert pass_sizes(counts, Counter(simple=10, reasoning=4), Counter(simple=10)) == {}


def test_low_acceptance_still_reaches_n_without_a_pass_cap(tmp_path):
    calls = Counter()

    def harsh(messages, n):  # the answerable judge rejects three samples of every four
        if "strict reviewer" in messages[0]["content"]:
            calls["judge"] += 1
            if calls["judge"] % 4:
                return json.dumps({"verdict": "no", "reason": "needs outside knowledge"})
        return rag_responder(messages, n)

    summary = rag(
        [DOCS], tmp_path / "o.jsonl",
        rag=RagOptions(n=4, mix="simple=1", **RAG_SMALL),
        options=EngineOptions(quiet=True, cache=False), model=ScriptedChatModel(harsh),
    )  # fmt: skip
    assert summary.accepted == 4 and summary.exit_code == 0
    assert summary.extra["shortfall"] == {}


def _tiny_docs(folder: Path) -> Path:
    folder.mkdir()
    (folder / "one.txt").write_text(
        "Glaciers move slowly downhill under their own weight. They carve valleys over "
        "thousands of years and leave moraines behind when they retreat."
    )
    return folder


def test_exhausted_material_is_a_shortfall_that_a_rerun_cannot_fix(tmp_path):
    summary = rag(
        [_tiny_docs(tmp_path / "docs")], tmp_path / "o.jsonl",
        rag=RagOptions(n=5, mix="simple=1", **RAG_SMALL),
        options=EngineOptions(quiet=True, cache=False), model=ScriptedChatModel(rag_responder),
    )  # fmt: skip
    gap = summary.extra["shortfall"]["simple"]
    assert gap["cause"] == "material" and gap["resumable"] is False
    assert summary.exit_code == 3 and "short of the count" in summary.message
    manifest = json.loads(summary.manifest.read_text())
    assert manifest["shortfall"]["simple"]["resumable"] is False


def test_a_spent_budget_is_a_resumable_shortfall_and_exits_3(tmp_path):
    summary = rag(
        [DOCS], tmp_path / "o.jsonl", rag=RagOptions(n=6, mix="simple=1", **RAG_SMALL),
        options=EngineOptions(quiet=True, cache=False, max_calls=4),
        model=ScriptedChatModel(rag_responder),
    )  # fmt: skip
    assert summary.exit_code == 3 and summary.status == "stopped"
    gap = summary.extra["shortfall"]["simple"]
    assert gap["cause"] == "budget" and gap["resumable"] is True
    manifest = json.loads(summary.manifest.read_text())
    assert manifest["shortfall"]["simple"]["cause"] == "budget"


def test_in2_shortfall_is_recorded_the_same_way(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_docs=3)
    summary = in2(
        [corpus], tmp_path / "o.jsonl", in2=In2Options(n=20, mix="short=1", **IN2_SMALL),
        options=EngineOptions(quiet=True, cache=False),
        model=ScriptedChatModel(in2_responder, record=False),
    )  # fmt: skip
    gap = summary.extra["shortfall"]["short"]
    assert gap["cause"] == "material" and gap["resumable"] is False
    assert summary.exit_code == 3


def test_max_passes_is_deprecated_but_still_caps(tmp_path):
    result = run_cli("rag", "--help")
    assert "Deprecated" in result.stdout
    assert RagOptions(n=1).max_passes is None and In2Options(n=1).max_passes is None


# Item 10: --decontaminate for evolve, rag and validate.


def _benchmark(tmp_path: Path) -> Path:
    return write_jsonl(
        tmp_path / "bench.jsonl",
        [{"question": f"{BENCHMARK_SENTENCE}?", "answer": "workers"}],
    )


def test_benchmarks_name_the_ngram_and_the_file(tmp_path):
    bench = _benchmark(tmp_path)
    text = tmp_path / "bench.txt"
    text.write_text("An unrelated line.\n" + BENCHMARK_SENTENCE)
    benchmarks = Benchmarks([text, bench])
    verdict = benchmarks.verdict({"instruction": f"Explain: {BENCHMARK_SENTENCE}."})
    assert verdict.reason == "contaminated"
    assert "10-gram 'a colony has one queen who lays the eggs a'" in verdict.detail
    assert str(text) in verdict.detail
    assert benchmarks.verdict({"instruction": "Explain how bees dance."}).ok
    # retrieved contexts are documents, not what the record asks or teaches
    assert record_text({"question": "q", "contexts": [BENCHMARK_SENTENCE]}) == "q"


def test_validate_rejects_contaminated_records(tmp_path):
    bench = _benchmark(tmp_path)
    data = write_jsonl(
        tmp_path / "d.jsonl",
        [
            {"id": "a", "kind": "instruction", "instruction": "Why do bees dance?",
             "input": "", "output": "To share where food is."},
            {"id": "b", "kind": "instruction", "instruction": f"Is it true? {BENCHMARK_SENTENCE}",
             "input": "", "output": "Yes."},
        ],
    )  # fmt: skip
    out = tmp_path / "clean.jsonl"
    result = run_cli("validate", str(data), "--out", str(out), "--decontaminate", str(bench))
    assert result.returncode == 1
    assert [r["id"] for r in read_jsonl(out)] == ["a"]
    (reject,) = read_jsonl(tmp_path / "clean.rejects.jsonl")
    assert reject["reason"] == "contaminated" and str(bench) in reject["detail"]


def test_evolve_rejects_an_evolution_that_copies_a_benchmark(tmp_path):
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": "s1", "instruction": "Describe honeybee colonies."},
         {"id": "s2", "instruction": "Describe the tides."}],
    )  # fmt: skip

    def model(messages, n):
        prompt = messages[-1]["content"]
        if "honeybee" in prompt and "Prompt#" in prompt:
            return f"Describe honeybee colonies: is it true that {BENCHMARK_SENTENCE}?"
        if "Prompt#" in prompt:
            return "Describe the tides and explain the role of the Moon in two sentences."
        return "An answer."

    summary = evolve(
        seeds, tmp_path / "e.jsonl",
        evolution=EvolveOptions(rounds=1, judge=False, decontaminate=[str(_benchmark(tmp_path))]),
        options=EngineOptions(quiet=True, cache=False), model=ScriptedChatModel(model),
    )  # fmt: skip
    assert summary.rejected_by_reason.get("contaminated") == 1
    rejects = read_jsonl(tmp_path / "e.rejects.jsonl")
    assert any("bench.jsonl" in r["detail"] for r in rejects if r["reason"] == "contaminated")
    assert all(BENCHMARK_SENTENCE not in r["instruction"] for r in read_jsonl(tmp_path / "e.jsonl"))


def test_rag_rejects_samples_that_overlap_a_benchmark(tmp_path):
    from evoforge.io.documents import load_documents

    # A benchmark quoting the documents: samples that repeat them are contaminated.
    texts = [doc.text for doc in load_documents([DOCS]).documents]
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"question": text} for text in texts])

    def quoting(messages, n):  # seed answers quote their passage at length
        reply = rag_responder(messages, n)
        rag_parts = rag_prompt(messages)  # (task, contexts): the passage is context [1]
        if rag_parts and "You write questions for a test set" in rag_parts[0]:
            body = max(rag_parts[1][0].split("\n\n"), key=len)
            reply = json.dumps({**json.loads(reply), "answer": body[:300]})
        return reply

    summary = rag(
        [DOCS], tmp_path / "o.jsonl",
        rag=RagOptions(n=6, mix="simple=1", decontaminate=[str(bench)], **RAG_SMALL),
        options=EngineOptions(quiet=True, cache=False), model=ScriptedChatModel(quoting),
    )  # fmt: skip
    rejects = read_jsonl(tmp_path / "o.rejects.jsonl")
    assert any(r["reason"] == "contaminated" for r in rejects), summary.rejected_by_reason
    for record in read_jsonl(tmp_path / "o.jsonl"):
        assert Benchmarks([tmp_path / "bench.jsonl"]).match(record_text(record)) is None
