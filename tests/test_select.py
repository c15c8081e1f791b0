"""Data selection: DEITA and AlpaGasus scoring, and the DEITA, AlpaGasus, k-center and
random selectors: each reason code, the tau and budget promises, determinism."""

from __future__ import annotations

import asyncio
import itertools
import re

import numpy as np
import pytest

from evoforge.embeddings import HashingEmbedder
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext, Run
from evoforge.errors import ConfigError
from evoforge.records import Record
from evoforge.testing.scripted import ScriptedChatModel
from evoforge.validators.select import (
    ALPAGASUS_SCHEMA,
    DEITA_SCHEMA,
    AlpagasusRater,
    DeitaScorer,
    greedy_kcenter,
    kmeans,
    parse_alpagasus_score,
    parse_deita_score,
    select,
    select_alpagasus,
    select_deita,
    select_kcenter,
    select_random,
    text_of,
    turn_pairs,
)
from helpers import read_jsonl

EMBEDDER = HashingEmbedder()

TOPICS = [
    "photosynthesis chlorophyll leaves sunlight glucose plants",
    "volcano magma eruption lava crater tectonic",
    "python function recursion stack interpreter bytecode",
    "violin orchestra symphony concerto melody composer",
    "bitcoin blockchain ledger mining consensus wallet",
]


def instr(rid: str, instruction: str, output: str = "An answer.", **meta) -> Record:
    return Record(
        "instruction", {"instruction": instruction, "output": output}, id=rid, meta=dict(meta)
    )


def clustered_pool(per_topic: int = 6) -> list[Record]:
    """Planted clusters: records on one topic share most of their words."""
    records = []
    for t, topic in enumerate(TOPICS):
        words = topic.split()
        for j in range(per_topic):
            text = f"Explain {' '.join(words)} variant{j} detail{j}"
            records.append(instr(f"t{t}-{j}", text, f"About {words[0]} and {words[j % 6]}."))
    return records


def scored(records: list[Record], scores: list[float]) -> list[Record]:
    return [
        Record(r.kind, r.fields, r.id, meta={"deita": {"score": s}})
        for r, s in zip(records, scores, strict=True)
    ]


