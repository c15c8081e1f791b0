"""Determinism (same inputs, seed and cache -> the same bytes) and cache exactness
(a change to template, model, params or schema misses exactly the calls it touches)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from evoforge.engine.client import LLMClient
from evoforge.engine.store import ResponseCache
from evoforge.llm.openai_backend import OpenAIChatModel
from evoforge.prompting import parse_template
from evoforge.testing.fake_openai import Reply

pytestmark = pytest.mark.reliability

SEEDS = (
    "".join(json.dumps({"id": f"s{i:02d}", "instruction": f"Explain idea {i}."}) + "\n"
    for i in range(24))
    + '{"id": "s03", "instruction": "A duplicate id."}\n'
    + "{not json}\n"
)  # fmt: skip


def run_in(folder: Path, server, command: list[str], cache: Path) -> subprocess.CompletedProcess:
    """The CLI with relative paths from ``folder``, as a user would run it twice."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "seeds.jsonl").write_text(SEEDS)
    env = {**os.environ, "EVOFORGE_CACHE_DIR": str(cache)}
    args = [
        sys.executable, "-m", "evoforge.cli", *command, "--seeds", "seeds.jsonl",
        "--out", "out/data.jsonl", "--llm", f"openai:fake-model@{server.base_url}",
        "--concurrency", "8", "--seed", "11", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(args, cwd=folder, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    return result


def artifacts(folder: Path) -> dict[str, bytes]:
    out = folder / "out"
    return {name: (out / name).read_bytes() for name in ("data.jsonl", "data.rejects.jsonl")}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "out" / "data.manifest.json").read_text())


@pytest.mark.parametrize(
    "command",
    [["answer"], ["evolve", "--rounds", "2", "--answers", "--no-judge"]],
    ids=["answer", "evolve"],
)
def test_same_inputs_seed_and_cache_give_byte_identical_outputs(fake_openai, tmp_path, command):
    """Two runs in two folders, replies arriving in a random order: the outputs and
    rejects are byte-identical and the manifests differ only in their "timing" field. A
    third run from the first run's cache writes the same bytes without a call."""
    jitter = random.Random(5)
    fake_openai.responder = lambda request: Reply(delay=jitter.uniform(0, 0.03))
    first = tmp_path / "first"
    second = tmp_path / "second"
    run_in(first, fake_openai, command, tmp_path / "cache-1")
    run_in(second, fake_openai, command, tmp_path / "cache-2")
    assert artifacts(first) == artifacts(second)
    assert artifacts(first)["data.jsonl"].count(b"\n") >= 24
    a, b = manifest(first), manifest(second)
    # The one field allowed to differ: when the run started and how long it took.
    assert set(a.pop("timing")) == set(b.pop("timing")) == {"started_at", "wall_s"}
    assert a == b
    assert (first / "out" / "data.manifest.json").read_text().count("started_at") == 1

    hits = fake_openai.hits
    third = tmp_path / "third"
    run_in(third, fake_openai, command, tmp_path / "cache-1")
    assert fake_openai.hits == hits, "an identical re-run makes zero calls"
    assert artifacts(third) == artifacts(first)
    c = manifest(third)
    c.pop("timing")
    usage_a, usage_c = a.pop("usage"), c.pop("usage")
    # Derived from usage, so they differ as it does: calls made (and paid) by this run.
    efficiency_a, efficiency_c = a.pop("efficiency"), c.pop("efficiency")
    cost_a, cost_c = a.pop("cost"), c.pop("cost")
    assert c == a
    assert all(stats["calls"] == 0 for stats in usage_c.values())
    assert efficiency_c["calls"] == 0
    assert efficiency_a["calls"] == sum(s["calls"] for s in usage_a.values()) > 0
    assert efficiency_c["accepted"] == efficiency_a["accepted"]
    assert cost_c.get("usd_online") in (0, None) and set(cost_c) == set(cost_a)
    assert sum(s["cache_hits"] for s in usage_c.values()) == sum(
        s["calls"] for s in usage_a.values()
    )


TEMPLATE = """
id: probe
version: 1
variables: [text]
messages:
  - role: user
    content: "{prefix} {{{{ text }}}}"
output_schema: {schema}
"""
SCHEMA_A = '{"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}'
SCHEMA_B = '{"type": "object", "required": ["b"], "properties": {"b": {"type": "string"}}}'


