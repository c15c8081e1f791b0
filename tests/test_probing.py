"""VaL probing sets (An et al., 2024): building probes from the example corpus, and scoring."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from evoforge.errors import ConfigError, InputError
from evoforge.generators.probing import (
    build_probe,
    build_probe_file,
    entity_match,
    function_name_match,
    score_probe,
    sentence_recall,
)
from evoforge.io.documents import count_tokens
from helpers import read_jsonl, write_jsonl

PROBE = Path(__file__).resolve().parents[1] / "examples" / "probe"
CORPUS = {
    "document": PROBE / "doc.txt",
    "code": PROBE / "code",
    "database": PROBE / "entities.jsonl",
}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _probes(task: str, **kw) -> list[dict]:
    kw.setdefault("n", 24)
    kw.setdefault("context_tokens", 3000)
    kw.setdefault("buckets", 8)
    return list(build_probe(task, CORPUS[task], **kw))


# ------------------------------------------------------------------------------ build


@pytest.mark.parametrize("task", ["document", "code", "database"])
def test_needle_sits_verbatim_at_its_position_and_only_once(task):
    for probe in _probes(task):
        context, needle = probe["context"], probe["needle"]
        assert context[probe["position"] :].startswith(needle)
        assert context.count(needle) == 1
        assert probe["task"] == task
        assert probe["question"] in probe["messages"][0]["content"]
        assert context in probe["messages"][0]["content"]
        assert probe["messages"][0]["role"] == "user"


def test_document_gold_is_the_needle_sentence_and_the_piece_is_in_its_middle():
    for probe in _probes("document"):
        piece = probe["meta"]["query"]
        assert probe["gold"] == probe["needle"]
        assert f'"{piece}"' in probe["question"]
        assert probe["context"].count(piece) == 1
        # bi-directional: words on both sides of the piece must be recalled
        before, _, after = probe["needle"].partition(piece)
        assert before.strip() and after.strip()


def test_code_gold_is_the_name_of_the_function_holding_the_quoted_line():
    for probe in _probes("code"):
        line = probe["meta"]["query"]
        assert probe["needle"].startswith(f"def {probe['gold']}(")
        assert line in probe["needle"].split("\n", 1)[1]  # a body line, not the header
        assert probe["gold"] not in line
        assert probe["context"].count(line) == 1


def test_database_gold_is_the_label_and_description_of_the_asked_id():
    for probe in _probes("database"):
        record = json.loads(probe["needle"])
        assert record["id"] == probe["meta"]["query"]
        assert probe["gold"] == {"label": record["label"], "description": record["description"]}
        lines = probe["context"].split("\n")
        assert [json.loads(line)["id"] for line in lines].count(record["id"]) == 1


@pytest.mark.parametrize("task", ["document", "code", "database"])
def test_positions_spread_evenly_over_the_buckets(task):
    buckets = 8
    probes = _probes(task, n=27, buckets=buckets)  # not a multiple of the bucket count
    counts = Counter(probe["bucket"] for probe in probes)
    assert set(counts) == set(range(buckets))
    assert max(counts.values()) - min(counts.values()) <= 1
    for probe in probes:
        relative = probe["relative_position"]
        assert 0.0 <= relative <= 1.0
        assert min(int(relative * buckets), buckets - 1) == probe["bucket"]
        assert abs(relative - probe["meta"]["target_position"]) < 1 / buckets
        # relative position is measured in tokens on the finished context
        context = probe["context"]
        others = count_tokens(context) - count_tokens(probe["needle"])
        assert relative == pytest.approx(count_tokens(context[: probe["position"]]) / others)
    first = min(probes, key=lambda p: p["meta"]["target_position"])
    last = max(probes, key=lambda p: p["meta"]["target_position"])
    assert first["relative_position"] < 0.1 and last["relative_position"] > 0.9


@pytest.mark.parametrize("task", ["document", "code", "database"])
@pytest.mark.parametrize("length", [3000, 32000])
def test_context_length_is_within_ten_percent_of_the_request(task, length):
    for probe in _probes(task, n=4, context_tokens=length):
        assert probe["context_tokens"] == count_tokens(probe["context"])
        assert abs(probe["context_tokens"] - length) <= 0.1 * length


def test_a_small_corpus_is_cycled_but_the_needle_never_repeats():
    probes = _probes("document", context_tokens=6000)
    assert all(p["meta"]["distinct_filler_units"] < p["meta"]["filler_units"] for p in probes)
    assert all(p["context"].count(p["needle"]) == 1 for p in probes)


def test_any_token_counting_function_sets_the_length():
    def words(text: str) -> int:
        return len(text.split())

    probes = _probes("database", n=4, context_tokens=2000, tokenizer=words)
    for probe in probes:
        assert probe["context_tokens"] == words(probe["context"])
        assert abs(probe["context_tokens"] - 2000) <= 200


def test_same_seed_same_probes_other_seed_other_probes():
    assert _probes("code", seed=3) == _probes("code", seed=3)
    assert _probes("code", seed=3) != _probes("code", seed=4)


def test_build_probe_file_writes_jsonl_and_returns_stats(tmp_path):
    out = tmp_path / "probe" / "code.jsonl"
    stats = build_probe_file("code", CORPUS["code"], 10, out, context_tokens=2000, buckets=5)
    rows = read_jsonl(out)
    assert [row["id"] for row in rows] == [f"val-code-{i:05d}" for i in range(10)]
    assert stats["n"] == 10 and stats["per_bucket"] == [2, 2, 2, 2, 2]
    assert stats["context_tokens"]["requested"] == 2000
    assert 1800 <= stats["context_tokens"]["min"] <= stats["context_tokens"]["max"] <= 2200
    assert not list(out.parent.glob(".*tmp*"))  # written atomically


def test_unknown_task_and_bad_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="use one of document, code, database"):
        list(build_probe("table", CORPUS["code"], n=1))
    with pytest.raises(ConfigError, match="n=0"):
        list(build_probe("code", CORPUS["code"], n=0))


def test_bad_corpus_files_name_the_file_and_line(tmp_path):
    entities = tmp_path / "entities.jsonl"
    entities.write_text('{"id": "a", "label": "A", "description": "Aa."}\n{"id": "b", "label"\n')
    with pytest.raises(InputError, match=r"entities\.jsonl line 2: is not valid JSON"):
        list(build_probe("database", entities, n=1, context_tokens=100))

    entities.write_text('{"id": "a", "label": "A", "description": "Aa."}\n{"id": "b"}\n')
    with pytest.raises(InputError, match=r'line 2: field "label" is missing'):
        list(build_probe("database", entities, n=1, context_tokens=100))

    entities.write_text(
        '{"id": "a", "label": "A", "description": "Aa."}\n'
        '{"id": "a", "label": "B", "description": "Bb."}\n'
    )
    with pytest.raises(InputError, match=r"line 2: field \"id\" id 'a' is used again"):
        list(build_probe("database", entities, n=1, context_tokens=100))

    broken = tmp_path / "broken.py"
    broken.write_text("def ok():\n    return 1\n\ndef bad(:\n    pass\n")
    with pytest.raises(InputError, match=r"broken\.py line 4: is not valid Python"):
        list(build_probe("code", broken, n=1, context_tokens=100))

    tiny = tmp_path / "tiny.txt"
    tiny.write_text("Only one sentence lives in this very small file today.\n")
    with pytest.raises(InputError, match="at least 2 distinct units"):
        list(build_probe("document", tiny, n=1, context_tokens=100))

    with pytest.raises(InputError, match="no such file"):
        list(build_probe("document", tmp_path / "missing.txt", n=1))


# ------------------------------------------------------------------------------ metrics


def test_sentence_recall_is_word_level_recall_of_the_gold():
    assert sentence_recall("quick fox", "the quick brown fox") == 0.5
    assert sentence_recall("The quick brown fox.", "the quick brown fox") == 1.0
    assert sentence_recall("", "the quick brown fox") == 0.0


@pytest.mark.parametrize(
    "prediction",
    ["foo", "foo()", "`foo`", "`foo()`", "  foo\n", "def foo(x, y):", "'foo'", "Ledger.foo"],
)
def test_function_name_match_normalises_the_usual_wrappings(prediction):
    assert function_name_match(prediction, "foo") == 1.0


@pytest.mark.parametrize("prediction", ["foobar", "bar", "", "The function is foo_bar."])
def test_function_name_match_is_exact(prediction):
    assert function_name_match(prediction, "foo") == 0.0


def test_entity_match_accepts_the_label_or_the_description():
    gold = {"label": "Veltrinite", "description": "A pale green   mineral that glows."}
    assert entity_match("It is VELTRINITE.", gold) == 1.0
    assert entity_match("label: ?, description: a pale green mineral\nthat glows", gold) == 1.0
    assert entity_match("Orrasite, a dense black oxide.", gold) == 0.0


# ------------------------------------------------------------------------------ scoring


def _gold_row(i: int, task: str, bucket: int, gold) -> dict:
    return {
        "id": f"p{i}",
        "task": task,
        "gold": gold,
        "bucket": bucket,
        "buckets": 4,
        "relative_position": (bucket + 0.5) / 4,
    }


@pytest.fixture
def hand_made(tmp_path):
    sentence = "the quick brown fox"
    entity = {"label": "Orrasite", "description": "A dense black oxide."}
    gold = [
        _gold_row(0, "document", 0, sentence),
        _gold_row(1, "code", 0, "foo"),
        _gold_row(2, "document", 1, sentence),
        _gold_row(3, "database", 1, entity),
        _gold_row(4, "code", 2, "bar"),
        _gold_row(5, "database", 2, entity),
        _gold_row(6, "code", 3, "baz"),
    ]
    predictions = [
        {"id": "p0", "prediction": "quick fox"},  # 0.5
        {"id": "p1", "output": "`foo()`"},  # 1
        {"id": "p2", "response": "the quick brown fox"},  # 1
        {"id": "p3", "prediction": "a dense  BLACK oxide"},  # 1 (description)
        {"id": "p4", "prediction": "baz"},  # 0
        # p5 has no prediction: 0, counted missing
        {"id": "p6", "prediction": None},  # null: 0, counted missing
        {"id": "stray", "prediction": "x"},
    ]
    gold_path = write_jsonl(tmp_path / "gold.jsonl", gold)
    pred_path = write_jsonl(tmp_path / "pred.jsonl", predictions)
    return pred_path, gold_path


def test_scores_by_bucket_average_and_gap(hand_made):
    report = score_probe(*hand_made)
    # Pooled over every probe (the top line before issue 14), labelled as such.
    pooled = report["pooled"]
    means = [row["mean"] for row in pooled["buckets"]]
    assert means == pytest.approx([0.75, 1.0, 0.0, 0.0])
    assert [row["n"] for row in pooled["buckets"]] == [2, 2, 2, 1]
    assert pooled["average"] == pytest.approx(0.4375)
    assert pooled["gap"] == pytest.approx(1.0)
    # The top line is the paper's: means of the per-task average (document 0.75, code
    # 1/3, database 0.5) and of the per-task gap (0.5, 1, 1).
    assert report["average"] == pytest.approx((0.75 + 1 / 3 + 0.5) / 3)
    assert report["gap"] == pytest.approx((0.5 + 1.0 + 1.0) / 3)
    assert report["mean"] == pytest.approx(3.5 / 7)
    assert report["n"] == 7 and report["missing"] == 2 and report["unknown_ids"] == 1

    code = report["tasks"]["code"]
    assert [row["mean"] for row in code["buckets"]] == [1.0, None, 0.0, 0.0]
    assert code["average"] == pytest.approx(1 / 3) and code["gap"] == 1.0
    assert report["tasks"]["document"]["mean"] == pytest.approx(0.75)
    assert report["reference"]["FILM-7B"] == {"average": 85.9, "gap": 13.9, "scale": "percent"}


def test_plot_is_a_png(hand_made, tmp_path):
    plot = tmp_path / "plots" / "probe.png"
    report = score_probe(*hand_made, plot_path=plot)
    assert report["plot"] == str(plot)
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert not list(plot.parent.glob(".*tmp*"))


def test_a_bad_prediction_line_is_an_input_error_naming_the_line(hand_made, tmp_path):
    _, gold_path = hand_made
    preds = tmp_path / "bad.jsonl"
    preds.write_text('{"id": "p0", "prediction": "x"}\n\n{"id": "p1", "prediction": \n')
    with pytest.raises(InputError, match=r"bad\.jsonl line 3: is not valid JSON") as info:
        score_probe(preds, gold_path)
    assert info.value.line == 3

    preds.write_text('{"id": "p0", "prediction": "x"}\n{"id": "p1", "answer": "foo"}\n')
    with pytest.raises(InputError, match=r'line 2: has no "prediction" field'):
        score_probe(preds, gold_path)

    preds.write_text('{"id": "p0", "prediction": 3}\n')
    with pytest.raises(InputError, match=r'line 1: field "prediction" must be a string'):
        score_probe(preds, gold_path)


def test_perfect_answers_on_built_probes_score_one_everywhere(tmp_path):
    gold_path = tmp_path / "probes.jsonl"
    rows = []
    for task in CORPUS:
        build_probe_file(task, CORPUS[task], 8, gold_path, context_tokens=1500, buckets=4)
        rows += read_jsonl(gold_path)
    write_jsonl(gold_path, rows)
    answers = []
    for row in rows:
        gold = row["gold"]
        answer = gold["label"] if row["task"] == "database" else gold
        answers.append({"id": row["id"], "prediction": answer})
    pred_path = write_jsonl(tmp_path / "answers.jsonl", answers)
    report = score_probe(pred_path, gold_path)
    assert report["n"] == 24 and report["missing"] == 0
    assert report["average"] == 1.0 and report["gap"] == 0.0
    assert set(report["tasks"]) == {"document", "code", "database"}
