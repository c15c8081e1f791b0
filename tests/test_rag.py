"""The RAG generator end to end on the example documents, with a scripted model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evoforge import EngineOptions, InputError
from evoforge.api import RagOptions, rag
from evoforge.evolvers.base import exact_mix
from evoforge.generators.knowledge_graph import KnowledgeGraph
from evoforge.generators.rag import parse_mix
from evoforge.io.documents import load_documents
from evoforge.testing.scripted import ScriptedChatModel
from helpers import prompt_parts, rag_responder, read_jsonl, run_cli

DOCS = Path(__file__).resolve().parent.parent / "examples" / "docs"
SMALL = {"embedder": "hashing", "chunk_size": 400, "chunk_overlap": 40}


def build(tmp_path, n=12, model=None, **settings):
    model = model or ScriptedChatModel(rag_responder)
    summary = rag(
        [DOCS],
        tmp_path / "eval.jsonl",
        rag=RagOptions(n=n, **{**SMALL, **settings}),
        options=EngineOptions(quiet=True),
        model=model,
    )
    return summary, read_jsonl(tmp_path / "eval.jsonl"), model


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rag")
    import os

    os.environ["EVOFORGE_CACHE_DIR"] = str(tmp / "cache")
    try:
        summary, records, model = build(tmp, n=12, graph=str(tmp / "graph.json"))
    finally:
        del os.environ["EVOFORGE_CACHE_DIR"]
    return tmp, summary, records, model


def test_exactly_n_samples_in_the_exact_mix(built):
    _, summary, records, _ = built
    assert len(records) == 12 and summary.accepted == 12
    expected = exact_mix(12, parse_mix(None), 0)
    assert Counter(r["synthesizer_name"] for r in records) == Counter(
        {k: v for k, v in expected.items() if v}
    )


def test_offsets_reproduce_every_context_exactly(built):
    _, _, records, _ = built
    texts = {doc.id: doc.text for doc in load_documents([DOCS]).documents}
    for record in records:
        for context, ref in zip(
            record["reference_contexts"], record["reference_context_ids"], strict=True
        ):
            assert texts[ref["doc_id"]][ref["start"] : ref["end"]] == context


def test_samples_spread_over_the_documents(built):
    _, summary, records, _ = built
    coverage = summary.extra["coverage"]
    assert len(coverage) == 5  # every example document is used
    assert max(coverage.values()) - min(coverage.values()) <= 4


def test_multi_context_samples_cite_connected_chunks(built):
    tmp, _, records, _ = built
    graph = KnowledgeGraph.load(tmp / "graph.json")
    multi = [r for r in records if r["synthesizer_name"] == "multi_context"]
    assert multi
    for record in multi:
        ids = [f"{ref['doc_id']}@{ref['start']}" for ref in record["reference_context_ids"]]
        assert len(ids) == 2 and graph.connected(ids[0], ids[1])


def test_questions_are_in_the_language_of_their_source(built):
    _, _, records, _ = built
    chinese = [r for r in records if r["reference_context_ids"][0]["path"] == "chang_e.md"]
    assert chinese
    for record in chinese:
        question = record["user_input"]
        text = question if isinstance(question, str) else question[-1]["content"]
        assert sum("\u4e00" <= ch <= "\u9fff" for ch in text) >= 3


def test_conversational_samples_are_turns_and_records_are_valid(built):
    tmp, _, records, _ = built
    conversational = [r for r in records if r["synthesizer_name"] == "conversational"]
    assert conversational and isinstance(conversational[0]["user_input"], list)
    assert run_cli("validate", str(tmp / "eval.jsonl"), "--kind", "rag").returncode == 0


def test_manifest_reports_plan_coverage_and_documents(built):
    tmp, _, _, _ = built
    manifest = json.loads((tmp / "eval.manifest.json").read_text())
    assert sum(manifest["plan"].values()) == 12
    assert manifest["documents"]["loaded"] == 5
    assert manifest["graph"]["nodes"]["chunk"] > 5
    assert manifest["shortfall"] == {}


def test_rerun_pays_nothing_twice(built, monkeypatch):
    tmp, _, records, _ = built
    monkeypatch.setenv("EVOFORGE_CACHE_DIR", str(tmp / "cache"))
    model = ScriptedChatModel(rag_responder)
    summary, again, _ = build(tmp, n=12, model=model, graph=str(tmp / "graph.json"))
    assert model.call_count == 0
    assert again == records


def test_saved_graph_from_other_documents_is_refused(built, tmp_path):
    tmp, _, _, _ = built
    other = tmp_path / "docs"
    other.mkdir()
    (other / "a.txt").write_text("A different corpus about glaciers and how they move slowly.")
    with pytest.raises(Exception, match="other documents"):
        rag(
            [other],
            tmp_path / "o.jsonl",
            rag=RagOptions(n=1, graph=str(tmp / "graph.json"), **SMALL),
            options=EngineOptions(quiet=True),
            model=ScriptedChatModel(rag_responder),
        )


def test_failed_samples_are_replaced_to_keep_exactly_n(tmp_path):
    calls = Counter()

    def flaky(messages, n):
        system = prompt_parts(messages)[0]
        no = {"verdict": "no", "reason": "needs outside knowledge"}
        if "strict reviewer" in system:  # the answerable judge rejects every third sample
            calls["judge"] += 1
            if calls["judge"] % 3 == 0:
                return json.dumps(no)
        if "several criteria" in system:  # the same, judged with the others (issue 19)
            calls["judge"] += 1
            if calls["judge"] % 3 == 0:
                judged = json.loads(rag_responder(messages, n))
                return json.dumps({**judged, "answerable": "no", "answerable_reason": no["reason"]})
        return rag_responder(messages, n)

    summary, records, _ = build(tmp_path, n=8, model=ScriptedChatModel(flaky), critics=True)
    assert len(records) == 8
    assert summary.extra["passes"] >= 2
    assert "unanswerable" in summary.rejected_by_reason


def test_a_small_corpus_gives_what_it_can_and_says_why(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "one.txt").write_text(
        "Glaciers move slowly downhill under their own weight. They carve valleys over "
        "thousands of years and leave moraines behind when they retreat."
    )
    (docs / "empty.txt").write_text("")
    (docs / "blob.bin.txt").write_bytes(b"\x00\x01\x02binary")
    summary = rag(
        [docs],
        tmp_path / "o.jsonl",
        rag=RagOptions(n=10, mix="simple=1", **SMALL),
        options=EngineOptions(quiet=True),
        model=ScriptedChatModel(rag_responder),
    )
    assert summary.accepted < 10
    assert (
        summary.extra["shortfall"]["simple"]["why"] == "the corpus has no unused chunks left for it"
    )
    skipped = {s["reason"] for s in summary.extra["documents"]["skipped"]}
    assert skipped == {"empty", "binary"}


def test_no_usable_documents_is_a_clear_error(tmp_path):
    (tmp_path / "empty.md").write_text("   ")
    with pytest.raises(InputError, match="no usable documents.*empty"):
        rag(
            [tmp_path],
            tmp_path / "o.jsonl",
            rag=RagOptions(n=1, **SMALL),
            options=EngineOptions(quiet=True),
            model=ScriptedChatModel(rag_responder),
        )


def test_personas_and_styles_are_recorded(tmp_path):
    _, records, model = build(tmp_path, n=4, personas=2, styles="web_search,formal", mix="simple=1")
    assert {r["persona"] for r in records} <= {
        "a curious high-school student meeting the topic for the first time",
        "a domain expert checking a precise detail",
    }
    assert {r["style"] for r in records} == {"web_search", "formal"}
    assert any("terse like a web-search query" in c["messages"][-1]["content"] for c in model.calls)


def test_cli_rag_with_ragas_format(fake_openai, tmp_path):
    fake_openai.responder = lambda request: rag_responder(request.messages, request.n)
    out = tmp_path / "eval.jsonl"
    result = run_cli(
        "rag", "--docs", str(DOCS), "--n", "6", "--out", str(out), "--format", "ragas",
        "--embedder", "hashing", "--chunk-size", "400", "--quiet",
        "--llm", f"openai:fake-model@{fake_openai.base_url}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    single = read_jsonl(out)
    multi = (
        read_jsonl(tmp_path / "eval.multi_turn.jsonl")
        if (tmp_path / "eval.multi_turn.jsonl").exists()
        else []
    )
    assert len(single) + len(multi) == 6
    assert set(single[0]) >= {"user_input", "reference", "reference_contexts", "synthesizer_name"}
    assert "samples per document" in result.stdout
