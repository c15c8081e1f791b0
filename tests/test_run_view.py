"""``open_run`` and ``RunSummary.to_pandas``: a run's files as DataFrames, row for line.

The folder is built as a notebook user builds it: seeds from a DataFrame (one bad row),
evolve writing every round, dedup, then an AlpaGasus selection that scores records.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from test_report import OPTIONS, alpagasus_judge, evolve_responder, seed_rows

import evoforge
from evoforge.io.run_frames import BY_REASON_COLUMNS, FUNNEL_COLUMNS, REJECTED_COLUMNS
from evoforge.testing.scripted import ScriptedChatModel
from helpers import read_jsonl


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, evoforge.RunSummary]:
    folder = tmp_path_factory.mktemp("runview") / "run"
    seeds = pd.DataFrame([*seed_rows(), {"id": "bad"}])  # no instruction: NaN
    summary = evoforge.evolve(
        seeds, folder / "evolved.jsonl", options=OPTIONS,
        evolution=evoforge.EvolveOptions(rounds=2, answers=True, final_only=True),
        model=ScriptedChatModel(evolve_responder, record=False),
    )  # fmt: skip
    evoforge.dedup(folder / "evolved.jsonl", folder / "unique.jsonl", fields=["instruction"])
    evoforge.select(
        folder / "unique.jsonl", folder / "best.jsonl", options=OPTIONS,
        selection=evoforge.SelectOptions(method="alpagasus"),
        model=ScriptedChatModel(alpagasus_judge, record=False),
    )  # fmt: skip
    return folder, summary


def test_rejected_has_one_row_per_line_of_the_rejects_file(run):
    folder, summary = run
    view = evoforge.open_run(folder / "evolved.jsonl")
    lines = read_jsonl(folder / "evolved.rejects.jsonl")
    rejected = view.rejected
    assert len(rejected) == len(lines) == summary.rejected > 0
    assert list(rejected.columns) == list(REJECTED_COLUMNS)
    for (_, row), line in zip(rejected.iterrows(), lines, strict=True):
        for name in ("id", "reason", "detail", "step", "field", "lost_to", "record"):
            expected = line.get(name)
            assert pd.isna(row[name]) if expected is None else row[name] == expected
    bad = rejected[rejected.reason == "bad_seed"].iloc[0]
    assert bad.id == "evolved.input.jsonl:line-9" and pd.isna(bad.kind) and bad.record is None
    assert 'line 9: field "instruction" is missing' in bad.detail
    assert set(rejected.kind.dropna()) == {"instruction"}
    # dedup's lines name the id each duplicate lost to
    dedup = evoforge.open_run(folder / "unique.rejects.jsonl").rejected
    assert len(dedup) == len(read_jsonl(folder / "unique.rejects.jsonl")) > 0
    assert dedup.lost_to.notna().all() and set(dedup.reason) == {"duplicate"}


def test_kept_funnel_and_reasons_match_the_files(run):
    folder, summary = run
    view = evoforge.open_run(folder)  # the folder's one generation output
    assert view.out == folder / "evolved.jsonl"
    kept = read_jsonl(folder / "evolved.jsonl")
    assert view.kept.id.tolist() == [r["id"] for r in kept]
    assert view.kept.lineage.tolist() == [r["lineage"] for r in kept]
    manifest = json.loads((folder / "evolved.manifest.json").read_text())
    assert view.manifest == manifest
    funnel = view.funnel()
    assert list(funnel.columns) == list(FUNNEL_COLUMNS)
    assert funnel.to_dict("records") == [
        {"step": name, "in": c["in"], "kept": c["kept"], "rejected": c["rejected"]}
        for name, c in manifest["steps"].items()
    ]
    reasons = view.by_reason()
    assert list(reasons.columns) == list(BY_REASON_COLUMNS)
    assert dict(zip(reasons.reason, reasons["count"], strict=True)) == summary.rejected_by_reason
    assert reasons["count"].is_monotonic_decreasing and reasons.share.sum() == pytest.approx(1)
    leak = reasons[reasons.reason == "prompt_leak"].iloc[0]
    assert leak.steps.startswith("evolver.") and leak.example_id.startswith("s3")
    assert view.to_dataset()["id"] == view.kept.id.tolist()


def test_to_pandas_gives_the_same_frames_for_the_run_just_finished(run):
    folder, summary = run
    frames, view = summary.to_pandas(), evoforge.open_run(folder / "evolved.manifest.json")
    pd.testing.assert_frame_equal(frames.kept, view.kept)
    pd.testing.assert_frame_equal(frames.rejected, view.rejected)
    pd.testing.assert_frame_equal(frames.funnel(), view.funnel())
    pd.testing.assert_frame_equal(frames.by_reason(), view.by_reason())


def test_lineage_goes_from_seed_to_final_with_prompts_models_verdicts_scores(run):
    folder, _ = run
    view = evoforge.open_run(folder / "evolved.jsonl")
    record = next(r for r in read_jsonl(folder / "best.scored.jsonl") if r["id"].endswith("/r2"))
    steps = view.lineage(record["id"])
    assert steps.step.tolist() == ["seed", *[e["op"] for e in record["lineage"]], "final"]
    middle = steps.iloc[1:-1]
    assert middle.prompt_id.tolist() == [e["prompt_id"] for e in record["lineage"]]
    assert set(middle.model) == {e["model"] for e in record["lineage"]}
    assert steps.text.iloc[0] == seed_rows()[int(record["id"][1])]["instruction"]
    assert steps.text.iloc[-2] == record["output"]  # the last answer's text
    final = steps.iloc[-1]
    assert final.scores["alpagasus"] >= 3  # the score the selection step gave it
    said = record["meta"]["evol"]["judge"]  # the equality judge's reply, with its round
    assert f"; equality judge, round 2: kept ({said})" in final.verdict
    best = {r["id"] for r in read_jsonl(folder / "best.jsonl")}
    assert best and all(view.lineage(i).verdict.iloc[-1].startswith("kept") for i in best)
    if record["id"] not in best:  # followed to its fate in the later steps
        assert final.verdict.startswith("rejected: low_score; selector.alpagasus")
    leaked = view.rejected[view.rejected.reason == "prompt_leak"].id.iloc[0]
    assert view.lineage(leaked).verdict.iloc[-1].startswith("rejected: prompt_leak")
    with pytest.raises(KeyError, match="no record 'nope'"):
        view.lineage("nope")


def test_open_run_names_what_it_cannot_open(tmp_path, run):
    folder, _ = run
    with pytest.raises(evoforge.InputError, match="no such file"):
        evoforge.open_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(evoforge.InputError, match="holds no evoforge output"):
        evoforge.open_run(tmp_path / "empty")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a", "b"):
        for suffix in (".jsonl", ".manifest.json", ".rejects.jsonl"):
            source = folder / f"evolved{suffix}"
            (two / f"{name}{suffix}").write_bytes(source.read_bytes())
    with pytest.raises(evoforge.ConfigError, match=r"2 outputs \(a.jsonl, b.jsonl\)"):
        evoforge.open_run(two)
