"""Magpie on the embedded model, offline (issue 18): the pre-query text comes from
SmolLM2's own chat template, default system turn included."""

from __future__ import annotations

import json

import pytest

from evoforge import EngineOptions, GrowOptions, grow


@pytest.mark.slow
@pytest.mark.requires_local
@pytest.mark.timeout(600)  # ~30 s alone on 2 cores; more on a machine shared with other jobs
def test_magpie_on_the_embedded_model_writes_instructions_and_responses(tmp_path):
    out = tmp_path / "magpie.jsonl"
    summary = grow(
        None, out, grow=GrowOptions(method="magpie", n=5),
        options=EngineOptions(quiet=True, max_output_tokens=32, concurrency=8),
    )  # fmt: skip
    prefix = summary.extra["pre_query"]
    assert prefix.startswith("<|im_start|>system\n") and prefix.endswith("<|im_start|>user\n")
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5 and summary.exit_code == 0
    for record in records:
        instruction = record["instruction"]
        assert instruction.strip() and "<|im_" not in instruction
        assert instruction not in prefix and "You are a helpful AI assistant" not in instruction
        assert record["output"].strip()
        assert [step["op"] for step in record["lineage"]] == ["magpie_instruction",
                                                               "magpie_response"]  # fmt: skip
        assert record["meta"]["sampling"]["instruction"]["temperature"] == 1.0
