"""IFD scoring: records/s at batch 8 vs batch 1 on the embedded model, peak memory,
and the memory of a 100K-record streamed run.

Part 1 scores the IFD fixture's pairs (tests/fixtures/model_signals/ifd_pairs.jsonl,
short instruction/answer pairs) with SmolLM2-135M on ``--threads`` CPU threads (2),
once at batch 1 and once at batch 8, each in a fresh process so that the peak RSS is
that run's own (model included). Part 2 runs ``select --method ifd`` end to end over
10K and 100K generated records with a tiny fake loss model (the embedded model would
need hours for 100K here), each in a fresh process: the difference in peak RSS is
what the set's size costs, since only one float per record stays in memory.

    .venv/bin/python bench/ifd_scoring.py [--records N] [--threads 2] [--skip-model]
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

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "tests" / "fixtures" / "model_signals" / "ifd_pairs.jsonl"


def model_run(batch: int, records: int, threads: int) -> dict:
    """One scoring run in this process (called in a child): records/s and peak RSS."""
    import torch

    from evoforge.llm.losses import LocalLossModel

    torch.set_num_threads(threads)
    rows = [json.loads(line) for line in PAIRS.read_text("utf-8").splitlines()]
    pairs = [(r["instruction"], r["output"]) for r in rows]
    pairs = (pairs * (records // len(pairs) + 1))[:records]
    model = LocalLossModel(batch_size=batch)
    model._load()
    model.pair_losses(pairs[:2], max_answer_tokens=512)  # warm-up
    started = time.perf_counter()
    model.pair_losses(pairs, max_answer_tokens=512)
    seconds = time.perf_counter() - started
    return {
        "batch": batch,
        "records": records,
        "seconds": round(seconds, 2),
        "records_per_s": round(records / seconds, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


class TinyLosses:
    """A loss model with no weights: a few arithmetic operations per pair."""

    identity = "bench-tiny"
    batch_size = 64

    def __init__(self) -> None:
        self.forward_passes = 0

    def pair_losses(self, pairs, *, max_answer_tokens):
        from evoforge.llm.loss_base import PairLoss

        self.forward_passes += 1
        return [PairLoss(1.0 + len(i) % 7 / 10, 2.0, len(a)) for i, a in pairs]

    def greedy(self, prompts, *, max_new_tokens, chat=True):
        return ["" for _ in prompts]


def stream_run(records: int, folder: str) -> dict:
    """``select --method ifd`` over ``records`` generated records, fake model."""
    import asyncio

    from evoforge.commands.select_signals import select_signal_async
    from evoforge.options import EngineOptions, SelectOptions

    source = Path(folder) / f"in-{records}.jsonl"
    with open(source, "w", encoding="utf-8") as fh:
        for i in range(records):
            fh.write(json.dumps({"id": f"r{i}", "kind": "instruction",
                                 "instruction": f"Explain item {i} in a sentence.",
                                 "output": f"Item {i} is one of many items, described here."})
                     + "\n")  # fmt: skip
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    report = asyncio.run(select_signal_async(
        source, Path(folder) / f"out-{records}.jsonl",
        selection=SelectOptions(method="ifd", budget=records // 10),
        options=EngineOptions(quiet=True, cache=False), loss_model=TinyLosses(),
    ))  # fmt: skip
    seconds = time.perf_counter() - started
    return {
        "records": records,
        "selected": report["selected"],
        "seconds": round(seconds, 1),
        "rss_before_mb": round(base, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], check=True,
                         capture_output=True, text=True, cwd=ROOT)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=64, help="pairs scored per model run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-model", action="store_true")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        if kind == "model":
            print(json.dumps(model_run(int(rest[0]), int(rest[1]), int(rest[2]))))
        else:
            print(json.dumps(stream_run(int(rest[0]), rest[1])))
        return
    if not args.skip_model:
        print(f"IFD on SmolLM2-135M, {args.records} pairs, {args.threads} threads")
        runs = [child("model", str(b), str(args.records), str(args.threads)) for b in (1, 8)]
        for run in runs:
            print(f"  batch {run['batch']}: {run['records_per_s']} records/s "
                  f"({run['seconds']} s), peak RSS {run['peak_rss_mb']} MB")  # fmt: skip
        print(f"  batch 8 / batch 1: {runs[1]['records_per_s'] / runs[0]['records_per_s']:.2f}x")
    with tempfile.TemporaryDirectory() as folder:
        print("select --method ifd, streamed, tiny fake loss model (no weights)")
        runs = [child("stream", str(n), folder) for n in (10_000, 100_000)]
        for run in runs:
            print(f"  {run['records']:>7} records: {run['seconds']} s, peak RSS "
                  f"{run['peak_rss_mb']} MB (at start {run['rss_before_mb']} MB)")  # fmt: skip
        grow = (runs[1]["peak_rss_mb"] - runs[0]["peak_rss_mb"]) * 1024 * 1024 / 90_000
        print(f"  peak RSS growth per extra record: {grow:.0f} bytes")


if __name__ == "__main__":
    main()
