"""Local against Ray on this machine: `answer` throughput and dedup docs/s (issue 20).

Two figures each for `--executor local` and `--executor ray`:

- answer: N seeds (default 2,000) against the fake OpenAI server (its own process,
  50 ms per reply) at concurrency 64 per shard; wall time and requests/s;
- dedup: a planted corpus (default 200,000 records, a fifth near or exact copies)
  with exact + minhash; wall time and docs/s, the outputs checked byte-identical.

Ray runs on a cluster it starts on this machine (num_cpus = the machine's, a 256 MB
object store), so its start-up is reported apart from the runs. On two cores Ray
cannot win: the driver, the workers, the raylet and the fake server share them. The
figures state what Ray costs, and bench/README.md says what changes on a real cluster.

    .venv/bin/python bench/ray_scaleout.py [--n 2000] [--docs 200000] [--latency 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from evoforge import EngineOptions, answer, dedup  # noqa: E402


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "evoforge.testing.fake_openai", "--port", "0",
            "--latency", str(latency), "--no-record", "--max-seconds", "1800",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise SystemExit(f"fake server did not start: {line!r}")
    return process, line.split(" ", 1)[1]


def planted_corpus(path: Path, n: int, seed: int = 3) -> Path:
    """Four of five records fresh (60 random words), the fifth a near-duplicate of an
    earlier one (1-5 words replaced) or, every 50th, an exact copy."""
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
            fh.write(json.dumps({"id": f"d{i:07d}", "instruction": text, "output": ""}) + "\n")
    return path


def answer_run(n: int, base_url: str, work: Path, executor: str, concurrency: int) -> dict:
    seeds = work / f"seeds-{executor}.jsonl"
    with open(seeds, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"q{i:06d}", "instruction": f"Bench {executor} {i}?"}))
            fh.write("\n")
    options = EngineOptions(
        llm=f"openai:fake-model@{base_url}",
        concurrency=concurrency,
        cache_dir=str(work / f"cache-{executor}"),
        executor=executor,
        quiet=True,
    )
    wall0 = time.perf_counter()
    summary = answer(seeds, work / f"out-{executor}.jsonl", options=options)
    wall = time.perf_counter() - wall0
    assert summary.accepted == n, summary.rejected_by_reason
    return {"executor": executor, "n": n, "wall_s": round(wall, 2), "req_per_s": round(n / wall)}


def dedup_run(corpus: Path, work: Path, executor: str, docs: int) -> dict:
    out = work / f"dedup-{executor}" / "kept.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    wall0 = time.perf_counter()
    dedup(corpus, out, clusters=out.with_name("clusters.jsonl"), executor=executor)
    wall = time.perf_counter() - wall0
    return {"executor": executor, "docs": docs, "wall_s": round(wall, 2),
            "docs_per_s": round(docs / wall)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="answer seeds")
    parser.add_argument("--docs", type=int, default=200_000, help="dedup records")
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    import ray

    t0 = time.perf_counter()
    ray.init(
        num_cpus=os.cpu_count(), object_store_memory=256 * 1024**2, include_dashboard=False,
        log_to_driver=False,
    )  # fmt: skip
    startup = time.perf_counter() - t0
    print(f"ray start-up (a local cluster): {startup:.2f} s", flush=True)
    server, base_url = start_server(args.latency)
    results: dict = {"cpus": os.cpu_count(), "ray_startup_s": round(startup, 2)}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            ideal = args.n * args.latency / args.concurrency
            for executor in ("local", "ray"):
                row = answer_run(args.n, base_url, work, executor, args.concurrency)
                results[f"answer_{executor}"] = row
                print(f"answer {executor:>5}: {row['wall_s']:.2f} s, {row['req_per_s']} req/s "
                      f"(one engine's ideal {ideal:.2f} s)", flush=True)  # fmt: skip
            corpus = planted_corpus(work / "corpus.jsonl", args.docs)
            for executor in ("local", "ray"):
                row = dedup_run(corpus, work, executor, args.docs)
                results[f"dedup_{executor}"] = row
                print(f"dedup  {executor:>5}: {row['wall_s']:.2f} s, {row['docs_per_s']} docs/s",
                      flush=True)  # fmt: skip
            same = all(
                (work / "dedup-ray" / name).read_bytes()
                == (work / "dedup-local" / name).read_bytes()
                for name in ("kept.jsonl", "kept.rejects.jsonl", "clusters.jsonl")
            )
            results["dedup_identical"] = same
            print(f"dedup outputs byte-identical: {same}")
    finally:
        server.terminate()
        server.wait(timeout=10)
        ray.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
