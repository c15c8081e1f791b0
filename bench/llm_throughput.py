"""Throughput of `evoforge answer` against a local OpenAI-compatible server.

N requests (default 5,000), each answered after a fixed latency (50 ms), at
concurrency 64 and 256, for both transports of the openai backend (the lean
aiohttp one, the default, and the official SDK). The server runs in its own process, so the client's
CPU time (time.process_time of this process) is the engine's cost alone:
template rendering, cache lookups and writes, the SDK and HTTP, journaling,
schema validation and the final output write.

Prints, per concurrency: wall time, the ideal (N x latency / concurrency), the
ratio of the two, and client CPU ms per request. Targets: <= 1.3x ideal at 64,
<= 2 ms client CPU per request.

    .venv/bin/python bench/llm_throughput.py [--n 5000] [--latency 0.05] [--concurrency 64 256]
        [--servers 3]   # spread over 3 fake servers (the server pool of issue 20)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from evoforge import EngineOptions, answer


def start_server(latency: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [
            sys.executable, "-m", "evoforge.testing.fake_openai", "--port", "0",
            "--latency", str(latency), "--no-record", "--max-seconds", "900",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    line = process.stdout.readline().strip()
    if not line.startswith("READY "):
        process.kill()
        raise SystemExit(f"fake server did not start: {line!r}")
    return process, line.split(" ", 1)[1]


def run_once(
    n: int, concurrency: int, latency: float, base_url: str, work: Path, transport: str = "http"
) -> dict:
    seeds = work / f"seeds-{transport}-{concurrency}.jsonl"
    with open(seeds, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"instruction": f"Bench {transport} {concurrency}-{i}?"}) + "\n")
    options = EngineOptions(
        llm=f"openai:fake-model@{base_url}",
        llm_args={"transport": transport},
        concurrency=concurrency,
        cache_dir=str(work / f"cache-{transport}-{concurrency}"),
        quiet=True,
    )
    cpu0, wall0 = time.process_time(), time.perf_counter()
    summary = answer(seeds, work / f"out-{transport}-{concurrency}.jsonl", options=options)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    assert summary.accepted == n, summary.rejected_by_reason
    ideal = n * latency / concurrency
    return {
        "transport": transport,
        "concurrency": concurrency,
        "n": n,
        "wall_s": round(wall, 2),
        "ideal_s": round(ideal, 2),
        "ratio": round(wall / ideal, 2),
        "cpu_ms_per_request": round(cpu * 1000 / n, 3),
        "requests_per_s": round(n / wall),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256])
    parser.add_argument(
        "--servers", type=int, default=1,
        help="fake servers to spread over (openai:MODEL@URL1,URL2,...; default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--transport", nargs="+", default=["http", "sdk"], choices=["http", "sdk"],
        help="openai backend transports to measure (default: both)",
    )  # fmt: skip
    args = parser.parse_args()
    started = [start_server(args.latency) for _ in range(max(1, args.servers))]
    base_url = ",".join(url for _, url in started)
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for transport in args.transport:
                for concurrency in args.concurrency:
                    result = run_once(
                        args.n, concurrency, args.latency, base_url, Path(tmp), transport
                    )
                    results.append(result)
                    print(
                        f"{transport:>4} transport, {args.servers} server(s), "
                        f"concurrency {concurrency:>4}: "
                        f"{result['wall_s']:.2f} s wall, ideal "
                        f"{result['ideal_s']:.2f} s -> {result['ratio']:.2f}x ideal; "
                        f"client CPU {result['cpu_ms_per_request']:.3f} ms/request; "
                        f"{result['requests_per_s']} req/s",
                        flush=True,
                    )
    finally:
        for server, _ in started:
            server.terminate()
            server.wait(timeout=10)
    print(json.dumps({"cpus": os.cpu_count(), "results": results}))


if __name__ == "__main__":
    main()
