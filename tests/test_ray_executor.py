"""``--executor ray``: the same runs on a two-node Ray cluster on this machine (issue 20).

One ``ray.cluster_utils.Cluster`` (two nodes of one CPU each, a small object store)
serves the whole module: Ray's start-up is the slow part on two cores. ``make test``
installs the ``ray`` extra and sets ``EVOFORGE_REQUIRE_LOCAL=1``, so there a missing Ray
fails this module; the core lanes (``noxfile.py``, no Ray) skip it.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from evoforge import EngineOptions, EvolveOptions, RagOptions, answer, evolve, rag
from helpers import rag_responder, read_jsonl, write_jsonl

if os.environ.get("EVOFORGE_REQUIRE_LOCAL") == "1":
    import ray  # `make test` installs the dev extra, Ray included: missing, this fails
else:
    ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'evoforge[ray]'")

sys.path.insert(0, str(Path(__file__).resolve().parent / "goldens"))
from make_goldens import evolve_reply  # noqa: E402

DOCS = Path(__file__).resolve().parent.parent / "examples" / "docs"
MB = 1024**2
# The planted corpus of the dedup test: at ~60 s of test time on two shared cores;
# bench/ray_scaleout.py runs 200,000.
RAY_DEDUP_DOCS = 100_000


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    node = {"num_cpus": 1, "object_store_memory": 100 * MB}
    two_nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    two_nodes.add_node(**node)
    ray.init(address=two_nodes.address, include_dashboard=False, log_to_driver=False)
    try:
        yield two_nodes
    finally:
        ray.shutdown()
        two_nodes.shutdown()


@pytest.fixture
def ray_datasets(monkeypatch) -> list[int]:
    """How many Ray Data datasets the dedup and select paths made (one entry each)."""
    from evoforge.validators.dedup import ray_data

    made: list[int] = []
    original = ray_data._dataset

    def counted(ray_module, columns):
        made.append(1)
        return original(ray_module, columns)

    monkeypatch.setattr(ray_data, "_dataset", counted)
    return made


def engine(server, tmp_path: Path, executor: str, **overrides) -> EngineOptions:
    settings = {
        "llm": f"openai:fake-model@{server.base_url}",
        "cache_dir": str(tmp_path / f"cache-{executor.partition(':')[0]}"),
        "backoff_base": 0.01,
        "quiet": True,
        "executor": executor,
        **overrides,
    }
    return EngineOptions(**settings)


def sorted_lines(path: Path) -> list[str]:
    return sorted(path.read_text("utf-8").splitlines()) if path.exists() else []


def assert_same_outputs(local: Path, ray_out: Path) -> None:
    for suffix in ("", ".rejects"):
        want = local.with_name(local.stem + suffix + ".jsonl")
        got = ray_out.with_name(ray_out.stem + suffix + ".jsonl")
        assert sorted_lines(got) == sorted_lines(want), f"{got.name} differs from local"
    assert not ray_out.with_name(ray_out.stem + ".shards").exists()  # merged and removed


def seeds(tmp_path: Path, n: int) -> Path:
    rows = [{"id": f"s{i:03d}", "instruction": f"Explain topic {i} in {i % 4 + 2} steps."}
            for i in range(n)]  # fmt: skip
    rows.append({"id": "s001", "instruction": "A repeated id."})
    path = write_jsonl(tmp_path / "seeds.jsonl", rows)
    with open(path, "a") as fh:
        fh.write("{not json}\n")
    return path


def test_answer_evolve_and_rag_on_two_nodes_equal_the_local_run(cluster, fake_openai, tmp_path):
    """answer, evolve and rag with --executor ray write, sorted by id, the same bytes as
    --executor local: records and rejects (a repeated id and a bad row included); the
    manifest counts the same calls and says which executor ran."""
    address = f"ray:{cluster.address}"
    source = seeds(tmp_path, 24)

    fake_openai.responder = None
    runs = {
        "answer": lambda out, ex: answer(source, out, options=engine(fake_openai, tmp_path, ex)),
        "evolve": lambda out, ex: evolve(
            source, out, evolution=EvolveOptions(rounds=2),
            options=engine(fake_openai, tmp_path, ex),
        ),
        "rag": lambda out, ex: rag(
            [DOCS], out,
            rag=RagOptions(n=8, embedder="hashing", chunk_size=400, chunk_overlap=40),
            options=engine(fake_openai, tmp_path, ex),
        ),
    }  # fmt: skip
    for name, run in runs.items():
        fake_openai.responder = {
            "answer": None,
            "evolve": lambda r: evolve_reply(r.messages, r.n),
            "rag": lambda r: rag_responder(r.messages, r.n),
        }[name]
        local = run(tmp_path / name / "local.jsonl", "local")
        on_ray = run(tmp_path / name / "ray.jsonl", address)
        assert on_ray.status == local.status == "complete", name
        assert on_ray.accepted == local.accepted > 0, name
        assert_same_outputs(local.out, on_ray.out)
        calls = {op: stats["calls"] for op, stats in on_ray.usage.items()}
        assert calls == {op: stats["calls"] for op, stats in local.usage.items()}, name
        manifest = json.loads(on_ray.manifest.read_text())
        assert manifest["engine"]["executor"] == address, name
        assert "executor" not in json.loads(local.manifest.read_text())["engine"]
        assert manifest["steps"] == json.loads(local.manifest.read_text())["steps"], name


def test_a_killed_worker_costs_only_its_calls_in_flight(
    cluster, fake_openai, tmp_path, monkeypatch
):
    """SIGKILL a worker running a shard: Ray runs the shard again, which resumes from its
    journal. Exactly one record per seed, and at most N + in-flight x kills requests.
    Each shard keeps its own cache here (as on a network filesystem); the driver merges
    them into the run's cache."""
    from evoforge.engine.store import ResponseCache

    monkeypatch.setenv("EVOFORGE_SHARD_CACHE", "per-shard")
    n, concurrency = 48, 2
    source = write_jsonl(
        tmp_path / "seeds.jsonl", [{"id": f"k{i:03d}", "instruction": f"Q {i}?"} for i in range(n)]
    )
    fake_openai.latency = 0.15
    out = tmp_path / "killed.jsonl"
    folder = tmp_path / "killed.shards"
    killed: list[int] = []

    def kill_one_running_shard() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if fake_openai.hits >= 8:
                for pid_file in sorted(folder.glob("shard-*.pid")):
                    part = folder / pid_file.name.replace("shard-", "part-").replace(
                        ".pid", ".jsonl"
                    )
                    if not part.exists():
                        pid = int(pid_file.read_text())
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
                        return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_one_running_shard)
    killer.start()
    summary = answer(
        source, out, options=engine(fake_openai, tmp_path, "ray", concurrency=concurrency)
    )
    killer.join()
    assert killed, "no shard was running to kill"
    assert summary.status == "complete"
    ids = [row["id"] for row in read_jsonl(out)]
    assert sorted(ids) == [f"k{i:03d}" for i in range(n)]  # one record per seed
    assert fake_openai.hits <= n + concurrency * len(killed)
    assert fake_openai.hits > n - 1
    cache = ResponseCache(tmp_path / "cache-ray" / "llm-cache.db")
    try:
        assert len(cache) == n  # every shard's cache merged into the run's
    finally:
        cache.close()


