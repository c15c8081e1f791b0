"""Dataset cards: Hugging Face card format, read from the run's manifest."""

from __future__ import annotations

import json

import pytest
from huggingface_hub import DatasetCard

from evoforge import EngineOptions, answer
from evoforge.card import size_category
from evoforge.export import export
from evoforge.testing.scripted import ScriptedChatModel
from helpers import write_jsonl


def answered_run(seeds_file, tmp_path):
    """A real `answer` run: 5 seeds, one answer empty (a rejection with a reason)."""

    def reply(messages, _n):
        return "   " if "number 3" in messages[-1]["content"] else "ok"

    summary = answer(
        seeds_file(5), tmp_path / "run" / "answers.jsonl",
        options=EngineOptions(quiet=True, seed=7), model=ScriptedChatModel(reply, name="tiny-1"),
    )  # fmt: skip
    return summary


def test_card_parses_and_carries_the_manifest(seeds_file, tmp_path):
    summary = answered_run(seeds_file, tmp_path)
    manifest = json.loads(summary.manifest.read_text())
    assert summary.rejected >= 1
    result = export(summary.out, to="messages", out=tmp_path / "exp" / "train.jsonl",
                    license="cc-by-4.0", language=["en", "fr"])  # fmt: skip
    card = DatasetCard.load(result.card)
    data = card.data.to_dict()
    assert data["license"] == "cc-by-4.0" and data["language"] == ["en", "fr"]
    assert data["task_categories"] == ["text-generation"]
    assert data["size_categories"] == ["n<1K"]
    assert {"synthetic", "evoforge", "instruction-tuning"} <= set(data["tags"])
    assert data["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "train.jsonl"}]}
    ]
    text = card.text
    assert "`evoforge answer`" in text and "`scripted:tiny-1`" in text
    assert "**Run seed**: 7" in text
    (template_id, digest), *_ = manifest["config"]["prompts"].items()
    assert f"| `{template_id}` | `{digest}` |" in text
    assert f"{summary.accepted} records accepted, {summary.rejected} rejected." in text
    for reason, count in manifest["counts"]["rejected_by_reason"].items():
        assert f"| `{reason}` | {count} |" in text
    assert f"| all | {summary.accepted} |" in text


def test_load_dataset_on_the_folder_finds_only_the_export(seeds_file, tmp_path):
    """The card's configs name the data files, so the run's other .jsonl files beside the
    export (rejects) are not mistaken for data."""
    import datasets

    summary = answered_run(seeds_file, tmp_path)
    export(summary.out, to="alpaca", out=tmp_path / "run" / "alpaca.jsonl")
    loaded = datasets.load_dataset(
        str(tmp_path / "run"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert loaded.column_names == ["id", "instruction", "input", "output"]
    assert loaded.num_rows == summary.accepted


def test_ragas_card_has_a_config_per_file_and_hf_dir_card_lives_inside(tmp_path):
    import datasets

    rag = {"kind": "rag", "reference": "By 1469.", "reference_contexts": ["Venice, 1469."],
           "parent_id": None, "lineage": [], "meta": {}}  # fmt: skip
    turns = [{"role": "user", "content": "Where?"}, {"role": "assistant", "content": "Venice."},
             {"role": "user", "content": "When?"}]  # fmt: skip
    source = write_jsonl(tmp_path / "eval.jsonl", [
        {**rag, "id": "a", "user_input": "When did printing reach Venice?"},
        {**rag, "id": "b", "user_input": turns},
    ])  # fmt: skip
    result = export(source, to="ragas", out=tmp_path / "out" / "ragas.jsonl")
    data = DatasetCard.load(result.card).data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["default", "multi_turn"]
    assert data["configs"][1]["data_files"][0]["path"] == "ragas.multi_turn.jsonl"
    assert data["task_categories"] == ["question-answering"] and "rag" in data["tags"]
    assert "Not recorded (no manifest or rejects file" in DatasetCard.load(result.card).text

    folder = export(source, to="hf-dir", out=tmp_path / "ds")
    assert folder.card == tmp_path / "ds" / "README.md"
    assert DatasetCard.load(folder.card).data.to_dict()["configs"][0]["data_files"][0] == {
        "split": "train",
        "path": "data-*.arrow",
    }
    assert datasets.load_from_disk(str(folder.out)).num_rows == 2


def test_rejections_from_a_selection_manifest_or_a_rejects_file(tmp_path):
    rows = [{"id": f"i{i}", "kind": "instruction", "instruction": f"Task {i}", "output": "ok"}
            for i in range(3)]  # fmt: skip
    selected = write_jsonl(tmp_path / "best.jsonl", rows)
    (tmp_path / "best.manifest.json").write_text(json.dumps({
        "method": "deita", "budget": 3, "input": 5, "selected": 3,
        "dropped_by_reason": {"too_similar": 2}, "settings": {"seed": 4},
    }))  # fmt: skip
    text = DatasetCard.load(export(selected, to="messages", out=tmp_path / "x" / "m.jsonl").card)
    assert "`evoforge select`" in text.text and "| `too_similar` | 2 |" in text.text
    assert "**Run seed**: 4" in text.text and "3 records accepted, 2 rejected." in text.text

    unique = write_jsonl(tmp_path / "unique.jsonl", rows)
    write_jsonl(tmp_path / "unique.rejects.jsonl", [
        {"id": "d1", "reason": "near_duplicate"}, {"id": "d2", "reason": "near_duplicate"},
        {"id": "d3", "reason": "exact_duplicate"},
    ])  # fmt: skip
    card = DatasetCard.load(export(unique, to="messages", out=tmp_path / "y" / "m.jsonl").card)
    assert "| `near_duplicate` | 2 |" in card.text and "| `exact_duplicate` | 1 |" in card.text


@pytest.mark.parametrize(
    ("n", "category"),
    [(0, "n<1K"), (999, "n<1K"), (1000, "1K<n<10K"), (250_000, "100K<n<1M"),
     (10**9, "n>1B")],
)  # fmt: skip
def test_size_categories_are_the_hubs(n, category):
    assert size_category(n) == category


def test_a_readme_evoforge_did_not_write_is_never_replaced(tmp_path):
    from evoforge import ConfigError

    source = write_jsonl(tmp_path / "run.jsonl", [
        {"id": "i1", "kind": "instruction", "instruction": "Task", "output": "ok"}
    ])  # fmt: skip
    project = tmp_path / "project"
    project.mkdir()
    (project / "README.md").write_text("# My project\n")
    with pytest.raises(ConfigError, match="not an evoforge dataset card.*--no-card"):
        export(source, to="messages", out=project / "train.jsonl")
    assert (project / "README.md").read_text() == "# My project\n"
    assert not (project / "train.jsonl").exists()
    assert export(source, to="messages", out=project / "train.jsonl", card=False).card is None
    # its own card is rewritten by the next export into the same folder
    first = export(source, to="messages", out=tmp_path / "own" / "a.jsonl").card
    second = export(source, to="alpaca", out=tmp_path / "own" / "b.jsonl").card
    assert first == second
    assert DatasetCard.load(second).data.configs[0]["data_files"][0]["path"] == "b.jsonl"
