"""Output formats: each writes atomically, and the evaluation tools load theirs as is."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from evoforge import ConfigError
from evoforge.io.writers import format_for, open_writer, to_deepeval, to_ragas

SINGLE = {
    "id": "simple-p1-00000",
    "kind": "rag",
    "user_input": "When did the printing press reach Venice?",
    "reference": "By 1469.",
    "reference_contexts": ["Printing reached Venice by 1469."],
    "reference_context_ids": [{"doc_id": "p.txt#ab", "path": "p.txt", "start": 10, "end": 42}],
    "synthesizer_name": "simple",
    "persona": "a journalist",
    "style": "web_search",
    "parent_id": None,
    "lineage": [{"op": "rag_seed"}],
    "meta": {"seed_question": "x"},
}
TURNS = [
    {"role": "user", "content": "Which city adopted printing early?"},
    {"role": "assistant", "content": "Venice."},
    {"role": "user", "content": "By which year?"},
]
MULTI = {**SINGLE, "id": "conv-1", "user_input": TURNS, "synthesizer_name": "conversational"}


def write_all(path, fmt, records):
    writer = open_writer(path, fmt)
    for record in records:
        writer.write(record)
    writer.close()
    return writer


def test_format_from_suffix_or_flag(tmp_path):
    assert format_for(tmp_path / "a.jsonl", None) == "jsonl"
    assert format_for(tmp_path / "a.parquet", None) == "parquet"
    assert format_for(tmp_path / "a.jsonl", "ragas") == "ragas"
    with pytest.raises(ConfigError, match="--format"):
        format_for(tmp_path / "a.txt", None)
    with pytest.raises(ConfigError, match="ragas"):
        format_for(tmp_path / "a.jsonl", "xlsx")


def test_csv_and_parquet_flatten_nested_fields(tmp_path):
    write_all(tmp_path / "a.csv", "csv", [SINGLE, SINGLE])
    frame = pd.read_csv(tmp_path / "a.csv")
    assert list(frame["user_input"]) == [SINGLE["user_input"]] * 2
    assert json.loads(frame["reference_context_ids"][0])[0]["start"] == 10
    write_all(tmp_path / "a.parquet", "parquet", [SINGLE, {**SINGLE, "meta": {"other": [1, 2]}}])
    table = pd.read_parquet(tmp_path / "a.parquet")
    assert list(table["reference_contexts"][0]) == SINGLE["reference_contexts"]
    assert json.loads(table["meta"][1]) == {"other": [1, 2]}


def test_abort_leaves_no_file_and_close_replaces_atomically(tmp_path):
    target = tmp_path / "a.jsonl"
    target.write_text("old\n")
    writer = open_writer(target, "jsonl")
    writer.write(SINGLE)
    assert target.read_text() == "old\n"  # nothing visible before close
    writer.abort()
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]
    write_all(target, "jsonl", [SINGLE])
    assert json.loads(target.read_text())["id"] == SINGLE["id"]


def test_ragas_mapping_and_multi_turn_sibling(tmp_path):
    mapped = to_ragas(SINGLE)
    assert mapped["user_input"] == SINGLE["user_input"]
    assert mapped["reference_context_ids"] == ["p.txt#ab:10-42"]
    assert mapped["persona_name"] == "a journalist" and mapped["query_style"] == "web_search"
    writer = write_all(tmp_path / "eval.jsonl", "ragas", [SINGLE, MULTI])
    assert [p.name for p in writer.files] == ["eval.jsonl", "eval.multi_turn.jsonl"]
    turns = json.loads((tmp_path / "eval.multi_turn.jsonl").read_text())["user_input"]
    assert [t["type"] for t in turns] == ["human", "ai", "human"]


def test_deepeval_mapping(tmp_path):
    golden = to_deepeval(MULTI)
    assert golden["input"] == "By which year?"
    assert golden["expected_output"] == "By 1469."
    assert golden["context"] == SINGLE["reference_contexts"]
    assert golden["source_file"] == "p.txt"
    assert golden["additional_metadata"]["turns"] == TURNS[:2]
    write_all(tmp_path / "g.json", "deepeval", [SINGLE, MULTI])
    assert len(json.loads((tmp_path / "g.json").read_text())) == 2


# The real tools pin older openai / langchain releases than evoforge runs on, so
# `make test` runs these two in a venv of their own (.venv-evaltools).
def test_ragas_loads_the_export(tmp_path):
    ragas = pytest.importorskip(
        "ragas", reason="ragas is not installed here; `make test` checks it in .venv-evaltools"
    )
    writer = write_all(tmp_path / "eval.jsonl", "ragas", [SINGLE, {**SINGLE, "id": "2"}, MULTI])
    single = ragas.EvaluationDataset.from_jsonl(str(writer.files[0]))
    assert len(single) == 2 and single[0].user_input == SINGLE["user_input"]
    assert single[0].reference_contexts == SINGLE["reference_contexts"]
    multi = ragas.EvaluationDataset.from_jsonl(str(writer.files[1]))
    assert type(multi[0]).__name__ == "MultiTurnSample"


def test_deepeval_loads_the_export(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
    os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
    dataset_module = pytest.importorskip(
        "deepeval.dataset",
        reason="deepeval is not installed here; `make test` checks it in .venv-evaltools",
    )
    write_all(tmp_path / "g.json", "deepeval", [SINGLE, MULTI])
    dataset = dataset_module.EvaluationDataset()
    dataset.add_goldens_from_json_file(str(tmp_path / "g.json"))
    assert [g.input for g in dataset.goldens] == [SINGLE["user_input"], "By which year?"]
    assert dataset.goldens[0].context == SINGLE["reference_contexts"]
    assert dataset.goldens[0].source_file == "p.txt"


def test_the_output_writer_writes_kept_rejects_and_manifest_or_nothing(tmp_path):
    from evoforge.io.outputs import OutputWriter, write_outputs
    from evoforge.steps import Rejection

    out = tmp_path / "kept.jsonl"
    kept = [{"id": "a", "kind": "qa"}, {"id": "b", "kind": "qa"}]
    rejected = [
        Rejection("c", "duplicate", "same text as a", {"id": "c"}, lost_to="a"),
        {"id": "d", "reason": "too_short", "detail": "2 words", "record": None},
        Rejection("e", "duplicate", "same text as b", None),
    ]
    output = write_outputs(out, kept, rejected)
    assert [json.loads(line) for line in out.read_text().splitlines()] == kept
    rows = [json.loads(line) for line in (tmp_path / "kept.rejects.jsonl").read_text().splitlines()]
    assert rows[0] == {"id": "c", "reason": "duplicate", "detail": "same text as a",
                       "record": {"id": "c"}, "lost_to": "a"}  # fmt: skip
    assert [r["id"] for r in rows] == ["c", "d", "e"]
    assert output.counts() == {"kept": 2, "rejected": 3,
                               "rejected_by_reason": {"duplicate": 2, "too_short": 1}}  # fmt: skip
    assert output.step_counts("dedup") == {
        "dedup": {"in": 5, "kept": 2, "rejected": 3,
                  "rejected_by_reason": {"duplicate": 2, "too_short": 1}}
    }  # fmt: skip
    path = output.write_manifest(
        {"command": "dedup", "note": "café", "key": "sk-abcdefghijklmnopqrstu"}
    )
    assert path == tmp_path / "kept.manifest.json"
    text = path.read_text("utf-8")
    assert "café" in text and "sk-abcdefghijklmnopqrstu" not in text and text.endswith("}\n")
    output.write_manifest({"note": "café"}, mask=False, ascii_only=True)
    assert "caf\\u00e9" in path.read_text("utf-8")

    before = [p.read_bytes() for p in (out, tmp_path / "kept.rejects.jsonl")]
    with pytest.raises(RuntimeError), OutputWriter(out) as writer:
        writer.keep({"id": "z", "kind": "qa"})
        writer.reject(rejected[1])
        raise RuntimeError("a step failed half way")
    assert [p.read_bytes() for p in (out, tmp_path / "kept.rejects.jsonl")] == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "kept.jsonl",
        "kept.manifest.json",
        "kept.rejects.jsonl",
    ]


def test_step_counts_add_up_and_old_journal_rows_are_counted_the_same():
    from evoforge.engine.final_write import derivable, seed_counts, tally_row
    from evoforge.io.outputs import StepCounts

    counts = StepCounts(["input"])
    counts.count("judge", seen=2, kept=1, rejected=["low_score"])
    counts.add({"judge": {"in": 1, "kept": 0, "rejected": 1,
                          "rejected_by_reason": {"refusal": 1}}})  # fmt: skip
    assert counts.to_json() == {
        "input": {"in": 0, "kept": 0, "rejected": 0, "rejected_by_reason": {}},
        "judge": {"in": 3, "kept": 1, "rejected": 2,
                  "rejected_by_reason": {"low_score": 1, "refusal": 1}},
    }  # fmt: skip
    live = seed_counts("evolve", made=3, task_reasons=["refusal"],
                       schema_reasons=["schema_invalid"])  # fmt: skip
    row = {  # a row without counts: the runner's usual one, or an older evoforge's
        "records": [{"id": "a/1"}, {"id": "a/2"}],
        "rejections": [{"reason": "refusal"}, {"reason": "schema_invalid"}],
    }
    tallied = StepCounts()
    tally_row(tallied, row, "evolve")
    assert tallied.to_json() == live.to_json()
    tallied = StepCounts()
    tally_row(tallied, {"records": [], "rejections": [{"reason": "bad_seed"}]}, "evolve")
    assert tallied.to_json() == {
        "input": {"in": 1, "kept": 0, "rejected": 1, "rejected_by_reason": {"bad_seed": 1}}
    }
    tallied = StepCounts()
    tally_row(tallied, {**row, "steps": live.to_json()}, "evolve")  # kept counts win
    assert tallied.to_json() == live.to_json()
    # The runner journals counts only where the row cannot tell them.
    assert derivable(["refusal"]) and not derivable(["bad_seed"])
    assert not derivable(["schema_invalid"])
