"""Kept files are byte-identical to the goldens made before the step-contract redesign
(issue 12), for answer, evolve, rag, in2, dedup and select on a fixed seed with the
scripted model; rejects are equal once the keys added since are dropped; manifests are
equal but for ``timing``. Regenerate with ``python tests/goldens/make_goldens.py`` only
for a change of behaviour that is meant, and say so in CHANGELOG.md."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

GOLDENS = Path(__file__).resolve().parent / "goldens"
sys.path.insert(0, str(GOLDENS))

import make_goldens  # noqa: E402


@pytest.fixture(scope="module")
def produced(tmp_path_factory):
    """Every golden run, once, from a temporary folder with relative paths (as made)."""
    folder = tmp_path_factory.mktemp("goldens")
    mp = pytest.MonkeyPatch()
    mp.chdir(folder)
    mp.setattr(sys, "argv", list(make_goldens.ARGV))
    try:
        produced = {}
        for name, run in make_goldens.RUNS.items():
            paths = make_goldens.artifacts(run(Path(name + "-run")))
            produced[name] = {part: folder / path for part, path in paths.items()}
        return produced
    finally:
        mp.undo()


@pytest.mark.parametrize("name", list(make_goldens.RUNS))
def test_kept_records_are_byte_identical(produced, name):
    assert produced[name]["kept"].read_bytes() == (GOLDENS / name / "kept.jsonl").read_bytes()


@pytest.mark.parametrize("name", list(make_goldens.RUNS))
def test_rejects_are_equal_without_the_new_keys(produced, name):
    got = make_goldens.comparable_rejects(produced[name]["rejects"].read_text())
    want = make_goldens.comparable_rejects((GOLDENS / name / "rejects.jsonl").read_text())
    assert [row["id"] for row in got] == [row["id"] for row in want]
    assert got == want


@pytest.mark.parametrize("name", list(make_goldens.RUNS))
def test_manifests_are_equal_but_for_timing(produced, name):
    got = make_goldens.comparable_manifest(produced[name]["manifest"].read_text())
    want = make_goldens.comparable_manifest((GOLDENS / name / "manifest.json").read_text())
    assert got == want
