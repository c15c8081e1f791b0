"""``evoforge pam``: PAM self-correction data (Han et al., 2024), issue 16."""

from __future__ import annotations

import json

import pytest

from evoforge import EngineOptions, PamOptions, pam
from evoforge.generators.pam import balance_quota
from evoforge.options import DEFAULT_LLM
from evoforge.records import schema_error
from evoforge.testing.scripted import ScriptedChatModel
from helpers import read_jsonl, run_cli, write_jsonl

CAPITALS = ["Paris", "Rome", "Madrid", "Lisbon", "Vienna", "Berlin", "Oslo", "Bern", "Prague",
            "Dublin"]  # fmt: skip


def qa_seeds(n: int) -> list[dict]:
    return [{"id": f"q{i:02d}", "question": f"Seed {i}: what is the capital of country {i}?",
             "reference": CAPITALS[i % len(CAPITALS)]} for i in range(n)]  # fmt: skip


def _number(text: str) -> int:
    return int(text.split("Seed ")[1].split(":")[0])


def responder(request):
    """The student (model "student") is right on even seeds only; the teacher (model
    "teacher") verifies against the reference and corrects."""
    prompt = request.last_user
    number = _number(prompt)
    right = CAPITALS[number % len(CAPITALS)]
    if request.model == "student":
        return f"The capital is {right}." if number % 2 == 0 else "The capital is Atlantis."
    if "Answer to check:" in prompt:
        answer = prompt.split("Answer to check:")[1].split("Reference answer:")[0]
        verdict = "correct" if right in answer else "incorrect"
        return json.dumps({"verdict": verdict, "rationale": f"I named {answer.strip()!r}."})
    assert "Why it is wrong:" in prompt
    return f"The capital of country {number} is {right}."


def _run_cli(fake_openai, seeds, out, *flags):
    return run_cli(
        "pam", "--seeds", str(seeds), "--out", str(out), "--quiet",
        "--llm", f"openai:teacher@{fake_openai.base_url}",
        "--student", f"openai:student@{fake_openai.base_url}", *flags,
    )  # fmt: skip


def test_pam_on_the_fake_server_writes_spans_that_reproduce_each_segment(fake_openai, tmp_path):
    fake_openai.responder = responder
    seeds = write_jsonl(tmp_path / "qa.jsonl", qa_seeds(50))
    out = tmp_path / "pam.jsonl"
    result = _run_cli(fake_openai, seeds, out)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert len(records) == 50
    by_model = {"student": 0, "teacher": 0}
    for request in fake_openai.requests:
        by_model[request.model] += 1
    assert by_model == {"student": 50, "teacher": 75}  # 50 verifications, 25 corrections
    for record in records:
        assert schema_error(record, "pam") is None
        user, assistant = record["messages"]
        assert user["content"] == f"{record['question']}\n\n{PamOptions().trigger}"
        content = assistant["content"]
        number = _number(record["question"])
        verdict = "correct" if number % 2 == 0 else "incorrect"
        assert record["verdict"] == verdict == record["meta"]["pam"]["verdict"]
        names = [s["name"] for s in record["segments"]]
        expected = ["initial_answer", "verification"] + (["correction"] * (verdict != "correct"))
        assert names == expected
        for segment in record["segments"]:
            assert content[segment["start"] : segment["end"]] == record[segment["name"]]
            assert segment["trained"] is (
                segment["name"] != "initial_answer" or verdict == "correct"
            )
        assert record["initial_answer"] == (
            "The capital is Atlantis." if verdict == "incorrect" else
            f"The capital is {CAPITALS[number % 10]}."
        )  # fmt: skip
        assert f"it is {verdict}." in record["verification"]
        assert ("correction" in record) is (verdict == "incorrect")
        if verdict == "incorrect":
            assert CAPITALS[number % 10] in record["correction"]
    # The teacher saw the student's answer and the reference.
    verify = [r for r in fake_openai.requests if "Answer to check:" in r.last_user]
    assert all("Reference answer:" in r.last_user for r in verify)
    assert all(r.response_format is not None for r in verify)  # a structured call
    # validate, export and report take pam records.
    checked = run_cli("validate", str(out), "--checks", "schema,empty", "--quiet",
                      "--out", str(tmp_path / "ok.jsonl"))  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    target = tmp_path / "sharegpt.jsonl"
    assert run_cli("export", str(out), "--to", "sharegpt", "--out", str(target)).returncode == 0
    turns = read_jsonl(target)[1]["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt"]
    assert turns[1]["value"] == records[1]["messages"][1]["content"]
    assert run_cli("report", str(out)).returncode == 0
    summary = (tmp_path / "summary.md").read_text("utf-8")
    assert "by verdict: correct kept 25, rejected 0; incorrect kept 25, rejected 0" in summary
    # A re-run resumes from the journal: no new calls.
    before = fake_openai.hits
    assert _run_cli(fake_openai, seeds, out).returncode == 0
    assert fake_openai.hits == before