def test_changing_template_model_params_or_schema_misses_exactly_the_affected_calls(
    fake_openai, tmp_path
):
    cache_path = tmp_path / "cache.db"
    summarise = parse_template(TEMPLATE.format(prefix="Sum:", schema=SCHEMA_A), source="s.yaml")
    translate = parse_template(TEMPLATE.format(prefix="Tr:", schema=SCHEMA_A), source="t.yaml")
    texts = [f"text {i}" for i in range(5)]

    def calls(templates, *, model="m1", params=None) -> int:
        """Ask every template about every text through a fresh client on the same cache;
        return how many requests reached the server."""
        before = fake_openai.hits

        async def go():
            cache = ResponseCache(cache_path)
            client = LLMClient(
                OpenAIChatModel(model, base_url=fake_openai.base_url),
                cache=cache,
                params=params or {"max_tokens": 64},
            )
            try:
                for template in templates:
                    for text in texts:
                        await client.complete(
                            template.render(text=text),
                            op=template.id,
                            schema=template.output_schema,
                            tag=template.content_hash,
                        )
            finally:
                await client.aclose()
                cache.close()

        asyncio.run(go())
        return fake_openai.hits - before

    assert calls([summarise, translate]) == 10
    assert calls([summarise, translate]) == 0, "an identical re-run makes zero calls"
    # Edit one template: only its five calls miss; the other template's still hit.
    edited = parse_template(
        TEMPLATE.format(prefix="Sum:", schema=SCHEMA_A) + "# reworded\n", source="s.yaml"
    )
    assert edited.content_hash != summarise.content_hash
    assert calls([edited, translate]) == 5
    assert calls([edited, translate]) == 0
    # Another schema for one template: five misses.
    reschema = parse_template(TEMPLATE.format(prefix="Tr:", schema=SCHEMA_B), source="t.yaml")
    assert calls([summarise, reschema]) == 5
    # Another model, or other params: every call of that client misses ...
    assert calls([summarise], model="m2") == 5
    assert calls([summarise], params={"max_tokens": 64, "temperature": 0.7}) == 5
    # ... and going back to the first settings hits again: nothing was overwritten.
    assert calls([summarise, translate, edited, reschema]) == 0


@pytest.mark.parametrize("generator", ["rag", "in2"])
def test_rag_and_in2_runs_are_byte_identical(fake_openai, tmp_path, generator):
    """The document generators too: two runs (replies in random order, separate caches)
    write the same bytes, and manifests that differ only in "timing"."""
    from test_in2 import in2_responder, make_corpus
    from test_rag import DOCS

    from helpers import rag_responder

    jitter = random.Random(9)
    if generator == "rag":
        reply = rag_responder
        command = [
            "rag", "--docs", str(DOCS), "--n", "8", "--embedder", "hashing",
            "--chunk-size", "400",
        ]  # fmt: skip
    else:
        reply = in2_responder
        corpus = make_corpus(tmp_path / "corpus", n_docs=8)
        command = [
            "in2", "--corpus", str(corpus), "--n", "5", "--tokenizer", "regex",
            "--min-tokens", "300", "--max-tokens", "900", "--segment-tokens", "32",
        ]  # fmt: skip
    fake_openai.responder = lambda request: Reply(
        content=reply(request.messages, request.n), delay=jitter.uniform(0, 0.02)
    )
    outputs = []
    for name in ("first", "second"):
        folder = tmp_path / name
        folder.mkdir()
        env = {**os.environ, "EVOFORGE_CACHE_DIR": str(tmp_path / f"cache-{name}")}
        args = [
            sys.executable, "-m", "evoforge.cli", *command, "--out", "out/data.jsonl",
            "--llm", f"openai:fake-model@{fake_openai.base_url}", "--seed", "4",
            "--concurrency", "6", "--quiet",
        ]  # fmt: skip
        result = subprocess.run(
            args, cwd=folder, capture_output=True, text=True, timeout=180, env=env
        )
        assert result.returncode == 0, result.stderr
        data = {p.name: p.read_bytes() for p in sorted((folder / "out").glob("data*.jsonl"))}
        meta = manifest(folder)
        meta.pop("timing")
        outputs.append((data, meta))
    assert outputs[0][0] and outputs[0][0]["data.jsonl"]
    assert outputs[0] == outputs[1]
