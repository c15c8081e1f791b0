"""Calls, tokens and USD per accepted sample: ``answer``, ``evolve`` and ``rag``, online
and in batch mode, on the fake OpenAI server (issue 19's benchmark).

Each command runs twice in this process, through the Python API, against one fake
server: online, then with ``--batch`` (the server's ``/v1/files`` and
``/v1/batches``). Same seeds, documents, options and scripted model (replies depend
only on the prompt), a fresh cache-less run each time. The server simulates a
provider's prefix cache (``FakeOpenAI(prefix_cache=True)``: the longest prefix shared
with an earlier prompt counts from 1,024 tokens, in 128-token steps), emptied before
each run, so cached prompt tokens are what a provider would report.

* ``answer``: ``--seeds`` instructions;
* ``evolve``: the same instructions, 1 round, the equality judge on, answers on;
* ``rag``: ``--n`` samples over a generated long-document corpus
  (:func:`evoforge.testing.long_corpus.make_corpus`), chunks of 1,000 tokens.

The figures come from each run's manifest: ``usage`` (calls, prompt, cached and
completion tokens, summed over operators), ``counts.accepted`` and the ``cost`` block,
priced as ``--model`` (default gpt-4o-mini) from ``models.yaml`` (or ``--prices``).
USD per accepted sample is what the run paid: the online price online, the batch
price with ``--batch``. Printed: one row per command and mode, and the batch/online
ratio of USD per accepted sample measured in the same run.

    .venv/bin/python bench/cost_per_sample.py                # seeds 200, rag --n 100
    .venv/bin/python bench/cost_per_sample.py --seeds 50 --n 30 --json
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test suite's scripted RAG model

from evoforge import EngineOptions, answer, evolve  # noqa: E402
from evoforge.api import EvolveOptions, RagOptions, rag  # noqa: E402
from evoforge.testing.fake_openai import FakeOpenAI  # noqa: E402
from evoforge.testing.long_corpus import make_corpus  # noqa: E402
from helpers import rag_responder  # noqa: E402

SUBJECTS = (
    "tidal power", "glass making", "bee keeping", "bridge design", "bread baking",
    "river deltas", "comet orbits", "coral reefs", "salt marshes", "paper mills",
)  # fmt: skip
TASKS = (
    "Explain how {s} works to a curious twelve-year-old, with one concrete example.",
    "List three common mistakes people make about {s} and correct each one.",
    "Write a short, friendly paragraph that introduces {s} to a new student.",
    "Compare two different approaches to {s} and say when each one is better.",
)


def merged_verdicts(request: Any) -> str | None:
    """A judge asked for several criteria in one call (its JSON Schema has two or more
    properties with a ``verdict``): "yes" (or "Not Equal") on each, as the RAG model's
    single judges say."""
    body = request.json if isinstance(request.json, dict) else {}
    schema = ((body.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    verdicts = {}
    for name, prop in (schema.get("properties") or {}).items():
        verdict = ((prop.get("properties") or {}) if isinstance(prop, dict) else {}).get("verdict")
        if isinstance(verdict, dict):
            allowed = verdict.get("enum") or ["yes"]
            verdicts[name] = next((v for v in ("yes", "Not Equal") if v in allowed), allowed[0])
    if len(verdicts) < 2:
        return None
    return json.dumps({name: {"verdict": verdict, "reason": "It follows from the contexts."}
                       for name, verdict in verdicts.items()})  # fmt: skip


def responder(request: Any) -> str:
    """Evol-Instruct rewrites (the given prompt plus one constraint), the equality
    judge (Not Equal), answers of a few sentences, and the test suite's RAG model
    (with a merged judge's verdicts, see :func:`merged_verdicts`)."""
    system = request.messages[0]["content"] if request.messages else ""
    user = request.last_user
    merged = merged_verdicts(request)
    if merged is not None:
        return merged
    if "prompt rewriter" in system or "prompt creator" in system:
        given = user.split("#The Given Prompt#:")[-1].split("#Given Prompt#:")[-1].strip()
        words = re.findall(r"[A-Za-z']+", given)
        return f"{given.splitlines()[0]} Use at most {40 + len(words)} words and one example."
    if "compare two prompts" in system:  # Evol-Instruct's equality judge
        return "Not Equal"
    if "helpful, accurate assistant" in system:
        topic = " ".join(re.findall(r"[A-Za-z']+", user)[:8])
        return (f"Here is a careful answer about {topic}. First, the main idea in plain "
                "words. Second, a concrete example that shows it at work. Third, a short "
                "note on what people often get wrong, and how to avoid it.")  # fmt: skip
    return rag_responder(request.messages, request.n)


def write_seeds(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            task = TASKS[i % len(TASKS)].format(s=SUBJECTS[(i // len(TASKS)) % len(SUBJECTS)])
            fh.write(json.dumps({"id": f"q{i:05d}", "instruction": f"{task} (case {i})"}) + "\n")


def figures(out: Path, seconds: float) -> dict[str, Any]:
    manifest = json.loads(out.with_name(f"{out.stem}.manifest.json").read_text("utf-8"))
    usage = manifest["usage"].values()
    accepted = int(manifest["counts"]["accepted"])
    cost = manifest["cost"]
    paid = cost["usd_batch"] if cost["priced_at"] == "batch" else cost["usd_online"]

    def total(key: str) -> int:
        return sum(int(op.get(key, 0) or 0) for op in usage)

    per = max(1, accepted)
    return {
        "accepted": accepted,
        "calls": total("calls"),
        "prompt_tokens": total("prompt_tokens"),
        "cached_tokens": total("cached_tokens"),
        "completion_tokens": total("completion_tokens"),
        "calls_per_accepted": total("calls") / per,
        "prompt_per_accepted": total("prompt_tokens") / per,
        "cached_per_accepted": total("cached_tokens") / per,
        "completion_per_accepted": total("completion_tokens") / per,
        "usd_paid": paid,
        "usd_per_accepted": None if paid is None else paid / per,
        "priced_at": cost["priced_at"],
        "price_source": cost["price_source"],
        "batches": len((manifest.get("batch") or {}).get("ids") or []),
        "seconds": seconds,
    }


def run_all(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Any]]:
    seeds = tmp / "seeds.jsonl"
    write_seeds(seeds, args.seeds)
    docs = tmp / "docs"
    make_corpus(docs, docs=args.docs, words=args.words)
    rows: dict[str, dict[str, Any]] = {}
    server = FakeOpenAI(prefix_cache=True, record=False, max_seconds=3600, responder=responder)
    with server:
        for command in args.commands:
            for mode in ("online", "batch"):
                options = EngineOptions(
                    llm=f"openai:{args.model}@{server.base_url}", cache=False, quiet=True,
                    batch=mode == "batch", batch_poll=0.01, concurrency=64,
                    prices=args.prices,
                )  # fmt: skip
                out = tmp / command / mode / f"{command}.jsonl"
                assert server.prefix_cache is not None
                server.prefix_cache.reset()
                started = time.perf_counter()
                if command == "answer":
                    answer(seeds, out, options=options)
                elif command == "evolve":
                    evolution = EvolveOptions(rounds=1, judge=True, answers=True)
                    evolve(seeds, out, evolution=evolution, options=options)
                else:
                    settings = RagOptions(n=args.n, embedder="hashing", chunk_size=1000,
                                          chunk_unit="tokens", chunk_overlap=100)  # fmt: skip
                    rag([docs], out, rag=settings, options=options)
                rows[f"{command} {mode}"] = figures(out, time.perf_counter() - started)
    return rows


def commit() -> str:
    def git(*argv: str) -> str:
        result = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True)
        return result.stdout.strip()

    dirty = " + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else ""
    return (git("rev-parse", "--short", "HEAD") or "unknown") + dirty


def _usd(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.4f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=200, help="answer/evolve instructions")
    parser.add_argument("--n", type=int, default=100, help="rag samples")
    parser.add_argument("--docs", type=int, default=12, help="documents in the rag corpus")
    parser.add_argument("--words", type=int, default=3000, help="words per document")
    parser.add_argument("--model", default="gpt-4o-mini", help="priced as (models.yaml)")
    parser.add_argument("--prices", default=None, help="a --prices file")
    parser.add_argument("--commands", nargs="+", default=["answer", "evolve", "rag"])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="evoforge-cost-") as folder:
        rows = run_all(args, Path(folder))
    first = next(iter(rows.values()))
    print(f"commit {commit()}; priced as {args.model}: {first['price_source']}")
    print(f"answer/evolve: {args.seeds} seeds; evolve: 1 round, judge on; rag --n {args.n} "
          f"over {args.docs} documents x {args.words} words; fake server, prefix cache "
          "simulated; tokens: the fake server's words")  # fmt: skip
    head = (f"{'command':<16} {'accepted':>8} {'calls':>6} {'calls/acc':>9} {'prompt/acc':>10} "
            f"{'cached/acc':>10} {'compl/acc':>9} {'paid at':>7} {'USD/1K acc':>10} "
            f"{'batches':>7} {'wall s':>6}")  # fmt: skip
    print(head)
    print("-" * len(head))
    for name, row in rows.items():
        print(f"{name:<16} {row['accepted']:>8} {row['calls']:>6} "
              f"{row['calls_per_accepted']:>9.2f} {row['prompt_per_accepted']:>10.1f} "
              f"{row['cached_per_accepted']:>10.1f} {row['completion_per_accepted']:>9.1f} "
              f"{row['priced_at']:>7} {_usd(row['usd_per_accepted']):>10} "
              f"{row['batches']:>7} {row['seconds']:>6.1f}")  # fmt: skip
    for command in args.commands:
        online, batch = rows[f"{command} online"], rows[f"{command} batch"]
        if online["usd_per_accepted"] and batch["usd_per_accepted"] is not None:
            ratio = batch["usd_per_accepted"] / online["usd_per_accepted"]
            print(f"{command}: batch / online USD per accepted sample = {ratio:.3f}; "
                  f"calls per accepted {batch['calls_per_accepted']:.2f} vs "
                  f"{online['calls_per_accepted']:.2f}")  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
