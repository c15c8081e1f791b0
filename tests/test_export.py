"""`evoforge export`: each format loads back in the library that consumes it."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evoforge import ConfigError, InputError
from evoforge.export import EXPORT_FORMATS, export, iter_records, to_dataset
from evoforge.io.writers import to_deepeval, to_ragas
from helpers import read_jsonl, run_cli, write_jsonl

INSTRUCTION = {
    "id": "i1", "kind": "instruction", "instruction": "Summarise the text.",
    "input": "Tokyo is the capital of Japan.", "output": "Tokyo is Japan's capital.",
    "parent_id": None, "lineage": [{"op": "answer", "round": 0, "model": "m",
                                    "prompt_id": "answer@v1", "prompt_hash": "abc"}],
    "meta": {"finish_reason": "stop"},
}  # fmt: skip
RAG = {
    "id": "r1", "kind": "rag", "user_input": "When did printing reach Venice?",
    "reference": "By 1469.", "reference_contexts": ["Printing reached Venice by 1469."],
    "synthesizer_name": "simple", "parent_id": None, "lineage": [{"op": "rag_seed"}], "meta": {},
}  # fmt: skip
TURNS = [
    {"role": "user", "content": "Which city adopted printing early?"},
    {"role": "assistant", "content": "Venice."},
    {"role": "user", "content": "By which year?"},
]
RAG_MULTI = {**RAG, "id": "r2", "user_input": TURNS, "synthesizer_name": "conversational"}
QA = {
    "id": "q1", "kind": "qa", "question": "What is 2+2?", "answer": "4", "contexts": ["2+2=4"],
    "parent_id": None, "lineage": [], "meta": {},
}  # fmt: skip
IN2 = {
    "id": "n1", "kind": "in2", "sample_type": "fine_grained",
    "messages": [{"role": "user", "content": "### Context:\nlong text\n\n### Instruction:\nQ?"},
                 {"role": "assistant", "content": "A."}],
    "context_tokens": 3, "context_start": 12, "context_chars": 9,
    "needles": [{"text": "long text"}], "parent_id": None, "lineage": [],
    "meta": {"question": "Q?"},
}  # fmt: skip
ALL = [INSTRUCTION, RAG, RAG_MULTI, QA, IN2]


@pytest.fixture
def records(tmp_path):
    (tmp_path / "run").mkdir()
    return write_jsonl(tmp_path / "run" / "all.jsonl", ALL)


def chat_tokenizer():
    """A real tokenizer with a chat template, built in memory (no Hub download)."""
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"[UNK]": 0, "<eos>": 1}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="[UNK]")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    return tokenizer


@pytest.mark.requires_local
def test_messages_keeps_every_turn_and_loads_in_datasets_and_trl(records, tmp_path):
    import datasets

    result = export(records, to="messages", out=tmp_path / "exp" / "train.jsonl")
    assert result.count == 5 and result.by_kind == {"instruction": 1, "rag": 2, "qa": 1, "in2": 1}
    rows = {row["id"]: row["messages"] for row in read_jsonl(result.out)}
    assert rows["i1"] == [
        {"role": "user", "content": "Summarise the text.\n\nTokyo is the capital of Japan."},
        {"role": "assistant", "content": "Tokyo is Japan's capital."},
    ]
    assert rows["r2"] == [*TURNS, {"role": "assistant", "content": "By 1469."}]
    assert rows["q1"] == [{"role": "user", "content": "What is 2+2?"},
                          {"role": "assistant", "content": "4"}]  # fmt: skip
    assert rows["n1"] == IN2["messages"]  # context + question as user, answer as assistant

    loaded = datasets.load_dataset(
        "json", data_files=str(result.out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert loaded.num_rows == 5 and loaded[2]["messages"] == rows["r2"]
    trl_data = pytest.importorskip("trl.data_utils")
    tokenizer = chat_tokenizer()
    for example in loaded:
        assert trl_data.is_conversational(example)
        text = trl_data.apply_chat_template(example, tokenizer)["text"]
        assert text.endswith(f"<|assistant|>{example['messages'][-1]['content']}\n")


def test_alpaca_rows_and_history_of_conversations(records, tmp_path):
    import datasets

    result = export(records, to="alpaca", out=tmp_path / "alpaca.jsonl")
    rows = {row["id"]: row for row in read_jsonl(result.out)}
    assert rows["i1"] == {"id": "i1", "instruction": "Summarise the text.",
                          "input": "Tokyo is the capital of Japan.",
                          "output": "Tokyo is Japan's capital."}  # fmt: skip
    assert rows["r2"]["instruction"] == "By which year?" and rows["r2"]["output"] == "By 1469."
    assert rows["r2"]["history"] == [["Which city adopted printing early?", "Venice."]]
    assert rows["r1"]["history"] == [] and rows["n1"]["instruction"].endswith("Q?")
    # the rag/qa/in2 rows share one schema (instruction rows add no columns of their own)
    rag_only = export([RAG, RAG_MULTI, QA, IN2], to="alpaca", out=tmp_path / "r.jsonl")
    loaded = datasets.load_dataset(
        "json", data_files=str(rag_only.out), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert loaded.column_names == ["id", "instruction", "input", "output", "history", "system"]
    assert loaded[1]["history"] == [["Which city adopted printing early?", "Venice."]]


@pytest.mark.requires_local
def test_sharegpt_is_what_trl_reads_from_value(records, tmp_path):
    messages = export(records, to="messages", out=tmp_path / "m.jsonl")
    result = export(records, to="sharegpt", out=tmp_path / "s.jsonl")
    rows = read_jsonl(result.out)
    assert rows[2]["conversations"] == [
        {"from": "human", "value": "Which city adopted printing early?"},
        {"from": "gpt", "value": "Venice."},
        {"from": "human", "value": "By which year?"},
        {"from": "gpt", "value": "By 1469."},
    ]
    trl_data = pytest.importorskip("trl.data_utils")
    for row, chat in zip(rows, read_jsonl(messages.out), strict=True):
        assert trl_data.is_conversational_from_value(row)
        converted = trl_data.maybe_convert_to_chatml({"conversations": row["conversations"]})
        assert [t["content"] for t in converted["messages"]] == [
            t["content"] for t in chat["messages"]
        ]


def test_ragas_and_deepeval_reuse_the_writers(tmp_path):
    source = write_jsonl(tmp_path / "rag.jsonl", [RAG, RAG_MULTI, QA])
    ragas = export(source, to="ragas", out=tmp_path / "e" / "ragas.jsonl")
    assert read_jsonl(ragas.out) == [to_ragas(RAG), to_ragas(QA)]
    assert ragas.files == [ragas.out, tmp_path / "e" / "ragas.multi_turn.jsonl"]
    assert read_jsonl(ragas.files[1]) == [to_ragas(RAG_MULTI)]
    deepeval = export(source, to="deepeval", out=tmp_path / "e" / "deepeval.json")
    assert json.loads(deepeval.out.read_text()) == [to_deepeval(r) for r in (RAG, RAG_MULTI, QA)]


@pytest.mark.parametrize("to", ["ragas", "deepeval"])
@pytest.mark.parametrize("record", [INSTRUCTION, IN2], ids=["instruction", "in2"])
def test_kinds_an_evaluator_cannot_take_are_refused_by_name(tmp_path, to, record):
    source = write_jsonl(tmp_path / "x.jsonl", [record])
    suffix = EXPORT_FORMATS[to].suffix
    with pytest.raises(ConfigError) as error:
        export(source, to=to, out=tmp_path / f"out{suffix}")
    message = str(error.value)
    assert f"kind {record['kind']!r}" in message and "qa and rag" in message
    assert "--to messages | alpaca | sharegpt | parquet | hf-dir" in message
    assert not (tmp_path / f"out{suffix}").exists()  # nothing half-written


def test_unanswered_instructions_are_left_out_and_counted(tmp_path):
    from huggingface_hub import DatasetCard

    from evoforge.export import to_messages

    unanswered = {**INSTRUCTION, "id": "i2", "output": None}
    source = write_jsonl(tmp_path / "x.jsonl", [INSTRUCTION, unanswered])
    result = export(source, to="messages", out=tmp_path / "m.jsonl")
    assert [row["id"] for row in read_jsonl(result.out)] == ["i1"]
    assert result.count == 1 and result.skipped == {"no_output": 1}
    assert "| left out: `no_output` | 1 |" in DatasetCard.load(result.card).text
    assert to_dataset(source, to="alpaca")["id"] == ["i1"]
    assert export(source, to="parquet", out=tmp_path / "all.parquet").count == 2  # a table
    with pytest.raises(InputError, match="'i2' has no output.*evoforge answer"):
        to_messages(unanswered)


def test_out_must_fit_the_format(records, tmp_path):
    with pytest.raises(ConfigError, match="writes a .jsonl file"):
        export(records, to="messages", out=tmp_path / "m.parquet")
    with pytest.raises(ConfigError, match="writes a folder"):
        export(records, to="hf-dir", out=tmp_path / "d.jsonl")
    with pytest.raises(ConfigError, match="use one of messages, alpaca"):
        export(records, to="csv", out=tmp_path / "m.csv")


def test_parquet_and_hf_dir_load_back(records, tmp_path):
    import datasets

    parquet = export(records, to="parquet", out=tmp_path / "all.parquet")
    frame = pd.read_parquet(parquet.out)
    assert list(frame["id"]) == ["i1", "r1", "r2", "q1", "n1"]
    folder = export(records, to="hf-dir", out=tmp_path / "ds")
    loaded = datasets.load_from_disk(str(folder.out))
    assert loaded["id"] == ["i1", "r1", "r2", "q1", "n1"]
    assert json.loads(loaded[4]["messages"]) == IN2["messages"]  # nested values as JSON text
    assert (folder.out / "README.md").is_file()  # the card rides inside the folder
    # a re-export replaces the earlier one; a folder that is not one is left alone
    export(write_jsonl(tmp_path / "one.jsonl", [QA]), to="hf-dir", out=tmp_path / "ds")
    assert datasets.load_from_disk(str(tmp_path / "ds"))["id"] == ["q1"]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="not a datasets folder"):
        export(records, to="hf-dir", out=tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_datasets_and_dicts_go_in_and_come_out(tmp_path):
    import datasets

    dataset = datasets.Dataset.from_list([QA, {**QA, "id": "q2", "answer": "four"}])
    result = export(dataset, to="messages", out=tmp_path / "m.jsonl")
    assert [r["messages"][-1]["content"] for r in read_jsonl(result.out)] == ["4", "four"]
    chat = to_dataset(iter(ALL), to="messages")
    assert chat.num_rows == 5 and chat[0]["messages"][0]["role"] == "user"
    table = to_dataset(ALL)
    assert "instruction" in table.column_names and "user_input" in table.column_names
    assert json.loads(table[4]["messages"]) == IN2["messages"]
    with pytest.raises(InputError, match="row 1 is not an evoforge record"):
        list(iter_records([{"instruction": "no id"}]))


def test_cli_export_and_its_errors(records, tmp_path):
    done = run_cli(
        "export", str(records), "--to", "sharegpt", "--out", str(tmp_path / "s.jsonl"), "--json"
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["records"] == 5 and report["card"] == str(tmp_path / "README.md")
    refused = run_cli("export", str(records), "--to", "ragas", "--out", str(tmp_path / "r.jsonl"))
    assert refused.returncode == 2
    assert "evoforge: error: --to ragas: record 'i1' has kind 'instruction'" in refused.stderr


def test_push_to_hub_calls_huggingface_hub(records, tmp_path, monkeypatch):
    import huggingface_hub
    from typer.testing import CliRunner

    from evoforge.cli import app

    calls = []

    class RecordingApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "https://hub/commit/1"

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    out = tmp_path / "hub" / "train.jsonl"
    done = CliRunner().invoke(
        app, ["export", str(records), "--to", "messages", "--out", str(out),
              "--push-to-hub", "me/evolved", "--private"],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert calls[1] == ("create_repo", "me/evolved",
                        {"repo_type": "dataset", "exist_ok": True, "private": True})  # fmt: skip
    upload = calls[2][1]
    assert upload["repo_id"] == "me/evolved" and upload["repo_type"] == "dataset"
    assert upload["folder_path"] == str(out.parent)
    assert upload["allow_patterns"] == ["train.jsonl", "README.md"]


# --- the Python API takes and gives datasets -------------------------------------------


def test_answer_and_evolve_take_a_dataset_and_give_one(tmp_path):
    import datasets

    import evoforge
    from evoforge.testing.scripted import ScriptedChatModel

    seeds = datasets.Dataset.from_list(
        [{"id": f"s{i}", "instruction": f"Name a colour, {i}."} for i in range(3)]
    )
    options = evoforge.EngineOptions(quiet=True)
    out = tmp_path / "run" / "answers.jsonl"
    summary = evoforge.answer(seeds, out, options=options, model=ScriptedChatModel("Blue."))
    assert summary.accepted == 3
    assert read_jsonl(tmp_path / "run" / "answers.input.jsonl")[0]["id"] == "s0"
    table = summary.to_dataset()
    assert table["id"] == ["s0", "s1", "s2"] and table["output"] == ["Blue."] * 3
    chat = summary.to_dataset("messages")
    assert chat[0]["messages"][-1] == {"role": "assistant", "content": "Blue."}
    # a re-run with the same rows resumes: nothing is asked again
    again = evoforge.answer(seeds, out, options=options, model=ScriptedChatModel("Red."))
    assert again.skipped_done == 3 and again.to_dataset()["output"] == ["Blue."] * 3

    evolved = evoforge.evolve(
        ({"id": r["id"], "instruction": r["instruction"]} for r in table),  # a generator
        tmp_path / "run" / "evolved.jsonl",
        evolution=evoforge.EvolveOptions(rounds=1, judge=False),
        options=options,
        model=ScriptedChatModel("Name a warm colour and say why, in one sentence."),
    )
    # each seed and its evolution: every round's version is kept by default (issue 14)
    assert evolved.accepted == 6 and evolved.to_dataset().num_rows == 6


def test_dedup_from_python_matches_the_cli(tmp_path):
    import evoforge

    rows = [
        {"id": "a", "kind": "instruction", "instruction": "Write a haiku about the sea.",
         "output": "x"},
        {"id": "b", "kind": "instruction", "instruction": "Write a haiku about the sea.",
         "output": "x"},
        {"id": "c", "kind": "instruction", "instruction": "List three prime numbers.",
         "output": "2, 3, 5"},
    ]  # fmt: skip
    result = evoforge.dedup(rows)
    assert [r["id"] for r in result.kept] == ["a", "c"]
    assert result.dropped[0]["id"] == "b" and result.dropped[0]["lost_to"] == "a"
    assert result.summary["kept"] == 2 and result.to_dataset()["id"] == ["a", "c"]
    source = write_jsonl(tmp_path / "pool.jsonl", rows)
    written = evoforge.dedup(source, tmp_path / "unique.jsonl")
    done = run_cli("dedup", str(source), "--out", str(tmp_path / "cli.jsonl"), "--json")
    assert json.loads(done.stdout) == {**written.summary, "clusters": None}
    assert read_jsonl(tmp_path / "unique.jsonl") == read_jsonl(tmp_path / "cli.jsonl")
    with pytest.raises(ConfigError, match="dedup: "):
        evoforge.dedup(rows, method="fuzzy")


def test_select_takes_a_dataset(tmp_path):
    import datasets

    import evoforge

    rows = [{"id": f"i{i}", "kind": "instruction", "instruction": f"Task {i}", "output": "ok"}
            for i in range(6)]  # fmt: skip
    report = evoforge.select(
        datasets.Dataset.from_list(rows), tmp_path / "best.jsonl",
        selection=evoforge.SelectOptions(method="random", budget=2),
    )  # fmt: skip
    assert report["selected"] == 2
    assert evoforge.to_dataset(report["files"]["out"]).num_rows == 2
