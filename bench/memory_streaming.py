"""Memory does not grow with the input: peak RSS of `answer` over small and large seed files.

Each size runs in its own process (peak RSS is per process) with an instant
in-process model, so what is measured is the engine: reading seeds, the
journal, the cache and the final write. Prints peak RSS per size and the ratio
of the largest to the smallest; flat memory gives a ratio near 1.

    .venv/bin/python bench/memory_streaming.py [--sizes 10000 100000 400000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def child(size: int, work: Path) -> None:
    from evoforge import EngineOptions, answer
    from evoforge.testing.scripted import ScriptedChatModel

    seeds = work / f"seeds-{size}.jsonl"
    with open(seeds, "w") as fh:
        for i in range(size):
            fh.write(json.dumps({"instruction": f"Seed number {i} asks something?"}) + "\n")
    started = time.perf_counter()
    summary = answer(
        seeds,
        work / f"out-{size}.jsonl",
        options=EngineOptions(concurrency=64, quiet=True, cache_dir=str(work / f"cache-{size}")),
        model=ScriptedChatModel("A short answer to the seed.", record=False),
    )
    assert summary.accepted == size
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seeds": size, "peak_rss_mb": round(peak_mb, 1),
                      "wall_s": round(time.perf_counter() - started, 1)}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 400_000])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.work)
        return
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(size), "--work", tmp],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(result)
            print(f"{size:>8} seeds: peak RSS {result['peak_rss_mb']:.1f} MB "
                  f"({result['wall_s']:.1f} s)", flush=True)  # fmt: skip
    ratio = results[-1]["peak_rss_mb"] / results[0]["peak_rss_mb"]
    print(f"peak RSS ratio {results[-1]['seeds']:,} / {results[0]['seeds']:,} seeds: {ratio:.2f}")
    print(json.dumps({"results": results, "ratio": round(ratio, 2)}))


if __name__ == "__main__":
    main()
