"""LIMA, complete (issue 17): the first-person and other-answer checks on a labelled
fixture of 60 answers, links stripped before the length check, and the ``lima`` and
``balanced`` selectors from the CLI, the API and a recipe."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evoforge import SelectOptions, select
from evoforge.cli import app
from evoforge.errors import ConfigError
from evoforge.recipe.loader import load_recipe
from evoforge.validators.checks import check_lima
from evoforge.validators.lima import first_person, other_answer_reference, strip_links
from evoforge.validators.select import select_balanced, select_lima
from helpers import write_jsonl

FIXTURE = Path(__file__).parent / "fixtures" / "model_signals" / "lima_answers.jsonl"


def labelled() -> list[dict]:
    with open(FIXTURE, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def precision_recall(truth: list[bool], found: list[bool]) -> tuple[float, float]:
    hits = sum(t and f for t, f in zip(truth, found, strict=True))
    return hits / max(1, sum(found)), hits / max(1, sum(truth))


@pytest.mark.parametrize(
    ("label", "detector"), [("first_person", first_person), ("reference", other_answer_reference)]
)
def test_the_labelled_fixture(label, detector):
    rows = labelled()
    assert len(rows) == 60
    truth = [row[label] for row in rows]
    found = [detector(row["answer"]) is not None for row in rows]
    precision, recall = precision_recall(truth, found)
    assert precision >= 0.95 and recall >= 0.95, (label, precision, recall)


def test_the_fixture_holds_the_hard_cases():
    text = " ".join(row["answer"] for row in labelled())
    for case in ("for i in range", "World War I", "I/O", '"I am tired"', "Type I"):
        assert case in text


@pytest.mark.parametrize(
    "answer",
    [
        "for i in range(3):\n    total += i",
        "World War I ended in 1918.",
        "Disk I/O dominates.",
        'She said "I will come" and left.',
        "Type I error.",
        "the index i runs to n",
    ],
)
def test_not_first_person(answer):
    assert check_lima(answer).ok


def test_first_person_and_references_still_fail():
    assert check_lima("I think the Moon does it.").reason == "first_person"
    assert check_lima("what do i do now").reason == "first_person"
    assert check_lima("The accepted answer is wrong.").reason == "references_other_answer"
    assert check_lima("Ask on Stack  Exchange.").reason == "references_other_answer"


def test_links_and_images_are_stripped_before_the_length_check():
    assert strip_links("See [the docs](https://x.org/a) and ![logo](i.png) or https://y.z/q") == (
        "See the docs and or "
    )
    body = "x " * 590  # 1,180 characters of text
    padded = body + "".join(f"![img](https://example.com/{i:04d}.png)" for i in range(40))
    assert len(padded) > 1200
    assert check_lima(padded, lima_length=True).reason == "too_short"
    assert check_lima(body + "y " * 20, lima_length=True).ok


def records() -> list[dict]:
    answers = [
        ("a", "math", "Two plus two is four."),
        ("b", "math", "I think it is four."),
        ("c", "math", "Seven is prime."),
        ("d", "math", "Nine is a square."),
        ("e", "cooking", "Salt at the end."),
        ("f", "cooking", "As mentioned above, salt early."),
        ("g", "history", "World War I began in 1914."),
    ]
    return [{"id": i, "kind": "instruction", "instruction": "q", "output": o, "category": c}
            for i, c, o in answers]  # fmt: skip


def test_select_balanced_even_across_categories():
    kept, dropped = select_balanced(records(), balance_by="category", per_category=1, seed=3)
    assert sorted(r["category"] for r in kept) == ["cooking", "history", "math"]
    assert {d.reason for d in dropped} == {"category_full"}
    kept, dropped = select_balanced(records(), 4, balance_by="category")
    assert sorted(r["category"] for r in kept) == ["cooking", "cooking", "history", "math"]
    with pytest.raises(ConfigError, match="--balance-by"):
        select_balanced(records(), 2)


def test_select_lima_filters_then_balances():
    kept, dropped = select_lima(records(), balance_by="category", per_category=2, seed=1)
    reasons = {d.id: d.reason for d in dropped}
    assert reasons["b"] == "first_person" and reasons["f"] == "references_other_answer"
    assert "g" in {r.id for r in kept}  # World War I is not the answerer speaking
    assert sum(r["category"] == "math" for r in kept) == 2


def test_select_cli_lima_and_balanced(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", records())
    out = tmp_path / "lima.jsonl"
    result = CliRunner().invoke(app, ["select", str(source), "--out", str(out), "--method",
                                      "lima", "--balance-by", "category", "--per-category", "2",
                                      "--json", "-q"])  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["selected"] == 4
    assert report["dropped_by_reason"] == {"first_person": 1, "references_other_answer": 1,
                                           "category_full": 1}  # fmt: skip
    result = CliRunner().invoke(app, ["select", str(source), "--out", str(tmp_path / "b.jsonl"),
                                      "--method", "balanced", "-q"])  # fmt: skip
    assert result.exit_code == 2 and "--balance-by" in result.output


def test_api_and_recipe_reach_the_new_methods(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", records())
    selection = SelectOptions(method="balanced", balance_by="category", budget=3)
    report = select(source, tmp_path / "api.jsonl", selection=selection)
    assert report["selected"] == 3
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "source: {seeds: in.jsonl}\ngenerator: {type: answer}\n"
        "selection: {method: ifd, budget: 2, then: kcenter, scorer_model: local, "
        "max_answer_tokens: 128}\n",
        encoding="utf-8",
    )
    spec = load_recipe(recipe).selection
    assert (spec.method, spec.then, spec.scorer_model, spec.max_answer_tokens) == (
        "ifd", "kcenter", "local", 128)  # fmt: skip
