"""`evoforge probe build` and `probe score` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import read_jsonl, run_cli

PROBE = Path(__file__).resolve().parent.parent / "examples" / "probe"


@pytest.mark.parametrize(
    ("task", "corpus"),
    [
        ("document", PROBE / "doc.txt"),
        ("code", PROBE / "code"),
        ("database", PROBE / "entities.jsonl"),
    ],
)
def test_build_then_score_perfect_and_empty_predictions(task, corpus, tmp_path):
    gold = tmp_path / "probe.jsonl"
    built = run_cli("probe", "build", "--task", task, "--corpus", str(corpus), "--n", "8",
                    "--out", str(gold), "--context-tokens", "3000", "--buckets", "4",
                    "--json")  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert json.loads(built.stdout)["per_bucket"] == [2, 2, 2, 2]
    probes = read_jsonl(gold)
    perfect = tmp_path / "perfect.jsonl"
    perfect.write_text(
        "".join(
            json.dumps({"id": p["id"], "prediction": p["gold"] if task != "database"
                        else f"{p['gold']['label']}: {p['gold']['description']}"}) + "\n"
            for p in probes
        )
    )  # fmt: skip
    scored = run_cli("probe", "score", "--pred", str(perfect), "--gold", str(gold),
                     "--plot", str(tmp_path / "plot.png"), "--json")  # fmt: skip
    assert scored.returncode == 0, scored.stderr
    report = json.loads(scored.stdout)
    assert report["average"] == 1.0 and report["gap"] == 0.0
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    report = json.loads(
        run_cli("probe", "score", "--pred", str(empty), "--gold", str(gold), "--json").stdout
    )
    assert report["average"] == 0.0 and report["missing"] == 8


def test_bad_prediction_line_is_named(tmp_path):
    gold = tmp_path / "probe.jsonl"
    run_cli("probe", "build", "--task", "database", "--corpus", str(PROBE / "entities.jsonl"),
            "--n", "2", "--out", str(gold), "--context-tokens", "1000")  # fmt: skip
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "x", "prediction": "a"}\nnot json\n')
    result = run_cli("probe", "score", "--pred", str(bad), "--gold", str(gold))
    assert result.returncode == 2
    assert f"{bad} line 2" in result.stderr


def test_probe_help_has_examples():
    for command in ("build", "score"):
        result = run_cli("probe", command, "--help")
        assert result.returncode == 0 and "Example:" in result.stdout