class FixedEmbedder:
    """Hand-made vectors keyed by the record text, for exact geometry."""

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    identity = {"backend": "fixed"}
    dim = 2

    def embed(self, texts):
        rows = np.array([self.table[t] for t in texts], dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def cos(a: Record, b: Record) -> float:
    va, vb = EMBEDDER.embed([text_of(a), text_of(b)])
    return float(va @ vb)


# --- text -------------------------------------------------------------------------------


def test_text_of_by_kind_and_fields_override():
    rec = Record("instruction", {"instruction": "Sum", "input": "1, 2", "output": "3"}, id="a")
    assert text_of(rec) == "Sum\n1, 2\n3"
    qa = Record("qa", {"question": "Q?", "answer": "A.", "contexts": ["c"]}, id="q")
    assert text_of(qa) == "Q?\nA."
    rag = Record("rag", {"user_input": "U?", "reference": "R.", "reference_contexts": []}, id="r")
    assert text_of(rag) == "U?\nR."
    assert text_of(qa, fields=["answer"]) == "A."


def test_turn_pairs_of_a_conversation():
    turns = [
        {"role": "user", "content": "Hi, what is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And times 3?"},
    ]
    qa = Record("qa", {"question": turns, "answer": "12.", "contexts": []}, id="q")
    assert turn_pairs(qa) == [("Hi, what is 2+2?", "4."), ("And times 3?", "12.")]


# --- DEITA selection --------------------------------------------------------------------


def test_deita_no_two_selected_above_tau_and_reasons():
    pool = clustered_pool()
    records = scored(pool, [float(i % 7) for i in range(len(pool))])
    tau = 0.5
    selected, dropped = select_deita(records, budget=8, tau=tau, embedder=EMBEDDER)
    assert 0 < len(selected) <= 8
    for a, b in itertools.combinations(selected, 2):
        assert cos(a, b) <= tau + 1e-6
    assert len(selected) + len(dropped) == len(records)
    reasons = {d.reason for d in dropped}
    assert "too_similar" in reasons
    ids = {r.id for r in selected}
    for d in dropped:
        if d.reason == "too_similar":
            closest = re.search(r"too similar to (\S+) \(cosine ([0-9.]+) > tau", d.detail)
            assert closest and closest.group(1) in ids and float(closest.group(2)) > tau
            assert d.record["id"] == d.id


def test_deita_walks_by_score_and_compares_with_selected_only():
    # a and b are near-duplicates; c is far from both. b is compared with the selected
    # a (too similar) -- not with the pool, where c's presence would change nothing.
    emb = FixedEmbedder({"a\nx": [1, 0], "b\nx": [0.99, 0.14], "c\nx": [0, 1]})
    records = [
        instr("a", "a", "x", deita={"score": 9}),
        instr("b", "b", "x", deita={"score": 8}),
        instr("c", "c", "x", deita={"score": 1}),
    ]
    selected, dropped = select_deita(records, budget=5, tau=0.9, embedder=emb)
    assert [r.id for r in selected] == ["a", "c"]
    assert [(d.id, d.reason) for d in dropped] == [("b", "too_similar")]
    assert "too similar to a" in dropped[0].detail


def test_deita_tau_one_is_exactly_the_top_m_by_score():
    pool = clustered_pool()
    scores = [float((i * 7) % 11) for i in range(len(pool))]
    records = scored(pool, scores)
    selected, dropped = select_deita(records, budget=7, tau=1.0, embedder=EMBEDDER)
    expected = sorted(records, key=lambda r: (-r.meta["deita"]["score"], r.id))[:7]
    assert {r.id for r in selected} == {r.id for r in expected}
    assert {d.reason for d in dropped} == {"over_budget"}
    # Identical texts are not "too similar" at tau = 1.
    twins = scored([instr("x", "same"), instr("y", "same")], [2.0, 1.0])
    assert len(select_deita(twins, budget=2, tau=1.0, embedder=EMBEDDER)[0]) == 2


def test_deita_budget_ties_and_unscored():
    records = scored([instr(f"r{i}", f"topic {i}") for i in range(4)], [1.0, 3.0, 3.0, 2.0])
    records.append(instr("none", "no score"))
    selected, dropped = select_deita(records, budget=2, tau=1.0)
    assert [r.id for r in selected] == ["r1", "r2"]  # input order; r1 beats r3 on score
    assert {d.id: d.reason for d in dropped} == {
        "r0": "over_budget",
        "r3": "over_budget",
        "none": "unscored",
    }
    assert select_deita(records, budget=0, tau=1.0)[0] == []
    with pytest.raises(ConfigError, match="embedder"):
        select_deita(records, budget=2, tau=0.9)
    with pytest.raises(ConfigError, match="budget"):
        select_deita(records, budget=-1, tau=1.0)


# --- AlpaGasus --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ("4.5\n\nThe answer is accurate and complete.", 4.5),
        ("Score: 3", 3.0),
        ("5", 5.0),
        ("4/5\nGood.", 4.0),
        ("The response is fine.\nscore: 2.5", 2.5),
        ("I cannot rate this", None),
        ("7\nway off the scale", None),
        ("", None),
        ('{"score": 4.5, "explanation": "Accurate; score 2 would be unfair."}', 4.5),
        ('{"score": 3, "explanation": ""}', 3.0),
        ('{"score": "5.0", "explanation": "x"}', 5.0),
        ('{"score": 5.5, "explanation": "x"}', None),
    ],
)
def test_alpagasus_parser(reply, score):
    assert parse_alpagasus_score(reply) == score


def ctx_for(model: ScriptedChatModel, record: Record) -> RecordContext:
    return RecordContext(LLMClient(model), 0, record.id)


def test_alpagasus_rater_writes_meta_and_sees_the_record():
    model = ScriptedChatModel("4.5\n\nThe answer is accurate.")
    rec = Record(
        "instruction", {"instruction": "Add them", "input": "2 and 3", "output": "5"}, id="a"
    )
    result = asyncio.run(AlpagasusRater()(rec, ctx_for(model, rec)))
    assert result.records[0].meta["alpagasus"] == {"score": 4.5}
    prompt = model.calls[0]["messages"][-1]["content"]
    assert "Add them" in prompt and "2 and 3" in prompt and "5" in prompt
    assert "scale of 0 to 5" in prompt
    assert model.calls[0]["schema"] == ALPAGASUS_SCHEMA


def test_alpagasus_asks_for_json_with_the_score_first_and_reads_it():
    model = ScriptedChatModel('{"score": 5.0, "explanation": "Correct: 2 + 3 is 5."}')
    rec = instr("a", "Add 2 and 3", "5")
    result = asyncio.run(AlpagasusRater()(rec, ctx_for(model, rec)))
    assert result.records[0].meta["alpagasus"] == {"score": 5.0}
    schema = model.calls[0]["schema"]
    assert schema["required"] == ["score", "explanation"]
    assert schema["properties"]["score"]["enum"] == [k / 2 for k in range(11)]
    assert '{"score": <the score>' in model.calls[0]["messages"][-1]["content"]