def planted_corpus(path: Path, n: int, seed: int = 3) -> Path:
    """``n`` records: four of five fresh (60 random words), the fifth a near-duplicate
    of an earlier one (a few words replaced) or, every 50th, an exact copy."""
    import random

    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(5000)]
    texts: list[str] = []
    with open(path, "w") as fh:
        for i in range(n):
            if i % 5 == 4:
                words = rng.choice(texts).split()
                if i % 50 != 49:
                    for _ in range(rng.randrange(1, 6)):
                        words[rng.randrange(len(words))] = rng.choice(vocab)
                text = " ".join(words)
            else:
                text = " ".join(rng.choices(vocab, k=60))
            texts.append(text)
            fh.write(json.dumps({"id": f"d{i:06d}", "instruction": text, "output": ""}) + "\n")
    return path


def test_dedup_on_ray_data_equals_local(cluster, tmp_path, ray_datasets):
    """MinHash signatures as Ray Data map_batches jobs on the two nodes: kept records,
    rejects (with lost_to) and clusters are byte-identical to the local dedup's."""
    from evoforge import dedup

    source = planted_corpus(tmp_path / "corpus.jsonl", RAY_DEDUP_DOCS)
    results = {}
    for name, executor in (("local", "local"), ("ray", f"ray:{cluster.address}")):
        out = tmp_path / name / "kept.jsonl"
        out.parent.mkdir()
        results[name] = dedup(
            source, out, clusters=tmp_path / name / "clusters.jsonl", executor=executor
        )
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    for name in ("kept.jsonl", "kept.rejects.jsonl", "clusters.jsonl"):
        assert (on_ray / name).read_bytes() == (local / name).read_bytes(), name
    dropped = read_jsonl(local / "kept.rejects.jsonl")
    assert len(dropped) > RAY_DEDUP_DOCS // 10 and all(r["lost_to"] for r in dropped)
    assert len(ray_datasets) >= 2  # the signatures' windows and the pair checks


