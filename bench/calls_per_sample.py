"""Calls and tokens per accepted sample: this checkout against a baseline, in one run.

Runs ``rag --n 100`` (and ``answer``, ``evolve`` with 1 round and the judge on) on
the fake OpenAI server, twice per command: once with the code in this checkout
(NEW) and once with a baseline installed apart (OLD, ``--baseline DIR`` put first
on ``PYTHONPATH``; default ``/tmp/evoforge-basepkg``, the code before issue 19),
same documents, seeds, options and checks, same scripted model, fresh cache each.

The scripted model (``BenchModel``) plays every role with replies that depend
only on the prompt's content, never on call order, and it fails some checks the
way a real model does: about 1 in 8 questions is unanswerable, 1 in 10 references
ungrounded, 1 in 12 rewrites equal to its seed, short passages score low; the
repair rewrite (critic_fix) returns a new question. Its verdicts are per
criterion, so a merged judge and separate judges see the same verdicts.

Prints, per command and side: accepted, calls, calls per accepted sample, prompt
and completion tokens per accepted sample, and the ratio NEW / OLD.

    .venv/bin/python bench/calls_per_sample.py [--n 100] [--baseline /tmp/evoforge-basepkg]
        [--commands rag answer evolve]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from evoforge.testing.fake_openai import FakeOpenAI, FakeRequest
from evoforge.testing.scripted import rag_prompt

TOPICS = (
    "glaciers", "coral reefs", "printing", "volcanoes", "tides", "honeybees", "bridges",
    "satellites", "vaccines", "bread", "rivers", "deserts", "telescopes", "railways",
    "forests", "batteries", "windmills", "lighthouses", "salmon", "copper",
)  # fmt: skip
VERBS = ("shapes", "feeds", "cools", "moves", "protects", "changes", "measures", "supports")
OBJECTS = (
    "the coastline", "local farms", "the night sky", "city water", "river deltas",
    "trade routes", "mountain valleys", "the power grid", "school lessons", "old harbours",
)  # fmt: skip


def _digest(*parts: str) -> int:
    return int(hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:8], 16)


def write_corpus(folder: Path, documents: int = 40, paragraphs: int = 6) -> None:
    """Deterministic documents: each a topic, paragraphs of numbered facts."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(19)
    for d in range(documents):
        topic = TOPICS[d % len(TOPICS)]
        lines = [f"# {topic.title()} {d}", ""]
        for p in range(paragraphs):
            sentences = []
            for s in range(5):
                year = rng.randint(1700, 2020)
                sentences.append(
                    f"In {year} the study of {topic} number {d}-{p}-{s} showed that "
                    f"{topic} {rng.choice(VERBS)} {rng.choice(OBJECTS)} by "
                    f"{rng.randint(2, 97)} percent in region {rng.randint(1, 400)}."
                )
            lines += [" ".join(sentences), ""]
        (folder / f"doc{d:03d}.md").write_text("\n".join(lines), encoding="utf-8")


def _section(text: str, label: str) -> str:
    match = re.search(rf"{label}:[ \t]*\n?(.*?)(?:\n\n|\Z)", text, re.S)
    return match.group(1).strip() if match else ""


def _passage(text: str) -> str:
    after = text.split("Passage:", 1)[-1]
    return re.split(r"\n\n(?:Build the question around|The person asking|Phrase the)", after)[0]


def _verdict(fails: bool, what: str) -> dict[str, str]:
    return {"verdict": "no" if fails else "yes", "reason": f"{what} ({'fails' if fails else 'ok'})"}


def _grounded_fails(reference: str) -> bool:
    return _digest("grounded", reference) % 10 == 0


def _answerable_fails(question: str) -> bool:
    return _digest("answerable", question) % 8 == 0


