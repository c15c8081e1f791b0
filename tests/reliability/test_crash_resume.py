"""Crash and resume: SIGKILL at random points, torn journals, kills during the final
write, and SIGINT/SIGTERM. Every test drives the real CLI in a subprocess against the
fake OpenAI server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evoforge.records import schema_error
from evoforge.testing.fake_openai import Reply
from helpers import read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability


def answer_args(seeds: Path, out: Path, server, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds), "--out", str(out),
        "--llm", f"openai:fake-model@{server.base_url}", "--quiet", *extra,
    ]  # fmt: skip


def wait_for(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.005)


def journal_ids(journal: Path) -> set[str]:
    """Seed ids a journal holds, read from a copy so the original stays untouched."""
    copy_dir = journal.parent / f"copy-{time.monotonic_ns()}"
    copy_dir.mkdir()
    for suffix in ("", "-wal"):
        source = Path(f"{journal}{suffix}")
        if source.exists():
            shutil.copyfile(source, copy_dir / f"j.db{suffix}")
    conn = sqlite3.connect(copy_dir / "j.db")
    try:
        return {row[0] for row in conn.execute("SELECT seed_id FROM seeds")}
    finally:
        conn.close()
        shutil.rmtree(copy_dir)


def assert_one_valid_record_per_seed(out: Path, n: int) -> list[dict]:
    records = read_jsonl(out)
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "duplicate records"
    assert sorted(ids) == [f"s{i:05d}" for i in range(n)]
    for record in records:
        assert schema_error(record, "instruction") is None
        assert record["output"] == f"ANSWER: Seed {int(record['id'][1:])}"
    return records


def test_sigkill_at_20_random_points_then_resume_gives_one_record_per_seed(fake_openai, tmp_path):
    """2,000 seeds, the CLI killed with SIGKILL 20 times at random points (by server
    hit count), resumed each time: one valid record per seed, no duplicates, and at most
    the in-flight requests of each kill are paid twice."""
    n, concurrency, kills = 2000, 8, 20
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": f"s{i:05d}", "instruction": f"Seed {i}"} for i in range(n)],
    )
    out = tmp_path / "out" / "answers.jsonl"
    args = answer_args(seeds, out, fake_openai, "--concurrency", str(concurrency))
    fake_openai.latency = 0.004
    rng = random.Random(7)
    points = sorted(rng.sample(range(20, n - 100), kills))
    killed = 0
    for point in points:
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda p=point, proc=process: fake_openai.hits >= p or proc.poll() is not None)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, "the run ended before its kill point"
        killed += 1
        assert not out.exists(), "nothing is presented as output before the run completes"
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert killed == kills
    assert_one_valid_record_per_seed(out, n)
    assert fake_openai.hits <= n + concurrency * kills, fake_openai.hits
    manifest = json.loads(out.with_name("answers.manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["counts"]["accepted"] == n


def killed_run(tmp_path: Path, server, n: int, kill_at: int) -> tuple[list[str], Path]:
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": f"s{i:05d}", "instruction": f"Seed {i}"} for i in range(n)],
    )
    out = tmp_path / "out.jsonl"
    # No cache: every seed the journal forgot would be paid again, so hits show losses.
    args = answer_args(seeds, out, server, "--concurrency", "4", "--no-cache")
    server.latency = 0.005
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: server.hits >= kill_at or process.poll() is not None)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    server.latency = 0.0
    return args, out


def wal_frames(wal: Path) -> tuple[int, int]:
    """(page size, number of whole frames) of a SQLite WAL file."""
    data = wal.read_bytes()
    page_size = int.from_bytes(data[8:12], "big")
    return page_size, (len(data) - 32) // (24 + page_size)


@pytest.mark.parametrize("damage", ["torn_wal", "garbage_after_wal", "garbage_after_db"])
def test_a_torn_or_padded_journal_resumes_keeping_every_committed_seed(
    fake_openai, tmp_path, damage
):
    """The journal is SQLite in WAL mode: a WAL cut mid-frame, or garbage after the WAL
    or the database, loses at most the torn transaction; every seed still readable is
    kept (not asked again), and the resumed run completes with one record per seed."""
    n = 300
    args, out = killed_run(tmp_path, fake_openai, n, kill_at=150)
    journal = out.with_name("out.journal.db")
    wal = Path(f"{journal}-wal")
    assert wal.exists() and wal.stat().st_size > 32, "a kill -9 leaves the WAL behind"
    before = journal_ids(journal)
    assert before
    if damage == "torn_wal":
        page_size, frames = wal_frames(wal)
        with open(wal, "r+b") as fh:  # cut the last frame in half
            fh.truncate(32 + (frames - 1) * (24 + page_size) + 24 + page_size // 2)
    elif damage == "garbage_after_wal":
        with open(wal, "ab") as fh:
            fh.write(os.urandom(5000))
    else:
        with open(journal, "ab") as fh:
            fh.write(b"\x00garbage\xff" * 700)
    readable = journal_ids(journal)
    assert readable <= before
    # Only the last transaction can go: a group commit holds a few seeds at most.
    assert len(readable) >= len(before) - 16, (len(before), len(readable))

    hits = fake_openai.hits
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert_one_valid_record_per_seed(out, n)
    assert fake_openai.hits - hits == n - len(readable), "a readable seed was asked again"


def test_a_journal_that_is_not_a_database_is_moved_aside_and_the_run_recovers(
    fake_openai, tmp_path
):
    """A journal overwritten with junk cannot be read: it is moved aside (never deleted),
    the message says where, and the re-run rebuilds the output from the response cache
    without paying for the finished seeds again."""
    n = 40
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": f"s{i:05d}", "instruction": f"Seed {i}"} for i in range(n)],
    )
    out = tmp_path / "out.jsonl"
    args = answer_args(seeds, out, fake_openai)
    assert subprocess.run(args, capture_output=True, timeout=120).returncode == 0
    journal = out.with_name("out.journal.db")
    journal.write_bytes(b"this is not a database\n" * 200)
    hits = fake_openai.hits
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "moved aside" in result.stderr
    aside = list(tmp_path.glob("out.journal.db.broken-*"))
    assert len(aside) == 1 and aside[0].read_bytes().startswith(b"this is not a database")
    assert fake_openai.hits == hits, "finished work came back from the cache"
    assert_one_valid_record_per_seed(out, n)


def test_a_kill_during_the_final_write_leaves_the_old_or_the_new_file(fake_openai, tmp_path):
    """EVOFORGE_TEST_SLOW_WRITE slows the final write line by line. A SIGKILL while the
    output and rejects are written leaves all three old files; one while the manifest is
    written leaves the new output and rejects (whole) and the old manifest; never a
    partial file, and the re-run cleans up the temporaries."""
    rows = [{"id": f"s{i:05d}", "instruction": f"Seed {i}"} for i in range(30)]
    seeds = tmp_path / "seeds.jsonl"
    out = tmp_path / "out.jsonl"
    files = [out, tmp_path / "out.rejects.jsonl", tmp_path / "out.manifest.json"]
    args = answer_args(seeds, out, fake_openai)
    write_jsonl(seeds, rows)
    seeds.write_text(seeds.read_text() + "{not json}\n")
    assert subprocess.run(args, capture_output=True, timeout=120).returncode == 0
    old = [f.read_bytes() for f in files]
    # A different run into the same place: one more seed and one more bad row.
    write_jsonl(seeds, [*rows, {"id": "s99999", "instruction": "Seed 99999"}])
    seeds.write_text(seeds.read_text() + "{not json}\n[1]\n")
    env = {**os.environ, "EVOFORGE_TEST_SLOW_WRITE": "0.05"}

    def kill_while_writing(name: str) -> None:
        process = subprocess.Popen(
            [*args, "--overwrite"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=env,
        )  # fmt: skip
        wait_for(lambda: any(tmp_path.glob(f".{name}.tmp-*")) or process.poll() is not None)
        time.sleep(0.1)  # some lines are in the temporary file now
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, "the write finished before the kill"

    kill_while_writing("out.jsonl")
    assert [f.read_bytes() for f in files] == old
    kill_while_writing("out.manifest.json")
    new_out, new_rejects = out.read_bytes(), files[1].read_bytes()
    assert files[2].read_bytes() == old[2]
    assert len(read_jsonl(out)) == 31 and len(read_jsonl(files[1])) == 2
    # The re-run finishes the job: the same new output, and a new manifest.
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (out.read_bytes(), files[1].read_bytes()) == (new_out, new_rejects)
    assert json.loads(files[2].read_text())["counts"]["accepted"] == 31
    assert not list(tmp_path.glob(".*.tmp-*")), "the killed runs' temporary files are cleaned up"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_drain_in_flight_requests_and_say_how_to_resume(
    fake_openai, tmp_path, sig
):
    """The first signal stops new work, lets the requests in flight finish (bounded),
    commits them and exits 130 with the resume command; the re-run pays for nothing
    twice."""
    n, concurrency = 60, 4
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": f"s{i:05d}", "instruction": f"Seed {i}"} for i in range(n)],
    )
    out = tmp_path / "out.jsonl"
    args = answer_args(seeds, out, fake_openai, "--concurrency", str(concurrency))
    fake_openai.latency = 0.3
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: fake_openai.hits >= 10)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "re-run the same command to resume" in stderr
    hits_at_stop = fake_openai.hits
    kept = read_jsonl(out)
    # Everything sent before the signal finished and was kept: nothing was thrown away.
    assert len(kept) == hits_at_stop
    manifest = json.loads(out.with_name("out.manifest.json").read_text())
    assert manifest["status"] == "stopped" and manifest["stop_reason"] == "interrupted"

    fake_openai.latency = 0.0
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert_one_valid_record_per_seed(out, n)
    assert fake_openai.hits == n, "no request was paid twice"


@pytest.mark.parametrize("how", ["drain_limit", "second_signal"])
def test_a_hung_server_cannot_stall_the_stop(fake_openai, tmp_path, how):
    """The drain is bounded: with a server that never answers, SIGTERM still ends the
    run after EVOFORGE_DRAIN_SECONDS, or at once on a second signal, with everything
    finished before it kept."""
    n = 20
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": f"s{i:05d}", "instruction": f"Seed {i}"} for i in range(n)],
    )
    out = tmp_path / "out.jsonl"
    args = answer_args(seeds, out, fake_openai, "--concurrency", "2")

    def hang_after_five(request):
        return Reply(content="never", delay=120) if request.n > 5 else None

    fake_openai.responder = hang_after_five
    drain = "1" if how == "drain_limit" else "120"
    env = {**os.environ, "EVOFORGE_DRAIN_SECONDS": drain}
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    wait_for(lambda: fake_openai.hits >= 7)
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    if how == "second_signal":
        time.sleep(0.5)
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert time.monotonic() - started < 10
    assert process.returncode == 130, stderr
    assert "waiting up to" in stderr and "re-run the same command to resume" in stderr
    assert len(read_jsonl(out)) == 5


def test_a_killed_and_resumed_evolve_writes_the_same_bytes_as_an_uninterrupted_one(
    fake_openai, tmp_path
):
    """Evolve chains several calls per seed (two rounds, then answers). SIGKILLed three
    times mid-run and resumed, it writes byte for byte what an uninterrupted run writes,
    paying again for at most the requests in flight at each kill."""
    concurrency, kills = 8, 3
    rows = [
        {"id": f"e{i:03d}", "instruction": f"Describe process {i} in detail."} for i in range(120)
    ]
    jitter = random.Random(3)
    fake_openai.responder = lambda request: Reply(delay=jitter.uniform(0, 0.01))

    def command(folder: Path) -> tuple[list[str], dict]:
        folder.mkdir()
        seeds = write_jsonl(folder / "seeds.jsonl", rows)
        args = [
            sys.executable, "-m", "evoforge.cli", "evolve", "--seeds", str(seeds),
            "--out", str(folder / "out.jsonl"), "--rounds", "2", "--answers", "--no-judge",
            "--llm", f"openai:fake-model@{fake_openai.base_url}", "--seed", "3",
            "--concurrency", str(concurrency), "--quiet",
        ]  # fmt: skip
        return args, {**os.environ, "EVOFORGE_CACHE_DIR": str(folder / "cache")}

    args, env = command(tmp_path / "reference")
    assert subprocess.run(args, capture_output=True, env=env, timeout=180).returncode == 0
    reference_hits = fake_openai.hits

    args, env = command(tmp_path / "crashed")
    start = fake_openai.hits
    for point in (reference_hits // 6, reference_hits // 2, reference_hits * 5 // 6):
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        wait_for(
            lambda p=point, proc=process: fake_openai.hits - start >= p or proc.poll() is not None
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, "the run ended before its kill point"
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr
    for name in ("out.jsonl", "out.rejects.jsonl"):
        expected = (tmp_path / "reference" / name).read_bytes()
        assert (tmp_path / "crashed" / name).read_bytes() == expected, name
    assert fake_openai.hits - start <= reference_hits + concurrency * kills


def test_a_killed_and_resumed_run_counts_its_steps_and_reports_as_an_uninterrupted_one(
    fake_openai, tmp_path
):
    """Each step's counts (seeds in, kept, rejected by reason) persist in the journal: an
    evolve SIGKILLed twice and resumed writes the same manifest ``steps`` as an
    uninterrupted one, and its report shows the same funnel and the same seed fates."""
    from evoforge.report.data import discover_stages
    from evoforge.report.trace import Lineage

    rows = [{"id": f"e{i:03d}", "instruction": f"Explain step {i} carefully."} for i in range(80)]
    rows += [rows[3]]  # a repeated id: rejected at the input step
    jitter = random.Random(5)
    fake_openai.responder = lambda request: Reply(delay=jitter.uniform(0, 0.01))

    def command(folder: Path) -> tuple[list[str], dict]:
        folder.mkdir()
        seeds = write_jsonl(folder / "seeds.jsonl", rows)
        seeds.write_text(seeds.read_text() + "{not json}\n")  # a bad row, also the input's
        args = [
            sys.executable, "-m", "evoforge.cli", "evolve", "--seeds", str(seeds),
            "--out", str(folder / "out.jsonl"), "--rounds", "2", "--no-judge",
            "--llm", f"openai:fake-model@{fake_openai.base_url}", "--seed", "5",
            "--concurrency", "4", "--quiet",
        ]  # fmt: skip
        return args, {**os.environ, "EVOFORGE_CACHE_DIR": str(folder / "cache")}

    args, env = command(tmp_path / "reference")
    assert subprocess.run(args, capture_output=True, env=env, timeout=180).returncode == 0
    reference_hits = fake_openai.hits

    args, env = command(tmp_path / "crashed")
    start = fake_openai.hits
    for point in (reference_hits // 3, reference_hits * 2 // 3):
        process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
        )
        wait_for(
            lambda p=point, proc=process: fake_openai.hits - start >= p or proc.poll() is not None
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert process.returncode == -signal.SIGKILL, "the run ended before its kill point"
    result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=180)
    assert result.returncode == 0, result.stderr

    def outcome(folder: Path) -> tuple[dict, list, list]:
        manifest = json.loads((folder / "out.manifest.json").read_text())
        lineage = Lineage(discover_stages(folder / "out.jsonl"))
        (chain,) = lineage.chains
        return manifest, lineage.funnel(chain), lineage.seed_rows(chain)

    reference, crashed = outcome(tmp_path / "reference"), outcome(tmp_path / "crashed")
    assert crashed[0]["counts"]["resumed_seeds"] > 0, "the last run resumed"
    assert crashed[0]["steps"] == reference[0]["steps"]
    steps = reference[0]["steps"]
    assert steps["input"] == {
        "in": 82, "kept": 80, "rejected": 2,
        "rejected_by_reason": {"duplicate_id": 1, "bad_seed": 1},
    }  # fmt: skip
    assert steps["evolve"]["in"] == 80 and steps["schema"]["in"] == steps["evolve"]["kept"]
    assert steps["schema"]["kept"] == reference[0]["counts"]["accepted"]
    assert crashed[1:] == reference[1:]
    assert reference[1][0] == ("seeds", 82)
