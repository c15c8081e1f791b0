"""Near-duplicate dedup: accuracy against planted pairs, speed against datasketch, memory.

The corpus: ``--docs`` documents of about 100 tokens (half English-like words from a
20,000-word vocabulary, half Chinese from 3,000 characters), of which 20% are
near-duplicates planted at Jaccard (of shingles) about 0.5, 0.7, 0.8 or 0.9 to a
base document (contiguous tail replacement). The truth is every pair whose true
shingle Jaccard is >= the threshold. Prints pairwise precision / recall / F1 of ours
and of datasketch's MinHash + MinHashLSH (its candidates verified by the same true
Jaccard), signature throughput side by side (ours from the normalised text, shingling
included; datasketch's ``update_batch`` from ready-made encoded shingles, shingling
excluded; best of ``--repeat`` interleaved runs, as the machine is shared), the
candidate rate per planted level against the theoretical S-curve, and union-find
seconds over 1M random edges.

``--records N`` instead writes an N-record JSONL corpus of the same kind to disk and
runs ``dedup_jsonl`` on it in a child process, reporting wall time and the child's
peak RSS (``ru_maxrss``; worker processes' peak separately with ``--shards``).

    .venv/bin/python bench/dedup.py [--docs 20000] [--threshold 0.7] [--num-perm 128]
    .venv/bin/python bench/dedup.py --records 1000000 [--shards 2] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from evoforge.validators.dedup import (
    RECALL_WEIGHT,
    MinHasher,
    NearDuplicateGraph,
    band_keys,
    candidate_probability,
    connected_components,
    dedup_jsonl,
    lsh_params,
    normalise,
    shingles,
)

LEVELS = (0.5, 0.7, 0.8, 0.9)
VOCAB = [f"word{i}" for i in range(20000)]
HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def _documents(
    n_docs: int, rng: random.Random, recent: int | None = None
) -> Iterator[tuple[list[str], bool, tuple[int, float] | None]]:
    """``(tokens, chinese, (base index, level) or None)``, one per document: the first
    80% of each five are fresh, the rest near-duplicates of an earlier fresh document
    (any earlier one, or with ``recent`` one of the last ``recent``, so that only
    those need remembering)."""
    n_planted = n_docs // 5
    fresh: dict[int, tuple[list[str], bool]] = {}
    order: list[int] = []
    for index in range(n_docs):
        if index < n_docs - n_planted if recent is None else index % 5 != 4:
            zh = index % 2 == 1
            tokens = rng.choices(HANZI if zh else VOCAB, k=100)
            fresh[index] = (tokens, zh)
            order.append(index)
            if recent is not None and len(order) > recent:
                del fresh[order.pop(0)]
            yield tokens, zh, None
            continue
        base = rng.choice(order)
        level = rng.choice(LEVELS)
        tokens, zh = fresh[base]
        g = 5 if zh else 3  # shingle length: a replaced token kills g - 1 more
        n = len(tokens) - g + 1
        k = round(n * (1 - level) / (1 + level))  # shingles to replace for Jaccard = level
        new = rng.choices(HANZI, k=k) if zh else [f"new{rng.randrange(10**9)}" for _ in range(k)]
        yield tokens[: len(tokens) - k] + new, zh, (base, level)


def _record(index: int, tokens: list[str], zh: bool) -> dict:
    return {"id": f"d{index:07d}", "instruction": ("" if zh else " ").join(tokens), "output": ""}


def _corpus(n_docs: int, rng: random.Random) -> tuple[list[dict], list[tuple[int, int, float]]]:
    records, planted = [], []
    for index, (tokens, zh, origin) in enumerate(_documents(n_docs, rng)):
        records.append(_record(index, tokens, zh))
        if origin is not None:
            planted.append((origin[0], index, origin[1]))
    return records, planted


def _f1(found: set[tuple[int, int]], truth: set[tuple[int, int]]) -> tuple[float, float, float]:
    tp = len(found & truth)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def accuracy_and_speed(args: argparse.Namespace) -> None:
    records, planted = _corpus(args.docs, random.Random(args.seed))
    texts = [normalise(r["instruction"] + "\n") for r in records]
    sets = [shingles(t) for t in texts]

    # truth: every pair (not only planted ones) with Jaccard >= threshold among the
    # planted groups; unrelated random documents share ~no shingles.
    groups: dict[int, set[int]] = {}
    for base, copy, _ in planted:
        groups.setdefault(base, {base}).add(copy)
    truth: set[tuple[int, int]] = set()
    for members in groups.values():
        ordered = sorted(members)
        for x, a in enumerate(ordered):
            for b in ordered[x + 1 :]:
                if _jaccard(sets[a], sets[b]) >= args.threshold:
                    truth.add((a, b))

    hasher = MinHasher(args.num_perm)
    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        MinHash = MinHashLSH = None  # noqa: N806
    encoded = [[s.encode("utf-8") for s in shingle_set] for shingle_set in sets]
    ours_s, theirs_s, ours_cpu, theirs_cpu = [], [], [], []
    for _ in range(args.repeat):  # interleaved, best of each: the machine is shared
        t0, c0 = time.perf_counter(), time.process_time()
        signatures = hasher.text_signatures(texts)
        ours_s.append(time.perf_counter() - t0)
        ours_cpu.append(time.process_time() - c0)
        if MinHash is not None:
            t0, c0 = time.perf_counter(), time.process_time()
            sketches = []
            for shingle_bytes in encoded:
                m = MinHash(num_perm=args.num_perm, seed=1)
                m.update_batch(shingle_bytes)
                sketches.append(m)
            theirs_s.append(time.perf_counter() - t0)
            theirs_cpu.append(time.process_time() - c0)

    t0 = time.perf_counter()
    graph = NearDuplicateGraph(threshold=args.threshold, num_perm=args.num_perm).build(records)
    kept, dropped = graph.resolve()
    total_s = time.perf_counter() - t0
    precision, recall, f1 = _f1(set(graph.edges), truth)
    print(
        f"docs {len(records)}, planted {len(planted)}, true pairs >= {args.threshold}: {len(truth)}"
    )
    print(f"ours:       precision {precision:.4f}  recall {recall:.4f}  F1 {f1:.4f}")
    print(
        f"ours: signatures from text {len(records) / min(ours_s):,.0f} docs/s "
        f"(best of {args.repeat}: {min(ours_s):.2f} s); whole dedup "
        f"{len(records) / total_s:,.0f} docs/s ({total_s:.2f} s), kept {len(kept)}, "
        f"dropped {len(dropped)}"
    )
    if MinHash is not None:
        t0 = time.perf_counter()
        lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
        for i, m in enumerate(sketches):
            lsh.insert(i, m)
        candidates = set()
        for i, m in enumerate(sketches):
            for j in lsh.query(m):
                if j != i:
                    candidates.add((min(i, j), max(i, j)))
        index_s = time.perf_counter() - t0
        verified = {p for p in candidates if _jaccard(sets[p[0]], sets[p[1]]) >= args.threshold}
        ds_precision, ds_recall, ds_f1 = _f1(verified, truth)
        print(
            f"datasketch: precision {ds_precision:.4f}  recall {ds_recall:.4f}  F1 {ds_f1:.4f}"
            f"  ({len(candidates)} candidates, ours {graph.candidates.get('minhash', 0)})"
        )
        print(
            f"datasketch: update_batch {len(records) / min(theirs_s):,.0f} docs/s (best of "
            f"{args.repeat}: {min(theirs_s):.2f} s, shingling excluded); MinHashLSH insert + "
            f"query {index_s:.2f} s"
        )
        print(
            f"ratio ours / datasketch, signatures: {min(theirs_s) / min(ours_s):.2f}x wall, "
            f"{min(theirs_cpu) / min(ours_cpu):.2f}x CPU time; F1 {f1:.4f} vs {ds_f1:.4f}"
        )
    else:
        print("datasketch not importable: comparison skipped (pip install datasketch)")

    bands, rows = lsh_params(args.threshold, args.num_perm, RECALL_WEIGHT)
    keys = band_keys(signatures, bands, rows)
    print(f"LSH bands {bands} x rows {rows}; candidate rate per planted level vs 1-(1-s^r)^b:")
    for level in LEVELS:
        pairs = [(a, b) for a, b, lv in planted if lv == level]
        mean_s = float(np.mean([_jaccard(sets[a], sets[b]) for a, b in pairs]))
        hit = sum(bool((keys[a] == keys[b]).any()) for a, b in pairs) / len(pairs)
        theory = float(candidate_probability(mean_s, bands, rows))
        print(
            f"  s~{level}: mean true s {mean_s:.3f}, candidates {hit:.3f}, "
            f"theory at mean s {theory:.3f} ({len(pairs)} pairs)"
        )

    gen = np.random.default_rng(0)
    n = 1_000_000
    left, right = gen.integers(0, n, n), gen.integers(0, n, n)
    t0 = time.perf_counter()
    roots = connected_components(n, left, right)
    cc_s = time.perf_counter() - t0
    print(
        f"union-find over 1M random edges on 1M nodes: {cc_s:.3f} s, "
        f"{len(np.unique(roots)):,} components"
    )
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


def write_corpus(path: Path, n_records: int, seed: int) -> int:
    """Stream an ``n_records`` corpus to ``path``; returns how many are near-duplicates."""
    planted = 0
    with open(path, "w", encoding="utf-8") as handle:
        rng = random.Random(seed)
        for index, (tokens, zh, origin) in enumerate(_documents(n_records, rng, recent=1000)):
            planted += origin is not None
            handle.write(json.dumps(_record(index, tokens, zh), ensure_ascii=False) + "\n")
    return planted


def run_file(args: argparse.Namespace) -> None:
    """The child: dedup ``args.run_file`` and print the figures as JSON."""
    source = Path(args.run_file)
    t0 = time.perf_counter()
    summary = dedup_jsonl(
        source,
        source.with_suffix(".unique.jsonl"),
        source.with_suffix(".rejects.jsonl"),
        threshold=args.threshold,
        num_perm=args.num_perm,
        shards=args.shards,
    )
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary["workers_peak_rss_mib"] = round(children)
    print(json.dumps(summary))


def memory(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
        path = Path(folder) / "corpus.jsonl"
        t0 = time.perf_counter()
        planted = write_corpus(path, args.records, args.seed)
        size = path.stat().st_size / 2**20
        print(
            f"corpus: {args.records:,} records, {planted:,} planted near-duplicates, "
            f"{size:,.0f} MiB, written in {time.perf_counter() - t0:.0f} s"
        )
        child = [sys.executable, __file__, "--run-file", str(path), "--shards", str(args.shards)]
        child += ["--threshold", str(args.threshold), "--num-perm", str(args.num_perm)]
        result = subprocess.run(child, capture_output=True, text=True, check=True)
        report = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"dedup_jsonl with {args.shards} shard(s): {report['seconds']} s "
            f"({args.records / report['seconds']:,.0f} records/s), peak RSS "
            f"{report['peak_rss_mib']} MiB (workers {report['workers_peak_rss_mib']} MiB); "
            f"kept {report['kept']:,}, dropped {report['dropped']:,} "
            f"{report['dropped_by_method']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--records", type=int, help="memory run over an N-record file")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--workdir", help="where the --records corpus is written")
    parser.add_argument("--run-file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_file:
        run_file(args)
    elif args.records:
        memory(args)
    else:
        accuracy_and_speed(args)


if __name__ == "__main__":
    main()
