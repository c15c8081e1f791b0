"""The golden runs: answer, evolve, rag, in2, dedup and select on a fixed seed with the
scripted model, whose replies depend only on the prompt (never on call order).

``python tests/goldens/make_goldens.py`` rewrites the files under ``tests/goldens/``;
``tests/test_goldens.py`` runs the same functions and compares. The goldens were made
on the code before the step-contract redesign (issue 12), so a difference is a change
of behaviour, not of layout.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DOCS = ROOT / "examples" / "docs"
# Keys a later change may add to a reject line; the goldens compare without them.
NEW_REJECT_KEYS = ("step", "field", "lost_to")
# The manifest field allowed to differ between two runs.
VOLATILE_MANIFEST_KEYS = ("timing",)
# Keys a later change may add to a manifest (issue 12: the per-step counts); the goldens
# compare the keys they have, which must stay equal.
NEW_MANIFEST_KEYS = ("steps", "cost", "efficiency")  # issue 19: cost (prices), per sample
# Engine options added later, left out of the comparison while they hold their default
# (a golden made before them has no such key); any other value still differs.
NEW_ENGINE_DEFAULTS: dict[str, object] = {"context_window": None, "context_tokenizer": None}
# The manifest records the command line; the goldens are made and checked under this one.
ARGV = ["evoforge-goldens"]


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def answer_reply(messages: list[dict], _n: int) -> str:
    prompt = messages[-1]["content"]
    return f"An answer of {len(prompt.split())} words, number {_digest(prompt) % 997}."


def evolve_reply(messages: list[dict], _n: int) -> str:
    """Evol-Instruct rewrites that grow by a clause, and answers; a few are refused."""
    system = messages[0]["content"]
    prompt = messages[-1]["content"]
    digest = _digest(system + prompt)
    if "#Given Prompt#" in prompt or "#Created Prompt#" in prompt or "Prompt#" in prompt:
        given = prompt.rsplit("#:", 1)[-1].strip().splitlines()[0] if "#:" in prompt else prompt
        if digest % 7 == 0:
            return ""  # empty_instruction
        if digest % 7 == 1:
            return given  # no_information_gain
        words = given.split()[:30]
        return " ".join(words) + f" Also consider case {digest % 89} and explain the steps."
    if digest % 9 == 0:
        return "Sorry, I cannot help with that."
    return f"A full answer with {digest % 50 + 20} details: first, second and third."


def deita_reply(messages: list[dict], _n: int) -> str:
    digest = _digest(messages[-1]["content"])
    return json.dumps({"score": digest % 6 + 1})


def _rag_responder() -> Callable[[list[dict], int], str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import rag_responder

    return rag_responder


def in2_reply(messages: list[dict], _n: int) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    if "numbered pieces" in system:
        first = re.search(r"# Piece 1: (.*?)\.", user).group(1)
        second = re.search(r"# Piece 2: (.*?)\.", user).group(1)
        return json.dumps(
            {
                "question": f"How do {first} and {second} relate?",
                "answer": f"{first}; and {second}.",
                "pieces": [1, 2],
            }
        )
    text = user.split("Text:", 1)[1].strip()
    sentence = text.split(".")[0]
    return json.dumps({"question": f"What is said about {sentence}?", "answer": sentence})


def _write(path: Path, rows: list[dict], extra: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + extra)
    return path


def instruction_seeds(folder: Path) -> Path:
    topics = ["rain", "binary search", "tax law", "bread", "orbits", "chess", "tides", "jazz"]
    rows = [
        {"id": f"s{i:02d}", "instruction": f"Explain {topic} to a child in {i + 2} sentences."}
        for i, topic in enumerate(topics)
    ]
    rows.append({"id": "s03", "instruction": "A duplicate id."})
    return _write(folder / "seeds.jsonl", rows, extra="{not json}\n")


def corpus(folder: Path) -> Path:
    import random

    rng = random.Random(7)
    topics = ["harbour", "glacier", "orchard", "comet", "bridge", "violin", "desert", "forest"]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(12):
        topic = topics[i % len(topics)]
        sentences = [
            f"The {topic} number {i} has feature {j} named {rng.choice(topics)}{rng.randrange(99)}."
            for j in range(40)
        ]
        (folder / f"doc{i:02d}.txt").write_text(" ".join(sentences))
    return folder


def scored_pool(folder: Path) -> Path:
    rows = []
    for i in range(30):
        base = f"Describe the history of city number {i % 12} and its main market"
        rows.append(
            {
                "id": f"r{i:02d}",
                "kind": "instruction",
                "instruction": base + ("" if i < 12 else f" in year {1900 + i}"),
                "input": "",
                "output": f"The city {i % 12} grew around its market; fact {i}.",
                "parent_id": None,
                "lineage": [],
                "meta": {},
            }
        )
    rows.append(dict(rows[3], id="r99"))  # an exact duplicate
    return _write(folder / "pool.jsonl", rows)


def run_answer(folder: Path) -> Path:
    from evoforge import EngineOptions
    from evoforge.api import answer
    from evoforge.testing.scripted import ScriptedChatModel

    out = folder / "answer" / "data.jsonl"
    answer(
        instruction_seeds(folder / "in"),
        out,
        options=EngineOptions(quiet=True, seed=7, cache=False),
        model=ScriptedChatModel(answer_reply),
    )
    return out


def run_evolve(folder: Path) -> Path:
    from evoforge import EngineOptions
    from evoforge.api import EvolveOptions, evolve
    from evoforge.testing.scripted import ScriptedChatModel

    out = folder / "evolve" / "data.jsonl"
    evolve(
        instruction_seeds(folder / "in"),
        out,
        evolution=EvolveOptions(rounds=2, answers=True, judge=False, final_only=False),
        options=EngineOptions(quiet=True, seed=7, cache=False),
        model=ScriptedChatModel(evolve_reply),
    )
    return out


def run_rag(folder: Path) -> Path:
    from evoforge import EngineOptions
    from evoforge.api import RagOptions, rag
    from evoforge.testing.scripted import ScriptedChatModel

    out = folder / "rag" / "data.jsonl"
    rag(
        [DOCS],
        out,
        rag=RagOptions(n=10, embedder="hashing", chunk_size=400, chunk_overlap=40),
        options=EngineOptions(quiet=True, seed=7, cache=False),
        model=ScriptedChatModel(_rag_responder()),
    )
    return out


def run_in2(folder: Path) -> Path:
    from evoforge import EngineOptions
    from evoforge.api import In2Options, in2
    from evoforge.testing.scripted import ScriptedChatModel

    out = folder / "in2" / "data.jsonl"
    settings = {"tokenizer": "regex", "min_tokens": 300, "max_tokens": 1200, "segment_tokens": 32}
    in2(
        [corpus(folder / "corpus")],
        out,
        in2=In2Options(n=8, **settings),
        options=EngineOptions(quiet=True, seed=7, cache=False),
        model=ScriptedChatModel(in2_reply),
    )
    return out


def run_dedup(folder: Path) -> Path:
    from evoforge.api import dedup

    out = folder / "dedup" / "data.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    dedup(scored_pool(folder / "in"), out, method="exact,minhash", threshold=0.7, seed=1)
    return out


def run_select(folder: Path) -> Path:
    from evoforge import EngineOptions
    from evoforge.api import SelectOptions, select
    from evoforge.testing.scripted import ScriptedChatModel

    out = folder / "select" / "data.jsonl"
    select(
        scored_pool(folder / "in"),
        out,
        selection=SelectOptions(method="deita", budget=10, embedder="hashing"),
        options=EngineOptions(quiet=True, seed=7, cache=False),
        model=ScriptedChatModel(deita_reply),
    )
    return out


RUNS: dict[str, Callable[[Path], Path]] = {
    "answer": run_answer,
    "evolve": run_evolve,
    "rag": run_rag,
    "in2": run_in2,
    "dedup": run_dedup,
    "select": run_select,
}


def artifacts(out: Path) -> dict[str, Path]:
    stem = out.stem
    return {
        "kept": out,
        "rejects": out.with_name(f"{stem}.rejects.jsonl"),
        "manifest": out.with_name(f"{stem}.manifest.json"),
    }


def comparable_rejects(text: str) -> list[dict]:
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    for row in rows:
        for key in NEW_REJECT_KEYS:
            row.pop(key, None)
    return rows


def comparable_manifest(text: str) -> dict:
    """The manifest without the fields allowed to differ between two runs."""
    manifest = json.loads(text)
    for key in (*VOLATILE_MANIFEST_KEYS, *NEW_MANIFEST_KEYS):
        manifest.pop(key, None)
    engine = manifest.get("engine")
    for key, default in NEW_ENGINE_DEFAULTS.items():
        if isinstance(engine, dict) and key in engine and engine[key] == default:
            del engine[key]
    return manifest


def main(target: Path = HERE) -> None:
    import os
    import tempfile

    sys.argv = list(ARGV)
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # every path the runs write is relative to the run folder
        for name, run in RUNS.items():
            out = run(Path(name + "-run"))
            for part, path in artifacts(out).items():
                dest = target / name / f"{part}{path.suffix}"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, dest)
                print(f"{name}: {part} {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
