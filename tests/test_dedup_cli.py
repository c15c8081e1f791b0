"""`evoforge dedup` as a user runs it."""

from __future__ import annotations

import json

from helpers import read_jsonl, run_cli, write_jsonl

EN = (
    "The Moon's gravity pulls the oceans into two bulges that travel around the Earth "
    "each day, so most coasts see two high tides and two low tides, and the Sun adds a "
    "smaller pull that makes spring tides when it lines up with the Moon"
)
ZH = (
    "嫦娥五号于二〇二〇年十二月从月球正面的风暴洋北部带回了一千七百三十一克月壤样本，"
    "这是人类四十多年来首次从月球采集样本并返回地球，科学家据此测定了该地区玄武岩的年龄。"
)


def qa(record_id, question):
    return {"id": record_id, "kind": "qa", "question": question, "answer": "x", "contexts": ["c"]}


def test_exact_near_and_chinese_duplicates_are_dropped_with_their_winner(tmp_path):
    rows = [
        qa("a", EN),
        qa("b", EN.upper() + "  "),  # exact after normalisation
        qa("c", EN.replace("smaller", "weaker")),  # one word changed: near duplicate
        qa("d", ZH),
        qa("e", ZH.replace("一千七百三十一克", "一千七百三十二克")),  # one character changed
        qa("f", "Volcanoes form where magma from the mantle reaches the surface of the Earth."),
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "unique.jsonl"
    groups = tmp_path / "groups.jsonl"
    result = run_cli("dedup", str(source), "--out", str(out), "--clusters", str(groups), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert [r["id"] for r in read_jsonl(out)] == ["a", "d", "f"]
    rejects = {r["id"]: r for r in read_jsonl(tmp_path / "unique.rejects.jsonl")}
    assert set(rejects) == {"b", "c", "e"}
    assert rejects["b"]["lost_to"] == "a" and rejects["e"]["lost_to"] == "d"
    assert "similarity" in rejects["c"]["detail"]
    assert report["fields"] == ["question"] and report["groups"] == 2
    assert len(read_jsonl(groups)) == 2


def test_prefer_keeps_the_best_scored_member(tmp_path):
    rows = [
        {**qa("a", EN), "meta": {"deita": {"score": 1}}},
        {**qa("b", EN.lower()), "meta": {"deita": {"score": 9}}},
    ]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "unique.jsonl"
    result = run_cli("dedup", str(source), "--out", str(out), "--prefer", "meta.deita.score")
    assert result.returncode == 0, result.stderr
    assert [r["id"] for r in read_jsonl(out)] == ["b"]


def _corpus(tmp_path):
    rows = [qa(f"r{i}", f"{EN} variant {i % 7}") for i in range(60)]
    rows += [qa("zh1", ZH), qa("zh2", ZH.replace("一千七百三十一克", "一千七百三十二克"))]
    return write_jsonl(tmp_path / "in.jsonl", rows), rows


def test_a_jsonl_file_is_streamed_with_the_in_memory_result(tmp_path):
    from evoforge import dedup
    from evoforge.api import JsonlRows

    source, rows = _corpus(tmp_path)
    streamed = dedup(source, tmp_path / "streamed.jsonl", prefer="id")
    held = dedup(rows, tmp_path / "held.jsonl", prefer="id")
    assert isinstance(streamed.kept, JsonlRows) and isinstance(streamed.dropped, JsonlRows)
    assert list(streamed.kept) == list(held.kept)
    assert list(streamed.dropped) == list(held.dropped)
    assert streamed.summary["kept"] == len(held.kept) < len(rows)
    assert streamed.summary["groups"] == held.summary["groups"]
    assert streamed.to_dataset().num_rows == len(held.kept)


def test_shards_write_the_same_files_as_one_process(tmp_path):
    source, _ = _corpus(tmp_path)
    written = []
    for shards in ("1", "2"):
        folder = tmp_path / f"s{shards}"
        folder.mkdir()
        result = run_cli(
            "dedup", str(source), "--out", str(folder / "u.jsonl"), "--shards", shards,
            "--clusters", str(folder / "groups.jsonl"), "--no-report",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        written.append(
            [
                (folder / name).read_bytes()
                for name in ("u.jsonl", "u.rejects.jsonl", "groups.jsonl")
            ]
        )
    assert written[0] == written[1]


def test_a_bad_line_leaves_an_earlier_output_untouched(tmp_path):
    source, _ = _corpus(tmp_path)
    out = tmp_path / "u.jsonl"
    assert run_cli("dedup", str(source), "--out", str(out), "--no-report").returncode == 0
    before = out.read_bytes()
    with open(source, "a", encoding="utf-8") as handle:
        handle.write('{"id": "broken", "question": \n')
    result = run_cli("dedup", str(source), "--out", str(out), "--no-report")
    assert result.returncode == 2
    assert f"{source}" in result.stderr and "line 63" in result.stderr
    assert "Traceback" not in result.stderr
    assert out.read_bytes() == before
    assert not list(tmp_path.glob(".u.jsonl.tmp-*"))