def test_a_killed_driver_is_resumed_by_running_the_command_again(cluster, fake_openai, tmp_path):
    """SIGKILL the driver (the evoforge process) mid-run: re-running the same command
    merges what the old shards journaled and runs only the rest. One record per seed;
    the calls repeated are at most those in flight in the running shards, twice over
    (the old shards' workers stop when Ray sees their driver gone)."""
    import subprocess

    n, concurrency = 40, 2
    source = write_jsonl(
        tmp_path / "seeds.jsonl", [{"id": f"r{i:03d}", "instruction": f"R {i}?"} for i in range(n)]
    )
    fake_openai.latency = 0.15
    out = tmp_path / "resumed.jsonl"
    argv = [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(source), "--out",
        str(out), "--executor", f"ray:{cluster.address}", "--concurrency", str(concurrency),
        "--llm", f"openai:fake-model@{fake_openai.base_url}", "--quiet",
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    driver = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 90
    while fake_openai.hits < 12 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.02)
    assert driver.poll() is None, "the run ended before it could be killed"
    driver.kill()
    driver.communicate()
    assert not out.exists()
    time.sleep(2.0)  # Ray stops the dead driver's tasks
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert sorted(row["id"] for row in read_jsonl(out)) == [f"r{i:03d}" for i in range(n)]
    assert n <= fake_openai.hits <= n + 2 * 2 * concurrency, fake_openai.hits


