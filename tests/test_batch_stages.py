"""``--batch`` leftovers of issue 19, part 1: a multi-stage command (``rag``: seed
questions, rewrites, critics) sends each stage as batches and writes the online run's
records; ``--batch --executor ray`` runs on the driver, which submits and polls."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoforge import EngineOptions, answer
from evoforge.api import RagOptions, rag
from evoforge.engine import ray_executor
from evoforge.engine.batch_mode import RAY_NOTE
from evoforge.testing.fake_openai import FakeOpenAI
from helpers import prompt_parts, rag_responder

DOCS = Path(__file__).resolve().parent.parent / "examples" / "docs"
SMALL = {"embedder": "hashing", "chunk_size": 400, "chunk_overlap": 40}


def _responder(request):
    return rag_responder(request.messages, request.n)


def _options(server: FakeOpenAI, **extra) -> EngineOptions:
    settings = {"cache": False, "quiet": True, "batch_poll": 0.01, **extra}
    return EngineOptions(llm=f"openai:gpt-4o-mini@{server.base_url}", **settings)


ROLES = (("assess passages", "graph"), ("extract keyphrases", "graph"),
         ("rewrite questions", "rewrite"), ("write questions", "seed"))  # fmt: skip


def _role(messages: list[dict]) -> str:
    """What a request asks for, from its instructions (a RAG template's task, after the
    shared preamble and the contexts); the rest are the critics."""
    instructions, _ = prompt_parts(messages)
    return next((role for words, role in ROLES if words in instructions), "critic")


def _roles(server: FakeOpenAI) -> list[set[str]]:
    """Per batch, in the order created, the roles its requests play; the batch files
    were kept on the server for this."""
    roles = []
    for batch in server.batches.batches.values():
        lines = server.batches.files[batch["input_file_id"]].data.decode().splitlines()
        roles.append({_role(json.loads(line)["body"]["messages"]) for line in lines})
    return roles


def test_rag_batch_runs_stage_by_stage_and_writes_the_online_records(tmp_path):
    with FakeOpenAI(record=False, responder=_responder) as server:
        runs = {}
        for name, batch in (("online", False), ("batch", True)):
            runs[name] = rag(
                [DOCS], tmp_path / name / "eval.jsonl",
                rag=RagOptions(n=8, graph=str(tmp_path / name / "graph.json"), **SMALL),
                options=_options(server, batch=batch, keep_batch_files=batch),
            )  # fmt: skip
            if name == "online":
                assert server.batches.batches_created == 0
                online_hits = server.hits
        created = server.batches.batches_created
        sent_online = server.hits - online_hits
        roles = _roles(server)
    online, batched = runs["online"], runs["batch"]
    assert online.accepted == batched.accepted == 8
    assert (tmp_path / "online" / "eval.jsonl").read_text() == (
        tmp_path / "batch" / "eval.jsonl"
    ).read_text()
    assert sent_online == 0  # every call of the batch run went through a batch
    manifest = json.loads((tmp_path / "batch" / "eval.manifest.json").read_text())
    # the graph's node scores and keyphrases, the seed questions, the rewrites, the
    # critics: one stage after another, each its own batch (or batches)
    assert created >= 3 and len(manifest["batch"]["ids"]) == created == len(roles)
    first = {role: min(i for i, seen in enumerate(roles) if role in seen)
             for role in set().union(*roles)}  # fmt: skip
    assert roles[0] == {"graph"}  # the graph's node filter comes first
    assert first["seed"] < first["rewrite"] <= first["critic"]
    assert manifest["batch"]["requests"] == sum(op["calls"] for op in online.usage.values())
    assert manifest["cost"]["priced_at"] == "batch"
    assert manifest["cost"]["usd_batch"] == pytest.approx(
        manifest["cost"]["usd_online"] / 2, rel=1e-5
    )


def test_batch_with_the_ray_executor_runs_on_the_driver(tmp_path, capsys, monkeypatch):
    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started for a --batch run")

    monkeypatch.setattr(ray_executor, "connect", no_ray)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps({"id": f"s{i}", "instruction": f"Say {i}."}) + "\n"
                             for i in range(20)))  # fmt: skip
    with FakeOpenAI(record=False) as server:
        answer(seeds, tmp_path / "online.jsonl", options=_options(server))
        hits = server.hits
        summary = answer(
            seeds, tmp_path / "ray.jsonl", options=_options(server, batch=True, executor="ray")
        )
        assert server.batches.batches_created == 1 and server.hits == hits
    assert summary.accepted == 20
    assert (tmp_path / "ray.jsonl").read_text() == (tmp_path / "online.jsonl").read_text()
    assert not (tmp_path / "ray.shards").exists()
    assert RAY_NOTE in capsys.readouterr().err
    manifest = json.loads((tmp_path / "ray.manifest.json").read_text())
    assert manifest["engine"]["executor"] == "ray" and len(manifest["batch"]["ids"]) == 1
