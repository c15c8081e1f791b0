"""A full disk (issue 15, item 4): a write that fails while writing the outputs, the
journal or the cache stops the run with exit 3 and one line saying what to free;
nothing already written is lost or half-written, and the same command resumes to the
complete result. Three ways to fill a disk: the writer's test hook
(``EVOFORGE_TEST_FAIL_WRITE``), a real small tmpfs (where the tests may mount one)
and a file-size limit (``ulimit -f``)."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability


def seed_rows(n: int, *, bad: bool = False) -> list[dict]:
    rows = [{"id": f"s{i:05d}", "instruction": f"Seed {i} " + "x" * 60} for i in range(n)]
    if bad:  # a seed without an instruction: a reject, so the rejects file has lines
        rows.insert(n // 2, {"id": "bad", "prompt": "no instruction"})
    return rows


def answer(seeds: Path, out: Path, server, *extra: str, env: dict | None = None, **kwargs):
    args = [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds), "--out", str(out),
        "--llm", f"openai:fake-model@{server.base_url}", "-q", "--no-report", "--no-cache",
        *extra,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **(env or {})}, **kwargs)  # fmt: skip


def assert_one_line_exit_3(result, path: Path, what: str) -> str:
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    line = lines[0]
    assert f"could not write {path} ({what})" in line, line
    assert "run the same command again to resume" in line, line
    return line


def files_beside(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in out.parent.iterdir() if p.name.startswith("o.")
            and not p.name.startswith("o.journal")}  # fmt: skip


TARGETS = {"o.jsonl": "the output", "o.rejects.jsonl": "the rejects",
           "o.manifest.json": "the manifest"}  # fmt: skip


def test_a_full_disk_in_the_final_write_loses_nothing_and_resumes(fake_openai, tmp_path):
    """A complete run, then the same run from the start (--overwrite) on a disk that
    fills 200 bytes into the output, the rejects or the manifest: each stops with exit
    3 and the files of the complete run stay as they were; then the same command
    resumes from the journal without paying again."""
    n = 40
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(n, bad=True))
    out = tmp_path / "run" / "o.jsonl"
    assert answer(seeds, out, fake_openai).returncode == 0
    before = files_beside(out)
    assert set(before) == set(TARGETS)
    for target, what in TARGETS.items():
        failed = answer(seeds, out, fake_openai, "--overwrite",
                        env={"EVOFORGE_TEST_FAIL_WRITE": f"{target}:200"})  # fmt: skip
        line = assert_one_line_exit_3(failed, out.with_name(target), what)
        assert "no space left on the device" in line and "free" in line, line
        assert files_beside(out) == before, f"{target}: a file written before changed"
        assert not list(out.parent.glob(".*.tmp-*")), "a half-written temporary was left"
    hits = fake_openai.hits
    assert hits == (1 + len(TARGETS)) * n
    resumed = answer(seeds, out, fake_openai)
    assert resumed.returncode == 0, resumed.stderr
    assert fake_openai.hits == hits, "the resumed run paid again for finished seeds"
    after = files_beside(out)
    assert after["o.jsonl"] == before["o.jsonl"]
    assert after["o.rejects.jsonl"] == before["o.rejects.jsonl"]
    manifest = json.loads(after["o.manifest.json"])
    assert manifest["status"] == "complete" and manifest["counts"]["resumed_seeds"] == n + 1


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True)  # fmt: skip
    return done.returncode == 0


@pytest.mark.parametrize("full", ["journal", "cache"])
def test_a_real_full_disk_stops_with_exit_3_and_resumes(fake_openai, tmp_path, full):
    """A 96 KiB tmpfs holds the run folder (or the response cache), and fills up
    mid-run: exit 3 naming the file; grown to 16 MiB, the same command finishes."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "96k"):
        pytest.skip("mounting a tmpfs needs root (the test hook variant runs everywhere)")
    try:
        n = 800
        seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(n))
        if full == "journal":
            out, cache, extra = disk / "o.jsonl", None, ()
            env = {}
        else:
            out, cache = tmp_path / "run" / "o.jsonl", disk / "cache"
            env, extra = {"EVOFORGE_CACHE_DIR": str(cache)}, ()
        args = [sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds),
                "--out", str(out), "--llm", f"openai:fake-model@{fake_openai.base_url}",
                "-q", "--no-report", *extra]  # fmt: skip
        environ = {**os.environ, **env}
        failed = subprocess.run(args, capture_output=True, text=True, timeout=300, env=environ)
        if full == "journal":
            assert_one_line_exit_3(failed, out.with_name("o.journal.db"), "the run journal")
        else:
            assert_one_line_exit_3(failed, cache / "llm-cache.db", "the response cache")
        assert "no space left on the device" in failed.stderr
        assert not out.exists()
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        resumed = subprocess.run(args, capture_output=True, text=True, timeout=300, env=environ)
        assert resumed.returncode == 0, resumed.stderr
        assert [r["id"] for r in read_jsonl(out)] == [f"s{i:05d}" for i in range(n)]
        # Only what was in flight or in the failed commit is paid twice.
        assert fake_openai.hits < n + 100, fake_openai.hits
    finally:
        subprocess.run(["umount", str(disk)], capture_output=True)


def test_a_file_size_limit_on_the_journal_stops_with_exit_3_and_resumes(fake_openai, tmp_path):
    """``ulimit -f`` (any user can set it): the journal's write fails as on a full disk."""
    n = 800
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(n))
    out = tmp_path / "o.jsonl"

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (48 * 1024, resource.RLIM_INFINITY))

    failed = answer(seeds, out, fake_openai, preexec_fn=limited)
    line = assert_one_line_exit_3(failed, out.with_name("o.journal.db"), "the run journal")
    assert "Traceback" not in line and not out.exists()
    resumed = answer(seeds, out, fake_openai)
    assert resumed.returncode == 0, resumed.stderr
    assert [r["id"] for r in read_jsonl(out)] == [f"s{i:05d}" for i in range(n)]
    assert fake_openai.hits < n + 100, fake_openai.hits
