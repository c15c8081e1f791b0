"""IN2 generation end to end with a scripted model and the regex tokenizer."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from evoforge import EngineOptions
from evoforge.api import In2Options, in2
from evoforge.evolvers.base import exact_mix
from evoforge.generators.in2 import PAPER_MIX
from evoforge.testing.scripted import ScriptedChatModel
from helpers import read_jsonl, run_cli, write_jsonl

TOPICS = ["harbour", "glacier", "orchard", "comet", "bridge", "violin", "desert", "forest"]


def make_corpus(folder, n_docs=24, seed=7):
    rng = random.Random(seed)
    folder.mkdir()
    for i in range(n_docs):
        topic = TOPICS[i % len(TOPICS)]
        sentences = [
            f"The {topic} number {i} has feature {j} named {rng.choice(TOPICS)}{rng.randrange(99)}."
            for j in range(40)
        ]
        (folder / f"doc{i:02d}.txt").write_text(" ".join(sentences))
    return folder


def in2_responder(messages, n):
    system, user = messages[0]["content"], messages[-1]["content"]
    if "numbered pieces" in system:
        first = re.search(r"# Piece 1: (.*?)\.", user).group(1)
        second = re.search(r"# Piece 2: (.*?)\.", user).group(1)
        return json.dumps({"question": f"How do {first} and {second} relate?",
                           "answer": f"{first}; and {second}.", "pieces": [1, 2]})  # fmt: skip
    text = user.split("Text:", 1)[1].strip()
    sentence = text.split(".")[0]
    return json.dumps({"question": f"What is said about {sentence}?", "answer": sentence})


SMALL = {"tokenizer": "regex", "min_tokens": 300, "max_tokens": 1200, "segment_tokens": 32}


def build(tmp_path, corpus, n=20, **settings):
    summary = in2(
        [corpus], tmp_path / "in2.jsonl", in2=In2Options(n=n, **{**SMALL, **settings}),
        options=EngineOptions(quiet=True), model=ScriptedChatModel(in2_responder, record=False),
    )  # fmt: skip
    return summary, read_jsonl(tmp_path / "in2.jsonl")


def context_of(record):
    user = record["messages"][0]["content"]
    return user[record["context_start"] : record["context_start"] + record["context_chars"]]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("in2")
    corpus = make_corpus(tmp / "corpus")
    import os

    os.environ["EVOFORGE_CACHE_DIR"] = str(tmp / "cache")
    try:
        summary, records = build(tmp, corpus, n=40)
    finally:
        del os.environ["EVOFORGE_CACHE_DIR"]
    return tmp, corpus, summary, records


def test_exact_mix_without_general_data(built):
    _, _, summary, records = built
    expected = exact_mix(40, {**PAPER_MIX, "general": 0.0}, 0)
    assert Counter(r["sample_type"] for r in records) == Counter(
        {k: v for k, v in expected.items() if v}
    )
    assert summary.accepted == 40


def test_every_needle_is_verbatim_at_its_offsets(built):
    _, _, _, records = built
    for record in records:
        context = context_of(record)
        assert record["needles"]
        for needle in record["needles"]:
            assert context[needle["char_start"] : needle["char_end"]] == needle["text"]


def test_lengths_within_bounds_and_integration_needs_two_pieces_of_one_document(built):
    _, _, _, records = built
    for record in records:
        if record["sample_type"] in ("fine_grained", "integration"):
            assert 250 <= record["context_tokens"] <= 1300
        if record["sample_type"] == "integration":
            assert len(record["needles"]) >= 2
            assert len({n["doc_id"] for n in record["needles"]}) == 1


def test_short_samples_keep_only_their_document(built):
    _, corpus, _, records = built
    short = [r for r in records if r["sample_type"] == "short"]
    assert short
    for record in short:
        doc = record["needles"][0]["doc_id"].split("#")[0]
        assert context_of(record) == (corpus / doc).read_text()


def test_training_prompt_follows_the_paper(built):
    _, _, _, records = built
    user = records[0]["messages"][0]["content"]
    assert user.startswith("Below is a context and an instruction. Based on the information")
    assert "\n\n### Context:\n" in user and "\n\n### Instruction:\n" in user
    assert records[0]["messages"][1]["role"] == "assistant"


def test_validate_and_plain_export(built, tmp_path):
    tmp, corpus, _, records = built
    assert run_cli("validate", str(tmp / "in2.jsonl"), "--kind", "in2").returncode == 0


def test_general_share_and_plain_format(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_docs=12)
    general = write_jsonl(
        tmp_path / "general.jsonl",
        [{"instruction": f"Say hello {i}", "output": f"Hello {i}!"} for i in range(10)],
    )
    summary = in2(
        [corpus], tmp_path / "plain.jsonl",
        in2=In2Options(n=20, general=str(general), format="plain", **SMALL),
        options=EngineOptions(quiet=True), model=ScriptedChatModel(in2_responder),
    )  # fmt: skip
    assert summary.extra["kept"]["general"] == exact_mix(20, PAPER_MIX, 0)["general"]
    plain = read_jsonl(tmp_path / "plain.jsonl")
    assert set(plain[0]) >= {"context", "question", "answer", "needles"}
    for row in plain:
        for needle in row["needles"]:
            assert row["context"][needle["char_start"] : needle["char_end"]] == needle["text"]


def test_decontamination_drops_the_planted_document_only(tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_docs=12)
    planted = (corpus / "doc03.txt").read_text().split()[5:17]
    eval_file = write_jsonl(tmp_path / "eval.jsonl", [{"question": " ".join(planted)}])
    summary = in2(
        [corpus], tmp_path / "o.jsonl",
        in2=In2Options(n=10, decontaminate=str(eval_file), **SMALL),
        options=EngineOptions(quiet=True), model=ScriptedChatModel(in2_responder),
    )  # fmt: skip
    assert summary.extra["decontamination"]["documents_dropped"] == 1
    assert summary.extra["documents"]["used"] == 11
    for record in read_jsonl(tmp_path / "o.jsonl"):
        assert all(not n["doc_id"].startswith("doc03.txt") for n in record["needles"])


def test_cli_in2_against_an_openai_compatible_server(fake_openai, tmp_path):
    corpus = make_corpus(tmp_path / "corpus", n_docs=10)
    fake_openai.responder = lambda request: in2_responder(request.messages, request.n)
    out = tmp_path / "in2.jsonl"
    result = run_cli(
        "in2", "--corpus", str(corpus), "--n", "6", "--out", str(out), "--tokenizer", "regex",
        "--min-tokens", "300", "--max-tokens", "900", "--segment-tokens", "32", "--quiet",
        "--llm", f"openai:fake-model@{fake_openai.base_url}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 6
    assert "decontamination dropped 0" in result.stdout


def test_a_sample_the_filler_pool_cannot_fill_costs_no_model_call(tmp_path):
    """Cheapest first (issue 19): the context is assembled before the QA is asked, so a
    sample whose pool has no other document's fillers is rejected before any call."""
    corpus = make_corpus(tmp_path / "corpus", n_docs=1)  # no other document: no fillers
    summary, records = build(tmp_path, corpus, n=6)
    assert summary.rejected_by_reason.get("no_filler", 0) > 0
    assert records and all(r["sample_type"] == "short" for r in records)
    # one call per short sample (its own document is its context), none for the others
    calls = sum(op["calls"] for op in summary.usage.values())
    other = sum(n for reason, n in summary.rejected_by_reason.items() if reason != "no_filler")
    assert calls == summary.accepted + other
