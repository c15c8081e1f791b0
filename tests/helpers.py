"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line.strip()]


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run the installed ``evoforge`` command as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "evoforge.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )


def prompt_parts(messages: list[dict]) -> tuple[str, str]:
    """``(instructions, user)`` of a prompt, for scripted models that tell templates
    apart by their instructions. A RAG template (issue 19: the shared ``rag``
    preamble as system message, then one user message ``Contexts: [1] ... Task: ...``)
    gives the text after ``Task:`` (instructions, examples, question, ...) and the
    whole user message; any other prompt its system message (or "") and its last
    message."""
    from evoforge.testing.scripted import rag_prompt

    user = messages[-1]["content"] if messages else ""
    rag = rag_prompt(messages)
    if rag is not None:
        return rag[0], user
    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    return system, user


def _first_sentence(text: str) -> str:
    import re

    text = text.strip()
    match = re.search(r"(.+?[.!?。！？])(\s|$)", text, re.S)
    sentence = (match.group(1) if match else text[:200]).strip()
    return " ".join(sentence.split())


def _is_chinese(text: str) -> bool:
    return sum("\u4e00" <= ch <= "\u9fff" for ch in text) > len(text) / 4


def rag_responder(messages: list[dict], n: int) -> str:
    """A scripted model that plays every role of the RAG pipeline plausibly: seed
    questions grounded in the passage, rewrites (conversations by named parts, or
    turns for a prompt that asks for them), compressions, yes-verdicts, Not Equal,
    context scores (low for a passage under 25 words) and keyphrases."""
    import re

    from evoforge.testing.scripted import rag_prompt

    system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
    user = messages[-1]["content"]
    contexts: list[str] = []
    rag = rag_prompt(messages)
    if rag is not None:  # a RAG template: the shared preamble, the contexts, then the task
        system, contexts = rag
        user = system
    elif "Passage:" in user:  # a prompt in the layout before issue 19 (a benchmark's baseline)
        contexts = [user.split("Passage:", 1)[1]]
    if "You write questions for a test set" in system:
        passage = contexts[0].split("\n\n")[0]
        answer = _first_sentence(passage)
        if _is_chinese(passage):
            return json.dumps({"question": f"{answer[:10]}是怎么回事？", "answer": answer})
        words = re.findall(r"[A-Za-z']+", answer)[:7]
        return json.dumps({"question": f"What is known about {' '.join(words)}?", "answer": answer})
    if "You assess passages" in system:  # the node filter: a short passage scores low
        passage = contexts[0]
        low = len(re.findall(r"\w+", passage)) < 25 and not _is_chinese(passage)
        scores = [1, 1, 2, 1] if low else [3, 2, 3, 3]
        criteria = ["clarity", "depth", "structure", "relevance"]
        return json.dumps(dict(zip(criteria, scores, strict=True)))
    if "You extract keyphrases" in system:
        passage = contexts[0]
        names = list(dict.fromkeys(re.findall(r"\b[A-Z][a-z]{3,}\b", passage)))
        return json.dumps({"keyphrases": (names + ["topic", "detail", "fact"])[:3]})
    if "You rewrite questions" in system:
        question = re.search(r"question: (.*)", user).group(1).strip()
        answer = re.search(r"answer: (.*)", user).group(1).strip()
        chinese = _is_chinese(question)
        stem = question.rstrip("?？")
        if "shorter and more indirect" in system:  # compress
            core = " ".join(stem.split()[-5:]) if not chinese else stem[-8:]
            new = f"{core}, briefly?" if not chinese else f"简言之，{core}？"
            return json.dumps({"question": new, "answer": answer})
        if "first_question" in system:  # conversational, by named parts
            return json.dumps(
                {
                    "first_question": f"{stem}?" if not chinese else f"{stem}？",
                    "assistant_reply": answer[:60],
                    "follow_up": "And why does it matter?" if not chinese else "为什么重要？",
                    "answer": answer,
                }
            )
        if "turns" in system:
            turns = [
                {"role": "user", "content": f"{stem}?" if not chinese else f"{stem}？"},
                {"role": "assistant", "content": answer[:60]},
                {
                    "role": "user",
                    "content": "And why does it matter?" if not chinese else "为什么重要？",
                },
            ]
            return json.dumps({"turns": turns, "answer": answer})
        core = " ".join(stem.split()[-6:]) if not chinese else stem[-8:]
        new = f"Why, in short, {core}?" if not chinese else f"简单地说，为什么{core}？"
        return json.dumps({"question": new, "answer": answer})
    if "You repair samples" in system:
        question = re.search(r"Question:\s*(.*)", user)
        reference = re.search(r"Reference answer:\s*(.*)", user)
        return json.dumps(
            {"question": (question.group(1) if question else "What happened?").strip(),
             "reference": (reference.group(1) if reference else "It happened.").strip()}
        )  # fmt: skip
    if "several criteria" in system:  # the merged RAG judge (issue 19): yes, each criterion
        verdicts = {"grounded": "yes", "grounded_reason": "supported",
                    "answerable": "yes", "answerable_reason": "supported"}  # fmt: skip
        if "Seed question:" in user:
            verdicts.update(information_gain="Not Equal", information_gain_reason="it asks more")
        return json.dumps(verdicts)
    if "strict" in system:
        return json.dumps({"verdict": "yes", "reason": "supported"})
    if "compare two prompts" in system:
        return "Not Equal"
    return "ok"