def test_alpagasus_unparseable_is_a_rejection_with_the_first_line():
    model = ScriptedChatModel("I cannot rate this\nbecause reasons")
    rec = instr("a", "Do it", "Done.")
    result = asyncio.run(AlpagasusRater()(rec, ctx_for(model, rec)))
    assert not result.records
    (rejection,) = result.rejections
    assert rejection.reason == "unparseable_score"
    assert "I cannot rate this" in rejection.detail and "because" not in rejection.detail


def test_select_alpagasus_keeps_at_least_min_score():
    scores = [5.0, 4.5, 4.4, 2.0]
    records = [instr(f"r{i}", "x", alpagasus={"score": s}) for i, s in enumerate(scores)]
    records.append(instr("none", "x"))
    selected, dropped = select_alpagasus(records)
    assert [r.id for r in selected] == ["r0", "r1"]
    reasons = {d.id: (d.reason, d.detail) for d in dropped}
    assert reasons["r2"][0] == "low_score" and "4.4" in reasons["r2"][1]
    assert reasons["r3"][0] == "low_score" and reasons["none"][0] == "unscored"
    assert [r.id for r in select(records, "alpagasus", min_score=4.0)[0]] == ["r0", "r1", "r2"]


# --- DEITA scoring ------------------------------------------------------------------------


def deita_judge(complexity: str = "##Complexity: 4", quality: str = "##Quality: 5"):
    def reply(messages, _n):
        return complexity if "complexity" in messages[0]["content"] else quality

    return ScriptedChatModel(reply)


def test_deita_parser():
    assert parse_deita_score("##Complexity: 4", "complexity") == 4.0
    assert parse_deita_score("Reasoning...\n## Quality: 3", "quality") == 3.0
    assert parse_deita_score('{"complexity": 2}', "complexity") == 2.0
    assert parse_deita_score('{"score": 6}', "quality") == 6.0
    assert parse_deita_score('{"score": "3"}', "complexity") == 3.0
    assert parse_deita_score('{"score": 0}', "complexity") is None
    assert parse_deita_score("5", "quality") == 5.0
    assert parse_deita_score("##Quality: 9", "quality") is None
    assert parse_deita_score("very complex", "complexity") is None


def test_deita_scorer_writes_complexity_times_quality():
    model = deita_judge()
    rec = instr("a", "Write a haiku about rain.", "Rain on the roof...")
    result = asyncio.run(DeitaScorer()(rec, ctx_for(model, rec)))
    assert result.records[0].meta["deita"] == {"complexity": 4.0, "quality": 5.0, "score": 20.0}
    ops = [call["messages"][-1]["content"] for call in model.calls]
    assert "##Query: Write a haiku about rain." in ops[0]
    assert "#Response#:\nRain on the roof..." in ops[1]
    assert [call["schema"] for call in model.calls] == [DEITA_SCHEMA, DEITA_SCHEMA]
    assert all('{"score": N}' in call["messages"][0]["content"] for call in model.calls)


def test_deita_json_replies_are_read_and_never_reasked():
    model = deita_judge(complexity='{"score": 3}', quality='{"score": 9}')
    rec = instr("a", "Q", "A")
    result = asyncio.run(DeitaScorer()(rec, ctx_for(model, rec)))
    (rejection,) = result.rejections
    # A reply outside the schema is the scorer's to judge: no re-ask, no invalid_json.
    assert rejection.reason == "unparseable_score" and '{"score": 9}' in rejection.detail
    assert len(model.calls) == 2
    model = deita_judge(complexity='{"score": 3}', quality='{"score": 5}')
    deita = asyncio.run(DeitaScorer()(rec, ctx_for(model, rec))).records[0].meta["deita"]
    assert deita == {"complexity": 3.0, "quality": 5.0, "score": 15.0}


def test_deita_scorer_sums_over_turns():
    turns = [
        {"role": "user", "content": "First?"},
        {"role": "assistant", "content": "One."},
        {"role": "user", "content": "Second?"},
    ]
    rec = Record("qa", {"question": turns, "answer": "Two.", "contexts": []}, id="q")
    replies = iter(["##Complexity: 2", "##Quality: 3", "##Complexity: 4", "##Quality: 5"])
    model = ScriptedChatModel(lambda _m, _n: next(replies))
    deita = asyncio.run(DeitaScorer()(rec, ctx_for(model, rec))).records[0].meta["deita"]
    assert deita["score"] == 2 * 3 + 4 * 5
    assert [t["score"] for t in deita["turns"]] == [6.0, 20.0]