def test_balance_drops_the_surplus_with_its_reason(fake_openai, tmp_path):
    fake_openai.responder = responder
    rows = qa_seeds(12)
    for row in rows[6:]:  # 6 more even numbers: 9 correct, 3 incorrect in all
        number = _number(row["question"])
        row["question"] = row["question"].replace(f"Seed {number}:", f"Seed {2 * number}:")
    seeds = write_jsonl(tmp_path / "qa.jsonl", rows)
    out = tmp_path / "pam.jsonl"
    result = _run_cli(fake_openai, seeds, out, "--balance", "correct=0.5")
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert [r["verdict"] for r in records].count("correct") == 3
    assert [r["verdict"] for r in records].count("incorrect") == 3
    rejects = read_jsonl(tmp_path / "pam.rejects.jsonl")
    assert len(rejects) == 6 and {r["reason"] for r in rejects} == {"surplus"}
    assert all(r["record"]["verdict"] == "correct" for r in rejects)
    kept_correct = [r["id"] for r in records if r["verdict"] == "correct"]
    all_correct = [r["id"] for r in rows if _number(r["question"]) % 2 == 0]
    assert kept_correct == all_correct[:3]  # the first ones, in input order
    manifest = json.loads((tmp_path / "pam.manifest.json").read_text())
    assert manifest["steps"]["select"]["rejected_by_reason"] == {"surplus": 6}


def test_balance_quota():
    assert balance_quota({"correct": 9, "incorrect": 3}, 0.5) == {"correct": 3, "incorrect": 3}
    assert balance_quota({"correct": 2, "incorrect": 8}, 0.5) == {"correct": 2, "incorrect": 2}
    assert balance_quota({"correct": 10, "incorrect": 10}, 0.25) == {"correct": 3,
                                                                      "incorrect": 10}  # fmt: skip
    assert balance_quota({"correct": 4, "incorrect": 4}, 1.0) == {"correct": 4, "incorrect": 0}


def test_the_student_defaults_to_the_embedded_model_and_routes_apart_from_the_teacher(tmp_path):
    assert PamOptions().student == DEFAULT_LLM == "local"

    def reply(messages, n):
        text = messages[-1]["content"]
        if "Answer to check:" in text:
            return json.dumps({"verdict": "correct", "rationale": "It matches."})
        return "Paris."

    teacher, student = ScriptedChatModel(reply, name="t"), ScriptedChatModel(reply, name="s")
    summary = pam(qa_seeds(3), tmp_path / "p.jsonl", options=EngineOptions(quiet=True),
                  model=teacher, student=student)  # fmt: skip
    assert summary.accepted == 3
    assert len(student.calls) == 3 and len(teacher.calls) == 3
    assert all("Answer to check:" not in c["messages"][-1]["content"] for c in student.calls)
    assert "route" not in student.calls[0]["params"]
    manifest = json.loads(summary.manifest.read_text())
    assert manifest["config"]["student"] == {"backend": "scripted", "model": "s"}
    assert set(summary.usage) == {"pam_answer", "pam_verify"}


@pytest.mark.parametrize(
    ("rows", "flags", "message"),
    [
        ([{"id": "a", "question": "Hi?"}, {"id": "b", "reference": "x"}], [],
         'line 2: field "question" is missing'),
        ([{"id": "a", "question": "Hi?"}], ["--balance", "correct=2"], "--balance"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path, rows, flags, message):
    seeds = write_jsonl(tmp_path / "qa.jsonl", rows)
    result = run_cli("pam", "--seeds", str(seeds), "--out", str(tmp_path / "p.jsonl"),
                     "--llm", "openai:m@http://127.0.0.1:9", "--student",
                     "openai:m@http://127.0.0.1:9", *flags)  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_a_dry_run_simulates_student_and_teacher_without_a_model(tmp_path):
    seeds = write_jsonl(tmp_path / "qa.jsonl", qa_seeds(4))
    result = run_cli("pam", "--seeds", str(seeds), "--out", str(tmp_path / "p.jsonl"),
                     "--llm", "openai:gpt-4o-mini", "--dry-run", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["operators"]["pam_answer"]["calls"] == 4  # the student, simulated too
    assert plan["operators"]["pam_verify"]["calls"] == 4
    assert not (tmp_path / "p.jsonl").exists()
