"""IN2 context assembly: throughput and memory for N long contexts from a streamed corpus.

A synthetic corpus (``--docs`` documents of about ``--doc-tokens`` regex tokens, sentences
of 6-18 words drawn from a fixed vocabulary) is written as JSONL and streamed twice with
``iter_corpus``, as a bounded-memory pipeline would:

1. pass 1: decontaminate each document (against 200 synthetic evaluation examples, two
   of them planted in the corpus), segment it (128 tokens) and offer every segment to
   the ``FillerPool`` (capacity 20,000, a reservoir);
2. pass 2: re-segment each document and make ``--contexts / --docs`` contexts from it
   (80% fine-grained: one needle; 20% integration: 2-3 needles of the document), each
   of a length drawn uniformly from [4096, 32768] tokens, written as JSONL.

Prints segmentation throughput, assembly tokens/s (``assemble`` alone, and with the
JSONL write), wall time, output size, peak RSS (``ru_maxrss``) and current RSS after
1,000 and after all contexts (flat memory: the same at both), length and position
uniformity (KS p-values; a needle's position is its start over the places it could
start, ``token_start / (context_tokens - needle tokens)``), and a JSON line.

    .venv/bin/python bench/in2_assembly.py [--contexts 10000] [--docs 2000]
        [--tokenizer regex|default]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

VOCAB = (
    "river stone harbor lantern meadow copper violin glacier orchard thunder saddle ember "
    "falcon quarry pepper marble canyon beacon willow anchor cedar velvet prairie comet "
    "galaxy recipe revenue patient compiler photosynthesis melody volcano court football "
    "storm empire describes shows explains includes requires suggests provides supports "
    "process result system method example approach problem question study report level "
    "large small new early late important different general public local major common "
    "the a of and to in is was for on with as by that this it from at be are"
).split()


def sentence(rng: random.Random) -> str:
    words = rng.choices(VOCAB, k=rng.randint(6, 18))
    if rng.random() < 0.3:
        words.insert(rng.randrange(len(words)), str(rng.randint(1, 9999)))
    text = " ".join(words)
    return text[0].upper() + text[1:] + rng.choice("..........!?;")


def write_corpus(path: Path, docs: int, doc_tokens: int, seed: int) -> list[str]:
    """Write the corpus; return 200 evaluation texts (two of them planted in documents)."""
    rng = random.Random(seed)
    evals = [" ".join(sentence(rng) for _ in range(3)) for _ in range(200)]
    planted = {docs // 3: evals[0], 2 * docs // 3: evals[1]}
    with open(path, "w", encoding="utf-8") as fh:
        for d in range(docs):
            parts, tokens = [], 0
            while tokens < doc_tokens:
                parts.append(sentence(rng))
                tokens += parts[-1].count(" ") + 2
                if rng.random() < 0.08:
                    parts.append("\n\n")
            if d in planted:
                parts.insert(len(parts) // 2, planted[d])
            fh.write(json.dumps({"id": d, "text": " ".join(parts)}) + "\n")
    return evals


def rss_mb() -> tuple[float, float]:
    """(peak RSS so far, current RSS) in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/statm") as fh:
        current = int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    return peak, current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contexts", type=int, default=10_000)
    parser.add_argument("--docs", type=int, default=2_000)
    parser.add_argument("--doc-tokens", type=int, default=2_000)
    parser.add_argument("--min-tokens", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=32768)
    parser.add_argument("--segment-tokens", type=int, default=128)
    parser.add_argument("--capacity", type=int, default=20_000)
    parser.add_argument("--tokenizer", default="regex", help="regex | default | a folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from scipy import stats

    from evoforge.generators.corpus import iter_corpus
    from evoforge.generators.decontamination import Decontaminator
    from evoforge.generators.in2_assembly import FillerPool, assemble, sample_target_tokens
    from evoforge.generators.segments import segment_document
    from evoforge.generators.tokenizers import load_tokenizer

    started_all = time.perf_counter()
    load_before = os.getloadavg()[0]
    tokenizer = load_tokenizer(args.tokenizer)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.jsonl"
        mark = time.perf_counter()
        evals = write_corpus(corpus, args.docs, args.doc_tokens, args.seed)
        corpus_s = time.perf_counter() - mark
        corpus_mb = corpus.stat().st_size / 2**20
        rss_start = rss_mb()

        # Pass 1: decontaminate, segment, fill the pool.
        decon = Decontaminator(evals)
        pool = FillerPool(capacity=args.capacity, seed=args.seed)
        mark = time.perf_counter()
        decon_s = 0.0
        clean: set[str] = set()
        doc_tokens = segments = 0
        for document in iter_corpus(corpus):
            tick = time.perf_counter()
            dirty = decon.contaminated(document.text)
            decon_s += time.perf_counter() - tick
            if dirty:
                continue
            clean.add(document.id)
            for segment in segment_document(
                document.id, document.text, tokenizer, args.segment_tokens
            ):
                pool.add(segment)
                doc_tokens += segment.tokens
                segments += 1
        pass1_s = time.perf_counter() - mark

        # Pass 2: contexts from each clean document.
        per_doc = -(-args.contexts // max(1, len(clean)))
        rng = random.Random(args.seed)
        counts = tokenizer.count
        out = Path(tmp) / "in2_contexts.jsonl"
        made = context_tokens = 0
        assemble_s = write_s = segment2_s = 0.0
        checkpoints: dict[int, tuple[float, float]] = {}
        lengths: list[int] = []
        positions: list[float] = []
        mark = time.perf_counter()
        with open(out, "w", encoding="utf-8") as fh:
            for document in iter_corpus(corpus):
                if made >= args.contexts:
                    break
                if document.id not in clean:
                    continue
                tick = time.perf_counter()
                doc_segments = segment_document(
                    document.id, document.text, tokenizer, args.segment_tokens
                )
                segment2_s += time.perf_counter() - tick
                for _ in range(min(per_doc, args.contexts - made)):
                    k = 1 if rng.random() < 0.8 else rng.randint(2, 3)
                    needles = rng.sample(doc_segments, min(k, len(doc_segments)))
                    target = sample_target_tokens(rng, args.min_tokens, args.max_tokens)
                    tick = time.perf_counter()
                    assembled = assemble(
                        needles, pool, rng, target_tokens=target, tokenizer_counts=counts
                    )
                    tock = time.perf_counter()
                    row = {
                        "id": f"in2-{made:06d}",
                        "target_tokens": target,
                        "context_tokens": assembled.context_tokens,
                        "context": assembled.context,
                        "needles": [asdict(n) for n in assembled.needles],
                        "filler_docs": list(assembled.filler_docs),
                    }
                    fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                    write_s += time.perf_counter() - tock
                    assemble_s += tock - tick
                    made += 1
                    context_tokens += assembled.context_tokens
                    lengths.append(assembled.context_tokens)
                    # The first needle drawn (a random one, not the earliest placed).
                    drawn = next(
                        n for n in assembled.needles if n.segment_index == needles[0].index
                    )
                    room = assembled.context_tokens - (drawn.token_end - drawn.token_start)
                    positions.append(drawn.token_start / room)
                    if made in (1_000, args.contexts):
                        checkpoints[made] = rss_mb()
        pass2_s = time.perf_counter() - mark
        out_mb = out.stat().st_size / 2**20
    wall = time.perf_counter() - started_all

    uniform = stats.uniform(loc=args.min_tokens, scale=args.max_tokens - args.min_tokens).cdf
    ks_lengths = stats.kstest(lengths, uniform).pvalue
    ks_positions = stats.kstest(positions, "uniform").pvalue
    load = os.getloadavg()[0]
    print(
        f"corpus: {args.docs:,} documents, {doc_tokens:,} tokens ({tokenizer.name}), "
        f"{corpus_mb:.1f} MB JSONL written in {corpus_s:.2f} s"
    )
    print(
        f"pass 1: {pass1_s:.2f} s  ({args.docs / pass1_s:,.0f} docs/s, "
        f"{doc_tokens / pass1_s / 1e6:.2f} M tokens/s read+decontaminate+segment); "
        f"decontamination {decon_s:.2f} s, dropped {decon.dropped} (2 planted); "
        f"{segments:,} segments, pool {len(pool):,} ({pool.tokens:,} tokens)"
    )
    print(
        f"pass 2: {made:,} contexts, {context_tokens / 1e6:.1f} M tokens "
        f"(mean {context_tokens / max(1, made):,.0f}) in {pass2_s:.2f} s"
    )
    print(
        f"  assemble   {assemble_s:7.2f} s  {context_tokens / assemble_s / 1e6:7.1f} M tokens/s  "
        f"{made / assemble_s:8,.0f} contexts/s"
    )
    with_write = assemble_s + write_s
    print(
        f"  + write    {with_write:7.2f} s  {context_tokens / with_write / 1e6:7.1f} M tokens/s  "
        f"(JSONL, {out_mb:,.0f} MB)"
    )
    print(f"  re-segment {segment2_s:7.2f} s")
    print(f"wall: {wall:.2f} s; load avg {load_before:.2f} before, {load:.2f} after")
    print(f"RSS: start peak {rss_start[0]:.1f} MB / current {rss_start[1]:.1f} MB")
    for n, (peak, current) in sorted(checkpoints.items()):
        print(f"  after {n:>6,} contexts: peak {peak:.1f} MB, current {current:.1f} MB")
    print(f"KS p-values: lengths vs U[{args.min_tokens}, {args.max_tokens}] {ks_lengths:.3f}, "
          f"needle position vs U[0, 1] {ks_positions:.3f}")  # fmt: skip
    result = {
        "tokenizer": tokenizer.name,
        "docs": args.docs,
        "doc_tokens": doc_tokens,
        "contexts": made,
        "context_tokens": context_tokens,
        "pass1_s": round(pass1_s, 3),
        "decontaminate_s": round(decon_s, 3),
        "dropped": decon.dropped,
        "assemble_s": round(assemble_s, 3),
        "assemble_mtok_s": round(context_tokens / assemble_s / 1e6, 2),
        "write_s": round(write_s, 3),
        "pass2_s": round(pass2_s, 3),
        "wall_s": round(wall, 3),
        "output_mb": round(out_mb, 1),
        "rss_mb": {str(n): [round(p, 1), round(c, 1)] for n, (p, c) in checkpoints.items()},
        "ks_lengths_p": round(float(ks_lengths), 3),
        "ks_positions_p": round(float(ks_positions), 3),
        "load_avg": [round(load_before, 2), round(load, 2)],
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