def test_semantic_dedup_embeds_on_ray_data_and_equals_local(cluster, tmp_path, ray_datasets):
    """--method semantic's embeddings as Ray Data map_batches jobs (the hashing embedder:
    a text's vector does not depend on its batch): the same kept set, rejects and
    clusters as the local run."""
    from evoforge import dedup

    source = planted_corpus(tmp_path / "corpus.jsonl", 3000, seed=5)
    for name, executor in (("local", "local"), ("ray", f"ray:{cluster.address}")):
        out = tmp_path / name / "kept.jsonl"
        out.parent.mkdir()
        dedup(source, out, method="semantic", embedder="hashing",
              clusters=tmp_path / name / "clusters.jsonl", executor=executor)  # fmt: skip
    for name in ("kept.jsonl", "kept.rejects.jsonl", "clusters.jsonl"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert read_jsonl(tmp_path / "local" / "kept.rejects.jsonl")  # it found duplicates
    assert ray_datasets  # the embeddings ran on Ray Data


def test_kcenter_selection_embeds_on_ray_data_and_equals_local(cluster, tmp_path, ray_datasets):
    """select --method kcenter --executor ray: the embeddings as Ray Data jobs (hashing
    embedder), the farthest-point loop on the driver; the same selection as local."""
    from evoforge import SelectOptions, select

    rows = [{"id": f"p{i:04d}", "kind": "instruction", "instruction": f"Task {i % 37} on "
             f"topic {i % 11} with detail {i}", "input": "", "output": f"Answer {i}."}
            for i in range(600)]  # fmt: skip
    pool = write_jsonl(tmp_path / "pool.jsonl", rows)
    for name, executor in (("local", "local"), ("ray", f"ray:{cluster.address}")):
        select(
            pool, tmp_path / name / "picked.jsonl",
            selection=SelectOptions(method="kcenter", budget=60, embedder="hashing"),
            options=EngineOptions(executor=executor, quiet=True),
        )  # fmt: skip
    for name in ("picked.jsonl", "picked.rejects.jsonl"):
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert len(read_jsonl(tmp_path / "local" / "picked.jsonl")) == 60
    assert ray_datasets  # the embeddings ran on Ray Data


def test_a_tasks_seed_groups_go_to_one_shard_each_round_robin(tmp_path):
    """rag names a sample's first chunk as its ``group_key``: the driver deals each
    group into one shard (one node-filter call per chunk, its calls close together),
    groups round-robin, each seed keeping its position; seeds without a key are dealt
    one by one as before. No Ray needed: this is the driver's dealing of the seeds."""
    import asyncio
    import pickle
    import types
    from collections import Counter

    from evoforge.engine.ray_executor import RayExecutor
    from evoforge.engine.runner import Run
    from evoforge.records import Record

    class Journal:
        def first_sighting(self, seed_id: str) -> bool:
            return True

        def is_done(self, seed_id: str) -> bool:
            return False

        def flush(self) -> None:
            pass

    # by scenario type, as rag plans them: a chunk's samples far apart
    chunks = ["a", "b", "c", "d", "e", "a", "c", "e", "a", "e", "e"]
    items = [
        Record(kind="rag", fields={"chunk_ids": [c]}, id=f"s{i}") for i, c in enumerate(chunks)
    ]

    def dealt(task: object, shards: int) -> tuple[int, list[list[tuple[int, str]]]]:
        executor = object.__new__(RayExecutor)
        executor.shards = shards
        run = types.SimpleNamespace(_stop=None, _journal=Journal(), task=task, counts=Counter())
        run._numbered = types.MethodType(Run._numbered, run)
        folder = tmp_path / f"{type(task).__name__}-{shards}"
        folder.mkdir()
        filled = asyncio.run(executor._write_inputs(run, items, folder))
        files = []
        for k in range(shards):
            got = []
            with open(folder / f"input-{k:05d}.pkl", "rb") as fh:
                while True:
                    try:
                        position, seed = pickle.load(fh)
                    except EOFError:
                        break
                    got.append((position, seed["chunk_ids"][0]))
            files.append(got)
        return filled, files

    class Grouped:
        def group_key(self, seed: Record) -> str:
            return seed["chunk_ids"][0]

    filled, files = dealt(Grouped(), 3)
    assert filled == 3
    assert files == [
        [(0, "a"), (5, "a"), (8, "a"), (3, "d")],
        [(1, "b"), (4, "e"), (7, "e"), (9, "e"), (10, "e")],
        [(2, "c"), (6, "c")],
    ]
    filled, files = dealt(Grouped(), 8)  # five groups: five shards get seeds
    assert filled == 5 and [len(f) for f in files] == [3, 1, 2, 1, 4, 0, 0, 0]
    filled, files = dealt(object(), 3)  # no key: one seed at a time, in input order
    assert filled == 3
    assert files == [[(i, chunks[i]) for i in range(k, len(chunks), 3)] for k in range(3)]