def test_deita_unparseable_reply_is_a_rejection():
    model = deita_judge(quality="It is pretty good.")
    rec = instr("a", "Q", "A")
    result = asyncio.run(DeitaScorer()(rec, ctx_for(model, rec)))
    (rejection,) = result.rejections
    assert rejection.reason == "unparseable_score" and "It is pretty good." in rejection.detail


def test_deita_scorer_in_a_run_then_selection(tmp_path):
    records = [instr(f"r{i}", f"Question {TOPICS[i]}", f"Answer {i}") for i in range(4)]
    records.append(instr("bad", "Unscorable question", "Answer"))

    def reply(messages, _n):
        user = messages[-1]["content"]
        if "Unscorable" in user:
            return "no idea"
        digit = next(str(i + 1) for i in range(4) if TOPICS[i] in user)
        return f"##Complexity: {digit}" if "##Query" in user else "##Quality: 2"

    run = Run(
        command="deita", task=DeitaScorer(), kind="instruction", config={},
        client=LLMClient(ScriptedChatModel(reply)), out=tmp_path / "out.jsonl",
    )  # fmt: skip
    summary = asyncio.run(run.execute(records))
    assert summary.rejected_by_reason == {"unparseable_score": 1}
    out = read_jsonl(tmp_path / "out.jsonl")
    assert [r["meta"]["deita"]["score"] for r in out] == [2.0, 4.0, 6.0, 8.0]
    selected, _ = select(out, "deita", budget=2, tau=0.9, embedder=EMBEDDER)
    assert [r.id for r in selected] == ["r2", "r3"]


# --- k-center ---------------------------------------------------------------------------


def test_kcenter_budget_determinism_and_cluster_coverage():
    pool = clustered_pool()
    selected, dropped = select_kcenter(pool, budget=10, embedder=EMBEDDER, k=5, seed=3)
    assert len(selected) == 10 and len(dropped) == len(pool) - 10
    assert {d.reason for d in dropped} == {"not_selected"}
    again, _ = select_kcenter(pool, budget=10, embedder=EMBEDDER, k=5, seed=3)
    assert [r.id for r in again] == [r.id for r in selected]
    covered = {r.id.split("-")[0] for r in selected}
    assert covered == {f"t{t}" for t in range(len(TOPICS))}
    # the default k = budget // 10 still respects the budget
    assert len(select_kcenter(pool, budget=7, embedder=EMBEDDER)[0]) == 7
    assert len(select_kcenter(pool, budget=100, embedder=EMBEDDER, k=3)[0]) == len(pool)


def test_kmeans_finds_planted_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[10, 0], [0, 10], [-10, -10]], dtype=float)
    points = np.concatenate([c + rng.normal(size=(20, 2)) for c in centres])
    labels, _ = kmeans(points, 3, np.random.default_rng(1))
    assert all(len(set(labels[i * 20 : (i + 1) * 20])) == 1 for i in range(3))
    assert len(set(labels)) == 3


def test_greedy_kcenter_takes_the_farthest_point_each_time():
    points = np.array([[0, 0], [1, 0], [10, 0], [5, 0], [0, 3]], dtype=float)
    # from 0: farthest is 2 (10); then distances to {0,2}: 1->1, 3->5, 4->3 => 3;
    # then to {0,2,3}: 1->1, 4->3 => 4.
    assert greedy_kcenter(points, 4, first=0) == [0, 2, 3, 4]
    assert greedy_kcenter(points, 99, first=1)[:2] == [1, 2]
    assert len(greedy_kcenter(points, 99)) == 5


# --- random and the dispatcher ---------------------------------------------------------


def test_random_baseline_is_deterministic_and_respects_budget():
    pool = clustered_pool()
    first, dropped = select_random(pool, budget=5, seed=11)
    second, _ = select_random(pool, budget=5, seed=11)
    assert [r.id for r in first] == [r.id for r in second] and len(first) == 5
    assert {d.reason for d in dropped} == {"not_selected"}
    assert [r.id for r in select_random(pool, 5, seed=12)[0]] != [r.id for r in first]


def test_dispatcher_names_the_methods():
    pool = clustered_pool()
    assert len(select(pool, "random", 3, seed=1)[0]) == 3
    with pytest.raises(ConfigError, match="Did you mean 'kcenter'"):
        select(pool, "kcentre", 3)
    with pytest.raises(ConfigError, match="needs a budget"):
        select(pool, "random")
    with pytest.raises(ConfigError, match="unknown option"):
        select(pool, "random", 3, tau=0.5)
