"""Issue 14, items 1 and 2: Ragas v0.1's evolutions in ``rag`` (compress_question, the
evolution filter on the seed versus the compressed question, the node filter, LLM
keyphrases), and output schemas that fix a reply's shape (no role check after the call).

Each test fails on the code before issue 14: ``rag`` never compressed, had no node filter
and no ``--keyphrases`` option, and the conversational schema was a list of role-tagged
turns that a schema-following model could fill as ``assistant, user, user``.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
import yaml

from evoforge import EngineOptions
from evoforge.api import RagOptions, rag
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext
from evoforge.io.documents import Chunk
from evoforge.prompting import builtin_template
from evoforge.recipe.loader import load_recipe
from evoforge.testing.scripted import ScriptedChatModel
from helpers import prompt_parts, rag_responder, read_jsonl, run_cli

DOCS = Path(__file__).resolve().parent.parent / "examples" / "docs"
SMALL = {"embedder": "hashing", "chunk_size": 400, "chunk_overlap": 40}


def run_rag(tmp_path, reply=rag_responder, n=4, **settings):
    model = ScriptedChatModel(reply)
    summary = rag(
        [DOCS], tmp_path / "eval.jsonl", rag=RagOptions(n=n, **{**SMALL, **settings}),
        options=EngineOptions(quiet=True, cache=False), model=model,
    )  # fmt: skip
    rejects_path = tmp_path / "eval.rejects.jsonl"
    rejects = read_jsonl(rejects_path) if rejects_path.exists() else []
    return summary, read_jsonl(tmp_path / "eval.jsonl"), rejects, model


def system_of(call) -> str:
    return prompt_parts(call["messages"])[0]  # a RAG template's task (issue 19)


def calls_to(model, marker: str) -> list[dict]:
    return [call for call in model.calls if marker in system_of(call)]


# --- item 1: compress_question and the evolution filter ---------------------------------


def test_complex_questions_are_compressed_and_judged_against_their_seed(tmp_path):
    mix = "reasoning=1,multi_context=1,conditional=1"
    _, records, _, model = run_rag(tmp_path, n=3, mix=mix)
    assert len(records) == 3
    judged = [call["messages"][-1]["content"] for call in calls_to(model, "compare two prompts")]
    merged = [call["messages"][-1]["content"] for call in calls_to(model, "several criteria")]
    for record in records:
        ops = [step["op"] for step in record["lineage"]]
        assert (
            ops.index("rewrite_compress") == ops.index(f"rewrite_{record['synthesizer_name']}") + 1
        )
        assert record["meta"]["rewrite"]["compressed"] is True
        assert record["id"].endswith(f"/{record['synthesizer_name']}/compress")
        # The evolution filter compares the seed with the compressed (final) question.
        seed, final = record["meta"]["seed_question"], record["user_input"]
        pair = rf"#First Prompt#:\s*{re.escape(seed)}\s*#Second Prompt#:\s*{re.escape(final)}"
        # ... in its own call, or as one criterion of the merged judge (issue 19, the default)
        together = rf"Question:\s*{re.escape(final)}\s.*Seed question:\s*{re.escape(seed)}\s"
        assert any(re.search(pair, text) for text in judged) or any(
            re.search(together, text + "\n", re.S) for text in merged
        ), (seed, final)


def test_simple_and_conversational_questions_are_not_compressed(tmp_path):
    _, records, _, model = run_rag(tmp_path, n=2, mix="simple=1,conversational=1")
    assert len(records) == 2
    assert not calls_to(model, "shorter and more indirect")
    assert all("rewrite_compress" not in str(r["lineage"]) for r in records)


def test_no_compress_turns_the_step_off(tmp_path):
    _, records, _, model = run_rag(tmp_path, n=2, mix="reasoning=1", compress=False)
    assert len(records) == 2 and not calls_to(model, "shorter and more indirect")
    assert all(r["id"].endswith("/reasoning") for r in records)


QA_SEEDS = [
    {"question": f"What is known about the river number {i} in the north?",
     "answer": "It flows north.", "contexts": ["The river flows north for 6,650 km.",
                                               "It floods every summer."]}
    for i in range(6)
]  # fmt: skip


def run_evolve_qa(tmp_path, mix, **settings):
    from evoforge.api import EvolveOptions, evolve

    seeds = tmp_path / "qa.jsonl"
    seeds.write_text("".join(json.dumps(row) + "\n" for row in QA_SEEDS))
    model = ScriptedChatModel(rag_responder)
    evolve(
        seeds, tmp_path / "out.jsonl", evolution=EvolveOptions(kind="qa", mix=mix, **settings),
        options=EngineOptions(quiet=True, cache=False), model=model,
    )  # fmt: skip
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    return read_jsonl(tmp_path / "out.jsonl"), model, manifest


def test_evolve_compresses_complex_rewrites_against_the_seed(tmp_path):
    mix = "reasoning=2,multi_context=1,conditional=1,conversational=2"
    records, model, manifest = run_evolve_qa(tmp_path, mix)
    assert len(records) == 6 and manifest["config"]["evolve"]["compress"] is True
    compressed = [r for r in records if r["meta"]["rewrite"]["op"] != "conversational"]
    assert len(compressed) == 4 and len(calls_to(model, "shorter and more indirect")) == 4
    seeds = {row["question"] for row in QA_SEEDS}
    for record in compressed:
        op = record["meta"]["rewrite"]["op"]
        assert [s["op"] for s in record["lineage"]] == [f"rewrite_{op}", "rewrite_compress"]
        assert record["meta"]["rewrite"]["compressed"] is True
        assert record["id"].endswith(f"/{op}/compress") and record["question"].endswith("briefly?")
    for call in calls_to(model, "shorter and more indirect"):  # the evolved question goes in
        assert not any(seed in call["messages"][-1]["content"] for seed in seeds)

    # The step's rules compare with the seed: a compression that gives it back is rejected.
    def seed_back(messages, n):
        if "shorter and more indirect" in prompt_parts(messages)[0]:
            number = re.search(r"river number (\d+)", messages[-1]["content"]).group(1)
            seed = QA_SEEDS[int(number)]["question"]
            return json.dumps({"question": seed, "answer": "It flows north."})
        return rag_responder(messages, n)

    from evoforge.api import EvolveOptions, evolve

    summary = evolve(
        tmp_path / "qa.jsonl", tmp_path / "back.jsonl",
        evolution=EvolveOptions(kind="qa", mix="reasoning=1"),
        options=EngineOptions(quiet=True, cache=False), model=ScriptedChatModel(seed_back),
    )  # fmt: skip
    assert summary.rejected_by_reason == {"no_information_gain": 6}


def test_evolve_no_compress_keeps_the_rewrite(tmp_path):
    records, model, manifest = run_evolve_qa(tmp_path, "reasoning=1", compress=False)
    assert len(records) == 6 and not calls_to(model, "shorter and more indirect")
    assert all(r["id"].endswith("/reasoning") for r in records)
    assert all("compressed" not in r["meta"]["rewrite"] for r in records)
    assert manifest["config"]["evolve"]["compress"] is False
    assert "--no-compress" in run_cli("evolve", "--help").stdout
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "source: {seeds: qa.jsonl}\nevolvers: {kind: qa, mix: {reasoning: 1}, compress: false}\n"
    )
    assert load_recipe(recipe).evolvers.compress is False


# --- item 1: the node filter -----------------------------------------------------------


def low_for(word: str):
    """The scripted model, but every passage that holds ``word`` scores low."""

    def reply(messages, n):
        system = prompt_parts(messages)[0]
        if "You assess passages" in system and word in messages[-1]["content"]:
            return '{"clarity": 1, "depth": 1, "structure": 2, "relevance": 1}'
        return rag_responder(messages, n)

    return reply


def test_low_quality_contexts_are_rejected_before_seeding_and_not_planned_again(tmp_path):
    summary, records, rejects, model = run_rag(tmp_path, reply=low_for("bee"), n=10)
    low = [r for r in rejects if r["reason"] == "low_quality_context"]
    assert low, "a context about bees scores 1.25 and is rejected"
    assert "mean 1.25 < 1.5" in low[0]["detail"] and "clarity 1" in low[0]["detail"]
    assert all("bee" not in " ".join(r["reference_contexts"]) for r in records)
    # No seed question is ever asked from a rejected context ...
    seeded = [c["messages"][-1]["content"] for c in calls_to(model, "You write questions")]
    assert all("bee" not in text.split("Build the question around")[0] for text in seeded)
    # ... and each context is scored once, whatever scenarios use it.
    scored = [c["messages"][-1]["content"] for c in calls_to(model, "You assess passages")]
    assert len(scored) == len(set(scored))
    manifest = json.loads(summary.manifest.read_text())
    assert manifest["config"]["prompts"]["rag_context_score"]


def test_a_mean_of_exactly_one_and_a_half_is_kept():
    from evoforge.generators.rag_nodes import NodeFilter

    def score(text):
        model = ScriptedChatModel(text)
        chunk = Chunk("c1", "d", "d.txt", 0, 0, 5, "Some passage.")
        ctx = RecordContext(LLMClient(model), 0, "s1")
        return asyncio.run(NodeFilter().review([chunk], ctx)), model

    kept, model = score('{"clarity": 1, "depth": 2, "structure": 1, "relevance": 2}')
    assert kept.ok
    assert model.calls[0]["schema"] == builtin_template("rag_context_score").output_schema
    dropped, _ = score('{"clarity": 1, "depth": 2, "structure": 1, "relevance": 1}')
    assert not dropped.ok and dropped.reason == "low_quality_context"


def test_no_node_filter_turns_the_step_off(tmp_path):
    _, records, rejects, model = run_rag(tmp_path, reply=low_for("bee"), n=4, node_filter=False)
    assert len(records) == 4 and not calls_to(model, "You assess passages")
    assert not [r for r in rejects if r["reason"] == "low_quality_context"]


# --- item 1: keyphrases by the model ----------------------------------------------------


def test_llm_keyphrases_seed_the_question_and_are_asked_once_per_chunk(tmp_path):
    _, records, _, model = run_rag(tmp_path, n=4, mix="simple=1", keyphrases="llm")
    asked = [c["messages"][-1]["content"] for c in calls_to(model, "You extract keyphrases")]
    assert asked and len(asked) == len(set(asked))
    phrases = {"topic", "detail", "fact"}  # the scripted model's filler, after names
    for record in records:
        keyphrase = record["meta"]["keyphrase"]
        assert keyphrase[:1].isupper() or keyphrase in phrases, keyphrase
        assert "keyphrase_fallback" not in record["meta"]


def test_tfidf_keyphrases_stay_the_default_with_no_call(tmp_path):
    assert RagOptions(n=1).keyphrases == "tfidf"
    _, _, _, model = run_rag(tmp_path, n=2, mix="simple=1")
    assert not calls_to(model, "You extract keyphrases")


def test_the_flags_reach_the_cli_and_recipes(tmp_path):
    help_text = run_cli("rag", "--help").stdout
    for flag in ("--no-compress", "--no-node-filter", "--keyphrases"):
        assert flag in help_text
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"source: {{docs: [{DOCS}]}}\n"
        "generator: {type: rag, n: 2, compress: false, node_filter: false, keyphrases: llm}\n"
    )
    options = load_recipe(recipe).generator
    assert (options.compress, options.node_filter, options.keyphrases) == (False, False, "llm")
    assert (RagOptions(n=1).compress, RagOptions(n=1).node_filter) == (True, True)


# --- item 2: shapes fixed by the schema -------------------------------------------------

# The prompts whose reply shape used to be checked after the call, or is new in issue 14.
SHAPED = ("rewrite_conversational", "rag_context_score", "rag_keyphrases")


@pytest.mark.parametrize("prompt", SHAPED)
def test_shaped_schemas_are_closed_objects_with_every_property_required(prompt):
    schema = builtin_template(prompt).output_schema
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert set(schema["required"]) == set(schema["properties"])


def test_the_conversation_is_named_parts_not_role_tagged_turns():
    schema = builtin_template("rewrite_conversational").output_schema
    assert list(schema["required"]) == ["first_question", "assistant_reply", "follow_up", "answer"]
    assert "turns" not in schema["properties"] and "enum" not in str(schema)
    example = yaml.safe_load(Path(builtin_template("rewrite_conversational").source).read_text())
    assert set(example["examples"][0]["output"]) == set(schema["properties"])


def test_conversational_rag_samples_alternate_roles_by_construction(tmp_path):
    _, records, rejects, _ = run_rag(tmp_path, n=3, mix="conversational=1")
    assert len(records) == 3 and not [r for r in rejects if r["reason"] == "bad_turns"]
    for record in records:
        assert [t["role"] for t in record["user_input"]] == ["user", "assistant", "user"]
