"""Rounds, chains, op weights and exact mixes shared by every evolver."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from evoforge import ConfigError, Record
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext, Rejection
from evoforge.evolvers.base import (
    Chain,
    EvolutionRounds,
    MixPlan,
    choose_op,
    exact_mix,
    parse_weights,
)
from evoforge.testing.scripted import ScriptedChatModel

OPS = ("reasoning", "multi_context", "conditional", "conversational", "compress")


class Alternating:
    """Rejects odd rounds, appends the round number on even ones."""

    name = "alternating"

    async def evolve(self, record, ctx, round_):
        if round_ % 2:
            return Rejection(f"{record.id}/r{round_}", "no_information_gain", "odd round")
        step = {"op": "alt", "round": round_}
        return record.derive(
            step, suffix=f"r{round_}", instruction=f"{record['instruction']}+{round_}"
        )


def run(task, record):
    ctx = RecordContext(LLMClient(ScriptedChatModel("x")), 0, record.id)
    return asyncio.run(task(record, ctx))


SEED = Record("instruction", {"instruction": "base"}, id="s")


def test_failed_rounds_keep_the_previous_version():
    result = run(EvolutionRounds(Alternating(), rounds=4), SEED)
    (final,) = result.records
    assert final["instruction"] == "base+2+4"
    assert [step["round"] for step in final.lineage] == [2, 4]
    assert [r.detail for r in result.rejections] == ["odd round", "odd round"]


def test_keep_all_rounds_writes_every_accepted_version_and_the_seed():
    result = run(EvolutionRounds(Alternating(), rounds=4, keep_all_rounds=True), SEED)
    assert [r["instruction"] for r in result.records] == ["base", "base+2", "base+2+4"]
    assert len(result.records) <= 4 + 1
    assert result.records[1].parent_id == "s" and result.records[2].parent_id == "s/r2"


def test_chain_feeds_every_record_to_the_next_stage():
    chain = Chain(
        [EvolutionRounds(Alternating(), 2, keep_all_rounds=True), EvolutionRounds(Alternating(), 2)]
    )
    result = run(chain, SEED)
    assert [r["instruction"] for r in result.records] == ["base+2", "base+2+2"]
    assert len(result.rejections) == 1 + 2


@pytest.mark.parametrize("n", [0, 1, 7, 10, 37, 1000])
def test_exact_mix_sums_to_n_and_is_within_one_of_each_share(n):
    weights = {
        "reasoning": 0.25,
        "multi_context": 0.25,
        "conditional": 0.25,
        "conversational": 0.25,
    }
    counts = exact_mix(n, weights)
    assert sum(counts.values()) == n
    for name, count in counts.items():
        assert abs(count - n * weights[name]) < 1


def test_mix_plan_gives_the_exact_counts_and_never_more():
    weights = parse_weights("reasoning=0.4,conditional=0.1,compress=0.5", OPS, flag="--mix")
    plan = MixPlan(37, weights, seed=3)
    counts = Counter(plan.op_for(i) for i in range(37))
    assert counts == Counter({k: v for k, v in exact_mix(37, weights).items() if v})
    assert plan.op_for(37) is None and plan.op_for(-1) is None
    # Reproducible, and not simply in input order.
    assert [plan.op_for(i) for i in range(37)] == [
        MixPlan(37, weights, seed=3).op_for(i) for i in range(37)
    ]
    assert [plan.op_for(i) for i in range(37)] != sorted(plan.op_for(i) for i in range(37))


def test_parse_weights_errors_name_the_fix():
    with pytest.raises(ConfigError, match="did you mean 'reasoning'"):
        parse_weights("reasoing=1", OPS)
    with pytest.raises(ConfigError, match="must be a number"):
        parse_weights("reasoning=lots", OPS)
    with pytest.raises(ConfigError, match="above 0"):
        parse_weights("reasoning=0", OPS)
    assert parse_weights(None, OPS) == {name: 1.0 for name in OPS}


def test_choose_op_follows_the_weights():
    import random

    rng = random.Random(1)
    weights = {"a": 2.0, "b": 1.0, "c": 0.0}
    draws = Counter(choose_op(rng, weights) for _ in range(3000))
    assert draws["c"] == 0
    assert 1.7 < draws["a"] / draws["b"] < 2.3
