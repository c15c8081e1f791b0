"""Per-record checks by name, the chain, and `evoforge validate --checks`."""

from __future__ import annotations

import pytest

from evoforge import ConfigError
from evoforge.validators.checks import (
    Bounds,
    CheckSettings,
    ValidatorChain,
    check_length,
    check_lima,
    parse_checks,
)
from helpers import read_jsonl, run_cli, write_jsonl


def instruction(output, i=0):
    return {"id": f"r{i}", "kind": "instruction", "instruction": "Explain tides.", "output": output}


def test_length_bounds_in_each_unit():
    assert check_length("one two three", Bounds(4, None, "words")).reason == "too_short"
    assert check_length("one two three", Bounds(None, 2, "words")).reason == "too_long"
    assert check_length("abc", Bounds(1, 3, "chars")).ok
    assert check_length("Hi, there!", Bounds(None, 3, "tokens")).reason == "too_long"


def test_lima_filters():
    assert check_lima("I think the Moon does it.").reason == "first_person"
    assert check_lima("As mentioned above, the Moon pulls.").reason == "references_other_answer"
    assert check_lima("The Moon's gravity pulls the oceans.").ok
    assert check_lima("Short.", lima_length=True).reason == "too_short"
    assert check_lima("x " * 700, lima_length=True).ok


def test_chain_stops_at_the_first_failure_and_counts_reasons():
    chain = ValidatorChain(parse_checks("schema,refusal,lima"), CheckSettings())
    verdicts = [
        chain.check(instruction("The Moon's gravity raises two bulges of water.", 1)),
        chain.check(instruction("Sorry, I cannot help with that.", 2)),
        chain.check(instruction("My view: the Moon.", 3)),
        chain.check({"id": "r4", "kind": "instruction", "instruction": ""}),
    ]
    assert [v.reason for v in verdicts] == [None, "refusal", "first_person", "schema_invalid"]
    assert chain.counts == {"passed": 1, "refusal": 1, "first_person": 1, "schema_invalid": 1}


def test_unknown_check_suggests():
    with pytest.raises(ConfigError, match="did you mean 'refusal'"):
        parse_checks("schema,refusl")


def test_validate_cli_with_checks_writes_clean_and_rejects(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            instruction("The Moon's gravity pulls the oceans into two bulges.", 1),
            instruction("Sorry, I can't help.", 2),
            instruction("As I said before, it is the Moon.", 3),
        ],
    )
    clean = tmp_path / "clean.jsonl"
    result = run_cli("validate", str(path), "--kind", "instruction", "--checks",
                     "schema,refusal,lima", "--out", str(clean))  # fmt: skip
    assert result.returncode == 1
    assert "line 2: refusal:" in result.stdout and "line 3: first_person:" in result.stdout
    assert "3 records, 2 invalid (refusal 1, first_person 1)" in result.stderr
    assert [r["id"] for r in read_jsonl(clean)] == ["r1"]
    assert {r["reason"] for r in read_jsonl(tmp_path / "clean.rejects.jsonl")} == {
        "refusal",
        "first_person",
    }


def test_validate_cli_rubric_check_asks_the_judge_after_the_cheap_checks(tmp_path, fake_openai):
    import json

    def judge(request):
        prompt = request.last_user
        assert "Rubric:\nThe answer names the Moon." in prompt and "from 0 (fails" in prompt
        if "gravity" in prompt:
            return json.dumps({"score": 3, "reason": "It names the Moon."})
        return json.dumps({"score": 1, "reason": "It never names the Moon."})

    fake_openai.responder = judge
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text(
        "rubric: The answer names the Moon.\nscale: [0, 3]\nthreshold: 2\n", encoding="utf-8"
    )
    path = write_jsonl(
        tmp_path / "r.jsonl",
        [
            instruction("The Moon's gravity pulls the oceans into two bulges.", 1),
            instruction("Sorry, I can't help.", 2),
            instruction("Wind pushes the water around.", 3),
        ],
    )
    clean = tmp_path / "clean.jsonl"
    result = run_cli("validate", str(path), "--kind", "instruction", "--checks",
                     "schema,refusal,rubric", "--rubric", str(rubric), "--out", str(clean),
                     "--llm", f"openai:judge@{fake_openai.base_url}")  # fmt: skip
    assert result.returncode == 1, result.stderr
    # The refusal is caught without a call; the judge sees the other two.
    assert len(fake_openai.requests) == 2
    assert "line 3: low_rating: score 1 < 2 (scale 0-3): It never names the Moon." in result.stdout
    assert "3 records, 2 invalid (refusal 1, low_rating 1)" in result.stderr
    assert [r["id"] for r in read_jsonl(clean)] == ["r1"]


def test_rubric_is_a_known_check_and_rubric_without_it_is_an_error(tmp_path):
    assert parse_checks("schema,rubric") == ["schema", "rubric"]
    chain = ValidatorChain(parse_checks("schema,rubric"))
    assert chain.judged == ["rubric"]
    path = write_jsonl(tmp_path / "r.jsonl", [instruction("The Moon.", 1)])
    rubric = tmp_path / "rubric.txt"
    rubric.write_text("Names the Moon.", encoding="utf-8")
    result = run_cli("validate", str(path), "--rubric", str(rubric))
    assert result.returncode != 0 and "--checks schema,rubric" in result.stdout + result.stderr
