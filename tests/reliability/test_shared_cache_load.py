"""Shared caches under load (issue 15, item 6): four processes answer at once into one
response-cache folder. No ``database is locked``, no lost entry, and a re-run of all
four is served from the cache alone, with the hit count each run reports."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from helpers import read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability

PROCESSES = 4
# per process: half shared by all four, half its own. The 3,000 pass too (about
# 60 s on two busy cores); 1,500 keep the suite's time in bounds.
SEEDS = 1500
SHARED = SEEDS // 2


def test_four_processes_share_one_cache_folder(fake_openai, tmp_path):
    cache = tmp_path / "cache"
    seed_files = []
    for p in range(PROCESSES):
        rows = [{"id": f"shared{i:05d}", "instruction": f"Shared seed {i}"} for i in range(SHARED)]
        rows += [
            {"id": f"p{p}-{i:05d}", "instruction": f"Seed {i} of process {p}"}
            for i in range(SEEDS - SHARED)
        ]
        seed_files.append(write_jsonl(tmp_path / f"seeds{p}.jsonl", rows))
    distinct = SHARED + PROCESSES * (SEEDS - SHARED)
    env = {**os.environ, "EVOFORGE_CACHE_DIR": str(cache)}

    def run_all(round_: str) -> list[subprocess.CompletedProcess]:
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "evoforge.cli",
                    "answer",
                    "--seeds",
                    str(seeds),
                    "--out",
                    str(tmp_path / round_ / f"o{p}.jsonl"),
                    "--llm",
                    f"openai:fake-model@{fake_openai.base_url}",
                    "-q",
                    "--no-report",
                    "--concurrency",
                    "32",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )  # fmt: skip
            for p, seeds in enumerate(seed_files)
        ]
        results = []
        for process in processes:
            out, err = process.communicate(timeout=300)
            results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
        return results

    started = time.monotonic()
    first = run_all("first")
    for result in first:
        assert result.returncode == 0, result.stderr
        assert "locked" not in result.stderr and "warning" not in result.stderr, result.stderr
    # Every distinct prompt was asked at least once; the shared ones at most once per process.
    assert distinct <= fake_openai.hits <= PROCESSES * SEEDS
    conn = sqlite3.connect(cache / "llm-cache.db")
    try:
        entries = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
    finally:
        conn.close()
    assert entries == distinct, "cache entries were lost"

    hits_before = fake_openai.hits
    second = run_all("second")
    assert fake_openai.hits == hits_before, "a re-run sent requests the cache holds"
    for p, result in enumerate(second):
        assert result.returncode == 0, result.stderr
        assert "locked" not in result.stderr and "warning" not in result.stderr, result.stderr
        manifest = json.loads((tmp_path / "second" / f"o{p}.manifest.json").read_text())
        assert manifest["usage"]["answer"]["cache_hits"] == SEEDS
        assert manifest["usage"]["answer"]["calls"] == 0
        records = read_jsonl(tmp_path / "second" / f"o{p}.jsonl")
        assert records == read_jsonl(tmp_path / "first" / f"o{p}.jsonl")
    print(f"4 x {SEEDS} seeds, twice: {time.monotonic() - started:.1f} s")
