"""Near-duplicate dedup: accuracy against planted pairs, speed, and memory.

The corpus: ``--docs`` documents of about 100 tokens (half English-like words from a
20,000-word vocabulary, half Chinese from 3,000 characters), of which 20% are
near-duplicates planted at Jaccard (of shingles) about 0.5, 0.7, 0.8 or 0.9 to a
base document (contiguous tail replacement). The truth is every pair whose true
shingle Jaccard is >= the threshold. Prints pairwise precision / recall / F1, docs per
second for signatures and for the whole dedup, the candidate rate per planted level
against the theoretical S-curve, datasketch's MinHash + MinHashLSH on the same corpus
if it is importable, union-find seconds over 1M random edges, and peak RSS.

    .venv/bin/python bench/dedup.py [--docs 20000] [--threshold 0.7] [--num-perm 128]
"""

from __future__ import annotations

import argparse
import random
import resource
import time

import numpy as np

from evoforge.validators.dedup import (
    RECALL_WEIGHT,
    MinHasher,
    NearDuplicateGraph,
    candidate_probability,
    connected_components,
    lsh_params,
    normalise,
    shingles,
)

LEVELS = (0.5, 0.7, 0.8, 0.9)


def _corpus(n_docs: int, rng: random.Random) -> tuple[list[dict], list[tuple[int, int, float]]]:
    vocab = [f"word{i}" for i in range(20000)]
    hanzi = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]
    n_planted = n_docs // 5
    docs: list[list[str]] = []
    chinese: list[bool] = []
    for i in range(n_docs - n_planted):
        zh = i % 2 == 1
        docs.append(rng.choices(hanzi if zh else vocab, k=100))
        chinese.append(zh)
    planted: list[tuple[int, int, float]] = []
    for _ in range(n_planted):
        base = rng.randrange(n_docs - n_planted)
        level = rng.choice(LEVELS)
        tokens = docs[base]
        g = 5 if chinese[base] else 3  # shingle length: a replaced token kills g - 1 more
        n = len(tokens) - g + 1
        k = round(n * (1 - level) / (1 + level))  # shingles to replace for Jaccard = level
        fresh = (
            rng.choices(hanzi, k=k)
            if chinese[base]
            else [f"new{rng.randrange(10**9)}" for _ in range(k)]
        )
        docs.append(tokens[: len(tokens) - k] + fresh)
        chinese.append(chinese[base])
        planted.append((base, len(docs) - 1, level))
    records = [
        {"id": f"d{i:06d}", "instruction": ("" if zh else " ").join(t), "output": ""}
        for i, (t, zh) in enumerate(zip(docs, chinese, strict=True))
    ]
    return records, planted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--threshold", type=float, default=0.7)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    records, planted = _corpus(args.docs, rng)
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
        for x in range(len(ordered)):
            for y in range(x + 1, len(ordered)):
                a, b = sets[ordered[x]], sets[ordered[y]]
                if len(a & b) / len(a | b) >= args.threshold:
                    truth.add((ordered[x], ordered[y]))

    t0 = time.perf_counter()
    MinHasher(args.num_perm).signatures(sets)
    sig_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    graph = NearDuplicateGraph(threshold=args.threshold, num_perm=args.num_perm).build(records)
    kept, dropped = graph.resolve()
    total_s = time.perf_counter() - t0
    found = set(graph.edges)
    tp = len(found & truth)
    precision = tp / len(found) if found else 1.0
    recall = tp / len(truth) if truth else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    print(
        f"docs {len(records)}, planted {len(planted)}, true pairs >= {args.threshold}: {len(truth)}"
    )
    print(f"precision {precision:.4f}  recall {recall:.4f}  F1 {f1:.4f}  (edges {len(found)})")
    print(f"signatures {len(records) / sig_s:,.0f} docs/s ({sig_s:.2f} s, shingling excluded)")
    print(
        f"whole dedup {len(records) / total_s:,.0f} docs/s ({total_s:.2f} s); "
        f"kept {len(kept)}, dropped {len(dropped)}"
    )

    bands, rows = lsh_params(args.threshold, args.num_perm, RECALL_WEIGHT)
    signatures = MinHasher(args.num_perm).signatures(sets)
    print(f"LSH bands {bands} x rows {rows}; candidate rate per planted level vs 1-(1-s^r)^b:")
    for level in LEVELS:
        pairs = [(a, b) for a, b, lv in planted if lv == level]
        sims = [len(sets[a] & sets[b]) / len(sets[a] | sets[b]) for a, b in pairs]
        hit = 0
        for a, b in pairs:
            same = signatures[a] == signatures[b]
            hit += bool(same[: bands * rows].reshape(bands, rows).all(axis=1).any())
        mean_s = float(np.mean(sims))
        print(
            f"  s~{level}: mean true s {mean_s:.3f}, candidates {hit / len(pairs):.3f}, "
            f"theory at mean s {float(candidate_probability(mean_s, bands, rows)):.3f} "
            f"({len(pairs)} pairs)"
        )

    try:
        from datasketch import MinHash, MinHashLSH
    except ImportError:
        print("datasketch not importable: comparison skipped")
    else:
        t0 = time.perf_counter()
        lsh = MinHashLSH(threshold=args.threshold, num_perm=args.num_perm)
        hashes = []
        for i, s in enumerate(sets):
            m = MinHash(num_perm=args.num_perm, seed=1)
            m.update_batch([x.encode("utf-8") for x in s])
            hashes.append(m)
            lsh.insert(str(i), m)
        ds_sig_s = time.perf_counter() - t0
        pairs_ds = set()
        for i, m in enumerate(hashes):
            for j in lsh.query(m):
                j = int(j)
                if j != i:
                    pairs_ds.add((min(i, j), max(i, j)))
        ds_s = time.perf_counter() - t0
        print(
            f"datasketch MinHash.update_batch + MinHashLSH insert: {ds_sig_s:.2f} s; "
            f"with queries {ds_s:.2f} s "
            f"({len(pairs_ds)} candidate pairs, ours {graph.candidates.get('minhash', 0)}); "
            f"ratio datasketch/ours: signatures+index {ds_sig_s / sig_s:.1f}x, "
            f"whole {ds_s / total_s:.1f}x"
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


if __name__ == "__main__":
    main()
