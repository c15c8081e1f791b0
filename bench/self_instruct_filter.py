"""Self-Instruct's ROUGE-L filter against a large pool: ours against naive all-pairs.

A pool of ``--pool`` synthetic instructions (5 to 30 words from a 5,000-word vocabulary
and 40 task verbs, as instruction sets look: a verb, then content words) and
``--candidates`` new ones, ``--near`` of them near-duplicates of a pool entry (1 to 3
words changed, so ROUGE-L F is around 0.7 to 0.95). For each candidate the question is
Self-Instruct's: is its ROUGE-L F >= 0.7 with any pool instruction?

- ours: :class:`evoforge.generators.rouge.NearDuplicateIndex` (inverted index over the
  rarest tokens, unigram-F bound, bit-parallel LCS only where the bound allows);
- naive: ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])`` against every pool entry
  (what the Self-Instruct reference code does, with a process pool), on ``--sample``
  candidates, as it takes seconds per candidate.

Prints instructions per second of both, their ratio, the agreement of the two on the
sample (the texts are ASCII, where rouge-score's tokenizer and ours agree), and how many
exact LCS computations the bound saved. Times are the best of ``--repeat`` runs, as the
machine is shared.

    .venv/bin/python bench/self_instruct_filter.py [--pool 50000] [--candidates 2000]
"""

from __future__ import annotations

import argparse
import random
import time

from evoforge.generators.rouge import NearDuplicateIndex


def vocabulary(rng: random.Random, size: int) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))))
    return sorted(words)


def corpus(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    rng = random.Random(args.seed)
    words = vocabulary(rng, 5000)
    verbs = vocabulary(rng, 40)
    common = ["the", "a", "of", "to", "and", "in", "for", "with", "about", "that"]
    # Zipf-like: a few words are frequent, most are rare (as in real instructions).
    weights = [1 / (rank + 1) for rank in range(len(words))]

    def instruction() -> str:
        n = rng.randint(5, 30)
        body = rng.choices(words, weights, k=n - 1)
        for k in range(0, len(body), 4):
            body[k] = rng.choice(common)
        return " ".join([rng.choice(verbs), *body])

    pool = [instruction() for _ in range(args.pool)]
    candidates = []
    for k in range(args.candidates):
        if k < args.near * args.candidates:
            tokens = rng.choice(pool).split()
            for _ in range(rng.randint(1, 3)):
                tokens[rng.randrange(len(tokens))] = rng.choice(words)
            candidates.append(" ".join(tokens))
        else:
            candidates.append(instruction())
    rng.shuffle(candidates)
    return pool, candidates


def ours(pool: list[str], candidates: list[str]) -> tuple[float, float, list[bool], dict]:
    start = time.perf_counter()
    index = NearDuplicateIndex(0.7)
    for k, text in enumerate(pool):
        index.add(str(k), text)
    built = time.perf_counter() - start
    start = time.perf_counter()
    flags = [index.closest(text) is not None for text in candidates]
    return built, time.perf_counter() - start, flags, dict(index.stats)


def naive(pool: list[str], candidates: list[str]) -> tuple[float, list[bool]]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    start = time.perf_counter()
    flags = []
    for text in candidates:
        flags.append(any(scorer.score(other, text)["rougeL"].fmeasure >= 0.7 for other in pool))
    return time.perf_counter() - start, flags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pool", type=int, default=50_000)
    parser.add_argument("--candidates", type=int, default=2_000)
    parser.add_argument("--near", type=float, default=0.3, help="share of near-duplicates")
    parser.add_argument("--sample", type=int, default=10, help="candidates for the naive run")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pool, candidates = corpus(args)
    best_build = best_ours = float("inf")
    for _ in range(args.repeat):
        built, seconds, flags, stats = ours(pool, candidates)
        best_build, best_ours = min(best_build, built), min(best_ours, seconds)
    sample = candidates[: args.sample]
    best_naive = float("inf")
    for _ in range(max(1, args.repeat - 1)):
        seconds, naive_flags = naive(pool, sample)
        best_naive = min(best_naive, seconds)
    ours_rate = len(candidates) / best_ours
    naive_rate = len(sample) / best_naive
    agree = sum(a == b for a, b in zip(flags[: args.sample], naive_flags, strict=True))
    print(f"pool {len(pool):,} instructions, {len(candidates):,} candidates "
          f"({args.near:.0%} planted near-duplicates), threshold ROUGE-L F 0.7")  # fmt: skip
    print(f"ours:  index built in {best_build:.2f} s; {ours_rate:,.0f} instructions/s; "
          f"{sum(flags)} near-duplicates found")  # fmt: skip
    per = {k: v / len(candidates) for k, v in stats.items()}  # the last run's
    print(f"       per candidate: {per.get('probed', 0):.1f} pool entries probed, "
          f"{per.get('pruned', 0):.1f} cut by the unigram bound, {per.get('lcs', 0):.2f} exact LCS "
          f"(naive: {len(pool):,} LCS)")  # fmt: skip
    print(f"naive: rouge-score all-pairs on {len(sample)} candidates: {naive_rate:.2f} "
          f"instructions/s")  # fmt: skip
    print(f"ratio: ours {ours_rate / naive_rate:,.0f}x naive; decisions agree on "
          f"{agree}/{len(sample)} sampled candidates")  # fmt: skip


if __name__ == "__main__":
    main()