def bench_reply(request: FakeRequest) -> str:
    """The scripted model (see the module docstring); a function of the prompt only."""
    messages = request.messages
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    user = request.last_user
    passage = _passage(user)  # the layout before issue 19's shared preamble (the baseline)
    rag = rag_prompt(messages)
    if rag is not None:  # a RAG template: the preamble, the numbered contexts, the task
        system = user = rag[0]
        passage = rag[1][0] if rag[1] else ""
    text = system + "\n\n" + user
    if "You write questions for a test set" in system:
        body = "\n".join(x for x in passage.strip().splitlines() if not x.startswith("#"))
        sentence = re.split(r"(?<=[.!?])\s", body.strip())[0]
        words = re.findall(r"[A-Za-z0-9'-]+", sentence)
        keyphrase = _section(user, "Build the question around")
        study = re.search(r"number (\S+) showed", sentence)
        about = keyphrase or " ".join(words[-4:])
        question = f"What did study {study.group(1) if study else words[0]} show about {about}?"
        return json.dumps({"question": question, "answer": sentence})
    if "You assess passages" in system:
        low = len(passage.split()) < 40
        return json.dumps({"clarity": 1 if low else 3, "depth": 1 if low else 2,
                           "structure": 1 if low else 3, "relevance": 2 if low else 3})  # fmt: skip
    if "You extract keyphrases" in system:
        words = re.findall(r"[a-z]{6,}", passage)
        return json.dumps({"keyphrases": list(dict.fromkeys(words))[:3] or ["topic"]})
    if "You rewrite questions" in system:
        question = re.search(r"question: (.*)", user).group(1).strip()
        answer = re.search(r"answer: (.*)", user).group(1).strip()
        stem = question.rstrip("?")
        if _digest("equal", question, system[:80]) % 12 == 0:
            new = question  # a rewrite that changes nothing: no_information_gain
        elif "shorter and more indirect" in system:
            new = "In brief: " + " ".join(stem.split()[-4:]) + "?"
        elif "first_question" in system:
            turns = {"first_question": f"{stem}?", "assistant_reply": answer[:60]}
            return json.dumps(
                {**turns, "follow_up": "And how was that measured?", "answer": answer}
            )
        elif "condition" in system:
            new = f"If measured, {stem[0].lower()}{stem[1:]}?"
        elif "Context 2" in user or "second context" in system or "two contexts" in system:
            new = f"Across studies, {stem[0].lower()}{stem[1:]}?"
        else:
            new = f"Why, {stem[0].lower()}{stem[1:]}?"
        return json.dumps({"question": new, "answer": answer})
    if "You repair samples" in system:
        question = _section(user, "Question") or "What happened?"
        reference = _section(user, "Reference answer") or "It happened."
        return json.dumps({"question": f"In detail, {question}", "reference": reference})
    if "compare two prompts" in system:
        first = _section(user, "#First Prompt#")
        second = _section(user, "#Second Prompt#")
        return "Equal" if first == second else "Not Equal"
    if "several criteria" in system:  # the merged RAG judge
        question, reference = _section(user, "Question"), _section(user, "Reference answer")
        grounded = _verdict(_grounded_fails(reference), "reference")
        answerable = _verdict(_answerable_fails(question), "question")
        reply = {"grounded": grounded["verdict"], "grounded_reason": grounded["reason"]}
        reply.update(answerable=answerable["verdict"], answerable_reason=answerable["reason"])
        if "Seed question:" in user:
            equal = _section(user, "Seed question") == question
            reply["information_gain"] = "Equal" if equal else "Not Equal"
            reply["information_gain_reason"] = "compared"
        return json.dumps(reply)
    if "fact checker" in system:
        return json.dumps(_verdict(_grounded_fails(_section(user, "Reference answer")), "ref"))
    if "reviewer of questions" in system:
        return json.dumps(_verdict(_answerable_fails(_section(user, "Question")), "question"))
    if "#Given Prompt#" in text or "#Created Prompt#" in text:  # Evol-Instruct rewrites
        given = user.rsplit("#:", 1)[-1].strip().splitlines()[0] if "#:" in user else user
        if _digest("evol", given, system) % 9 == 0:
            return given
        return " ".join(given.split()[:30]) + f" Explain case {_digest(given) % 89} step by step."
    if "score" in text.lower() and "json" in text.lower():
        return json.dumps({"score": _digest(user) % 6 + 1, "reason": "scored"})
    digest = _digest(system + user)
    if digest % 11 == 0:
        return "Sorry, I cannot help with that."
    return f"A full answer with {digest % 50 + 20} details: first, second and third."


