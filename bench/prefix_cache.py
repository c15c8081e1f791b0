"""How much of a `rag` run's prompt a provider's prefix cache serves (issue 19, part 2).

Runs ``evoforge rag --n N`` twice against the fake OpenAI server with its simulated
prefix cache on (``FakeOpenAI(prefix_cache=True)``: the longest prefix shared with
an earlier prompt counts once it reaches 1,024 tokens, in 128-token steps, as
OpenAI bills it; tokens are the fake server's whitespace words):

* **before**: the package at the commit before issue 19 (``--old-path``, default
  ``/tmp/evoforge-basepkg``: an install of 413b776 run with ``PYTHONPATH``), or any
  other install you point it at;
* **after**: the working tree.

Both runs read the same generated corpus (``--docs`` long documents of ``--words``
words, made up from a seeded grammar so every run sees the same text) with the same
chunking, and the same scripted model answers both (the test suite's RAG responder:
grounded seed questions, rewrites, yes-verdicts). The server's cache is emptied
between the runs. Printed per run: calls, accepted samples, prompt tokens, cached
prompt tokens and their share, and billed input tokens per accepted sample, where
billed = prompt - cached (cached tokens not billed at all), and, with OpenAI's
discount for cached input (0.5 of the input price for gpt-4o-class models), the
input cost in "full-price token" units per accepted sample.

    .venv/bin/python bench/prefix_cache.py       # --n 100 --docs 24 --words 4000 --chunk-size 1500
    .venv/bin/python bench/prefix_cache.py --n 30 --old-path ''   # the working tree only
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the scripted RAG model of the test suite

from evoforge.testing.fake_openai import FakeOpenAI  # noqa: E402
from evoforge.testing.fake_prefix_cache import PrefixCache  # noqa: E402
from evoforge.testing.long_corpus import make_corpus  # noqa: E402
from evoforge.testing.scripted import rag_prompt  # noqa: E402
from helpers import rag_responder  # noqa: E402

_TAILS = re.compile(r"\n\n(?:Build the question around:|The person asking:|Phrase the question)")


def responder(request: Any) -> str:
    """The test suite's RAG model, except that a seed question is asked about a sentence
    the request picks (by a hash of the whole prompt: keyphrase, persona and style
    included) instead of the passage's first one, so that samples over one chunk are not
    all duplicates of each other and the run needs few replacement passes."""
    messages = request.messages
    rag = rag_prompt(messages)
    if rag is None:  # the layout before issue 19's shared preamble (the --old-path run)
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        passage = user.split("Passage:", 1)[-1]
    else:
        system = user = rag[0]
        passage = rag[1][0] if rag[1] else ""
    if "You write questions for a test set" in system:
        passage = _TAILS.split(passage)[0]
        sentences = [
            s.strip()
            for s in re.split(r"(?<=[.!?])\s+", passage)
            if len(s.split()) >= 6 and not s.lstrip().startswith("#")
        ]
        if sentences:
            pick = sentences[int(hashlib.sha256(user.encode()).hexdigest(), 16) % len(sentences)]
            words = re.findall(r"[A-Za-z']+", pick)[:9]
            return json.dumps(
                {"question": f"What is known about {' '.join(words)}?", "answer": pick}
            )
    return rag_responder(messages, request.n)


CACHED_PRICE = 0.5  # cached input as a share of the input price (OpenAI, gpt-4o class)


def run_rag(
    url: str, docs: Path, out: Path, args: argparse.Namespace, pythonpath: str | None
) -> dict[str, Any]:
    env = {**os.environ}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    else:
        env.pop("PYTHONPATH", None)
    command = [
        sys.executable, "-m", "evoforge.cli", "rag", "--docs", str(docs), "--n", str(args.n),
        "--out", str(out), "--embedder", "hashing", "--chunk-size", str(args.chunk_size),
        "--chunk-unit", args.chunk_unit, "--chunk-overlap", str(args.chunk_overlap),
        "--quiet", "--no-cache", "--llm", f"openai:fake-model@{url}",
    ]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if result.returncode not in (0, 1):
        raise SystemExit(f"rag failed ({result.returncode}):\n{result.stderr[-3000:]}")
    accepted = sum(1 for line in out.read_text("utf-8").splitlines() if line.strip())
    multi = out.with_name(out.stem + ".multi_turn.jsonl")
    if multi.exists():
        accepted += sum(1 for line in multi.read_text("utf-8").splitlines() if line.strip())
    manifest_path = out.with_name(out.name + ".manifest.json")
    if not manifest_path.exists():
        manifest_path = out.with_suffix(".manifest.json")
    manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.exists() else {}
    return {
        "accepted": accepted,
        "usage": manifest.get("usage") or {},
        "seconds": time.perf_counter() - started,
    }


def figures(server: FakeOpenAI, run: dict[str, Any]) -> dict[str, Any]:
    cache = server.prefix_cache
    assert cache is not None
    accepted = max(1, run["accepted"])
    billed = cache.prompt_tokens - cached_of(cache)
    return {
        "calls": cache.requests,
        "accepted": run["accepted"],
        "prompt_tokens": cache.prompt_tokens,
        "cached_tokens": cached_of(cache),
        "cached_share": cache.share,
        "prompt_per_accepted": cache.prompt_tokens / accepted,
        "billed_per_accepted": billed / accepted,
        "discounted_per_accepted": (billed + CACHED_PRICE * cached_of(cache)) / accepted,
        "manifest_cached": sum(int(op.get("cached_tokens", 0)) for op in run["usage"].values()),
        "per_operator": {
            op: (int(stats.get("prompt_tokens", 0)), int(stats.get("cached_tokens", 0)))
            for op, stats in sorted(run["usage"].items())
        },
    }


def cached_of(cache: Any) -> int:
    return int(cache.cached_tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--docs", type=int, default=24, help="documents in the corpus")
    parser.add_argument("--words", type=int, default=4000, help="words per document")
    parser.add_argument("--chunk-size", type=int, default=1500)
    parser.add_argument("--chunk-unit", default="tokens")
    parser.add_argument("--chunk-overlap", type=int, default=100)
    parser.add_argument(
        "--old-path", default="/tmp/evoforge-basepkg",
        help="PYTHONPATH of the package before the change ('' skips the before run)",
    )  # fmt: skip
    parser.add_argument(
        "--cache-tokens", type=int, default=None,
        help="bound the simulated cache to this many tokens, least recently used evicted "
        "(default: unbounded)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)

    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="evoforge-prefix-") as tmp:
        docs = Path(tmp) / "docs"
        make_corpus(docs, docs=args.docs, words=args.words)
        server = FakeOpenAI(
            prefix_cache=PrefixCache(capacity_tokens=args.cache_tokens),
            record=False,
            max_seconds=3600,
            responder=responder,
        )
        with server:
            runs = [("after", None)]
            if args.old_path:
                runs.insert(0, ("before", args.old_path))
            for name, path in runs:
                assert server.prefix_cache is not None
                server.prefix_cache.reset()
                run = run_rag(server.base_url, docs, Path(tmp) / name / "eval.jsonl", args, path)
                rows[name] = figures(server, run)
    print(
        f"rag --n {args.n}: {args.docs} documents x {args.words} words, chunks of "
        f"{args.chunk_size} {args.chunk_unit} (overlap {args.chunk_overlap}); cache "
        f"{'unbounded' if args.cache_tokens is None else f'of {args.cache_tokens:,} tokens, LRU'}; "
        f"billed = prompt - cached; discounted = billed + {CACHED_PRICE} x cached"
    )
    header = (
        f"{'run':<8} {'calls':>6} {'accepted':>8} {'prompt tok':>11} {'cached tok':>11} "
        f"{'cached %':>8} {'prompt/acc':>10} {'billed/acc':>10} {'discounted/acc':>14}"
    )
    print(header)
    for name, row in rows.items():
        print(
            f"{name:<8} {row['calls']:>6} {row['accepted']:>8} {row['prompt_tokens']:>11,} "
            f"{row['cached_tokens']:>11,} {100 * row['cached_share']:>7.1f}% "
            f"{row['prompt_per_accepted']:>10,.0f} {row['billed_per_accepted']:>10,.0f} "
            f"{row['discounted_per_accepted']:>14,.0f}"
        )
    for name, row in rows.items():
        if not row["manifest_cached"]:
            print(f"{name}: the client recorded no cached tokens per operator (before issue 19)")
            continue
        agrees = "=" if row["manifest_cached"] == row["cached_tokens"] else "!="
        print(f"{name}: manifest cached tokens {row['manifest_cached']:,} {agrees} the server's")
        ops = ", ".join(
            f"{op} {cached * 100 // max(1, prompt)}%"
            for op, (prompt, cached) in row["per_operator"].items()
            if prompt
        )
        print(f"{name}: cached share per operator: {ops}")
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
