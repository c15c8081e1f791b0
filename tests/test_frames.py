"""pandas DataFrames in: every command that takes seeds or records takes a frame, and a
frame's rows are the rows of the same JSONL file (ids, cache keys, rejections)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import evoforge
from evoforge.io.frames import frame_rows, is_frame
from helpers import read_jsonl, write_jsonl

DOCS = Path(__file__).resolve().parent.parent / "examples" / "docs"


def _options(server, cache: Path) -> evoforge.EngineOptions:
    return evoforge.EngineOptions(
        llm=f"openai:gpt-4o-mini@{server.url}/v1", cache_dir=str(cache), quiet=True
    )


def _cache_keys(cache: Path) -> set[str]:
    # closing(): a connection's own `with` only commits; Python 3.13 warns (ResourceWarning,
    # an error here) when one is left to the garbage collector unclosed
    with contextlib.closing(sqlite3.connect(cache / "llm-cache.db")) as conn:
        return {key for (key,) in conn.execute("SELECT key FROM responses")}


def _seeds(n: int) -> list[dict]:
    """Seeds with what a frame changes: an optional field on some rows only (NaN in the
    frame), an int column, a list column and no id column (ids from line and content)."""
    rows = []
    for i in range(n):
        row = {"instruction": f"Explain idea number {i} to a child.", "n": i, "tags": ["a", "b"]}
        if i % 3 == 0:
            row["input"] = f"context {i}"
        rows.append(row)
    return rows


def test_a_frame_of_1000_seeds_is_the_jsonl_file(fake_openai, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    seeds = _seeds(1000)
    cache = tmp_path / "cache"
    options = _options(fake_openai, cache)
    from_file = evoforge.answer(
        write_jsonl(tmp_path / "seeds.jsonl", seeds), tmp_path / "a" / "out.jsonl", options=options
    )
    calls, keys = fake_openai.hits, _cache_keys(cache)
    assert from_file.accepted == 1000 and calls == 1000 and len(keys) == 1000

    frame = pd.DataFrame(seeds, index=[f"row-{i}" for i in range(1000)])  # the index is ignored
    assert frame["input"].isna().sum() == 666 and frame["n"].dtype == np.int64
    from_frame = evoforge.answer(frame, tmp_path / "b" / "out.jsonl", options=options)
    assert fake_openai.hits == calls  # zero new calls: every cache key is the same
    assert _cache_keys(cache) == keys
    assert from_frame.usage["answer"]["calls"] == 0
    assert from_frame.usage["answer"]["cache_hits"] == 1000
    kept_file, kept_frame = read_jsonl(from_file.out), read_jsonl(from_frame.out)
    assert [r["id"] for r in kept_frame] == [r["id"] for r in kept_file]
    assert kept_frame == kept_file  # same fields, meta.source (n, tags) as plain values
    assert kept_file[0]["meta"]["source"] == {"n": 0, "tags": ["a", "b"]}


def test_missing_values_numpy_values_and_the_index():
    frame = pd.DataFrame(
        {
            "instruction": ["one", np.nan, "three"],
            "score": [1.5, np.nan, 2.0],
            "count": pd.array([1, None, 3], dtype="Int64"),
            "when": pd.to_datetime(["2024-01-02", None, "2024-03-04"]),
            "vec": [np.array([1, 2]), np.array([0.5, np.nan]), [np.int64(7)]],
            "nested": [{"k": np.float32(0.25)}, {"k": None}, {}],
        },
        index=[10, 20, 30],
    )
    assert is_frame(frame) and not is_frame(frame.to_dict("records"))
    rows = list(frame_rows(frame))
    assert rows[0] == {"instruction": "one", "score": 1.5, "count": 1, "vec": [1, 2],
                       "when": "2024-01-02 00:00:00", "nested": {"k": 0.25}}  # fmt: skip
    assert rows[1] == {"vec": [0.5, None], "nested": {"k": None}}  # NaN, NA, NaT: left out
    assert type(rows[0]["count"]) is int and type(rows[2]["vec"][0]) is int
    json.dumps(rows)  # plain Python throughout
    with pytest.raises(evoforge.InputError, match="more than one column named 'a'"):
        list(frame_rows(pd.DataFrame([[1, 2]], columns=["a", "a"])))


def test_bad_rows_are_rejected_with_their_row_and_columns_map_like_field(tmp_path):
    from evoforge.testing.scripted import ScriptedChatModel

    frame = pd.DataFrame(
        {"prompt": ["Name a colour.", np.nan, "Name a fruit.", 3], "other": [1, 2, 3, 4]}
    )
    summary = evoforge.answer(
        frame, tmp_path / "out.jsonl", field_map={"instruction": "prompt"},
        options=evoforge.EngineOptions(quiet=True), model=ScriptedChatModel("Blue."),
    )  # fmt: skip
    assert summary.accepted == 2 and summary.rejected_by_reason == {"bad_seed": 2}
    rejects = read_jsonl(summary.rejects)
    assert [r["id"] for r in rejects] == ["out.input.jsonl:line-2", "out.input.jsonl:line-4"]
    assert rejects[0]["detail"].endswith('line 2: field "prompt" is missing (expected string)')
    assert rejects[1]["detail"].endswith('line 4: field "prompt" must be a string, got integer')
    # row i of the frame (df.iloc[i]) is line i + 1 of the copy the run read
    lines = read_jsonl(tmp_path / "out.input.jsonl")
    assert lines[1] == {"other": 2} and lines[3] == {"prompt": 3, "other": 4}


def _records(n: int = 6) -> pd.DataFrame:
    rows = [{"id": f"i{i}", "kind": "instruction", "instruction": f"Task number {i}",
             "output": "A fine answer to it.", "parent_id": None, "lineage": [], "meta": {}}
            for i in range(n)]  # fmt: skip
    rows.append({**rows[0], "id": "copy"})  # a duplicate for dedup
    return pd.DataFrame(rows)


def test_validate_dedup_select_export_take_a_frame(tmp_path):
    frame = _records()
    frame.loc[2, "output"] = np.nan  # an instruction without its output
    checked = evoforge.api.validate(frame, tmp_path / "valid.jsonl", checks="schema")
    assert checked.total == 7 and checked.invalid == 0
    unique = evoforge.dedup(frame)
    assert [(r["id"], r["lost_to"]) for r in unique.dropped] in ([("copy", "i0")], [("i0", "copy")])
    picked = evoforge.select(
        frame, tmp_path / "best.jsonl",
        selection=evoforge.SelectOptions(method="random", budget=2),
    )  # fmt: skip
    assert picked["selected"] == 2
    exported = evoforge.export(frame, to="messages", out=tmp_path / "chat.jsonl", card=False)
    assert exported.count == 6 and exported.skipped == {"no_output": 1}  # as from a file
    assert "output" not in read_jsonl(tmp_path / "valid.jsonl")[2]


def test_rag_and_in2_take_documents_as_a_frame(tmp_path):
    from test_in2 import in2_responder

    from evoforge.testing.scripted import ScriptedChatModel
    from helpers import rag_responder

    texts = {p.stem: p.read_text("utf-8") for p in sorted(DOCS.glob("*.md"))}
    docs = pd.DataFrame({"id": list(texts), "text": list(texts.values())})
    built = evoforge.rag(
        docs, tmp_path / "eval.jsonl",
        rag=evoforge.RagOptions(n=2, mix="simple=1", embedder="hashing", chunk_size=400,
                                chunk_overlap=40),
        options=evoforge.EngineOptions(quiet=True), model=ScriptedChatModel(rag_responder),
    )  # fmt: skip
    assert built.accepted == 2
    doc_ids = {c["doc_id"] for r in read_jsonl(built.out) for c in r["reference_context_ids"]}
    assert doc_ids and all(d.startswith("eval.input.jsonl:") for d in doc_ids)  # the rows
    corpus = pd.DataFrame({"text": list(texts.values())})
    made = evoforge.in2(
        corpus, tmp_path / "in2.jsonl",
        in2=evoforge.In2Options(n=2, mix="fine_grained=1", tokenizer="regex", min_tokens=300,
                                max_tokens=1200, segment_tokens=32),
        options=evoforge.EngineOptions(quiet=True), model=ScriptedChatModel(in2_responder),
    )  # fmt: skip
    assert made.accepted == 2 and (tmp_path / "in2.input.jsonl").exists()


def test_import_evoforge_does_not_load_pandas():
    code = "import sys, evoforge; print('pandas' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