def write_seeds(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            topic = TOPICS[i % len(TOPICS)]
            fh.write(json.dumps({"instruction": f"Explain how {topic} {VERBS[i % 8]} item {i}."}))
            fh.write("\n")


def run_side(side: str, argv: list[str], work: Path, baseline: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = baseline if side == "old" and baseline else ""
    env.pop("PYTHONPATH") if not env["PYTHONPATH"] else None
    out = work / side / "data.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    entry = "import sys; from evoforge.cli import main; sys.argv[0] = 'evoforge'; sys.exit(main())"
    command = [sys.executable, "-c", entry, *argv, "--out", str(out)]
    command += ["--cache-dir", str(work / side / "cache"), "--quiet"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 3):
        raise SystemExit(f"{side} {argv[0]} failed ({done.returncode}): {done.stderr[-2000:]}")
    manifest = json.loads((work / side / "data.manifest.json").read_text())
    usage = manifest.get("usage", {})
    accepted = manifest["counts"]["accepted"]
    calls = sum(op.get("calls", 0) for op in usage.values())
    prompt = sum(op.get("prompt_tokens", 0) for op in usage.values())
    completion = sum(op.get("completion_tokens", 0) for op in usage.values())
    per = (lambda x: round(x / accepted, 2)) if accepted else (lambda x: None)
    return {
        "accepted": accepted, "calls": calls, "calls_per_accepted": per(calls),
        "prompt_tokens_per_accepted": per(prompt),
        "completion_tokens_per_accepted": per(completion),
        "calls_by_op": {op: figures.get("calls", 0) for op, figures in sorted(usage.items())},
        "rejected_by_reason": manifest["counts"].get("rejected_by_reason", {}),
        "efficiency_block": manifest.get("efficiency"),
    }  # fmt: skip


def command_argv(command: str, n: int, work: Path, llm: str) -> list[str]:
    common = ["--llm", llm, "--seed", "7"]
    if command == "rag":
        docs = work / "docs"
        if not docs.exists():
            write_corpus(docs)
        return ["rag", "--docs", str(docs), "--n", str(n), "--embedder", "hashing", *common]
    seeds = work / "seeds.jsonl"
    if not seeds.exists():
        write_seeds(seeds, n)
    if command == "answer":
        return ["answer", "--seeds", str(seeds), *common]
    return ["evolve", "--seeds", str(seeds), "--rounds", "1", *common]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--baseline", default="/tmp/evoforge-basepkg")
    parser.add_argument("--commands", nargs="+", default=["rag", "answer", "evolve"])
    args = parser.parse_args()
    baseline = args.baseline if Path(args.baseline).is_dir() else None
    if baseline is None:
        print(f"no baseline at {args.baseline}: OLD runs this checkout too", flush=True)
    results: dict[str, dict[str, Any]] = {}
    with FakeOpenAI(responder=bench_reply, record=False) as server:
        llm = f"openai:fake-model@{server.base_url}"
        with tempfile.TemporaryDirectory() as tmp:
            for command in args.commands:
                work = Path(tmp) / command
                work.mkdir()
                argv = command_argv(command, args.n, Path(tmp), llm)
                sides = {side: run_side(side, argv, work, baseline) for side in ("old", "new")}
                results[command] = sides
                old, new = sides["old"], sides["new"]
                ratio = (
                    new["calls_per_accepted"] / old["calls_per_accepted"]
                    if old["calls_per_accepted"] and new["calls_per_accepted"]
                    else None
                )
                for side in ("old", "new"):
                    s = sides[side]
                    print(
                        f"{command:>6} {side.upper():>3}: {s['accepted']:>4} accepted, "
                        f"{s['calls']:>5} calls, {s['calls_per_accepted']} calls/accepted, "
                        f"{s['prompt_tokens_per_accepted']} prompt + "
                        f"{s['completion_tokens_per_accepted']} completion tokens/accepted",
                        flush=True,
                    )
                if ratio is not None:
                    print(f"{command:>6} calls per accepted NEW/OLD = {ratio:.2f} "
                          f"({(1 - ratio) * 100:.0f}% fewer)", flush=True)  # fmt: skip
    print(json.dumps({"n": args.n, "baseline": baseline, "results": results}))


if __name__ == "__main__":
    main()
