"""Model signals on the embedded model (issue 17's "Done when"): IFD ranks copies below
instruction-dependent answers below generic ones; real facts score a higher
memorisation level than made-up ones; a re-run makes zero forward passes.

The fixtures are fixed in tests/fixtures/model_signals/ and short, so the whole file
stays small: one model load, batches of 8, short texts."""

from __future__ import annotations

import asyncio
import json
from itertools import product
from pathlib import Path

import pytest

from evoforge.commands.select_signals import select_signal_async
from evoforge.llm.losses import LocalLossModel
from evoforge.options import EngineOptions, SelectOptions
from evoforge.validators.select.ifd import IfdScorer
from evoforge.validators.select.memorisation import MemorisationScorer

# Measured only on a loaded development box (2 cores shared by eight agents, load
# average 10-20): 4-5 minutes per model test there, hence the longer timeout.
pytestmark = [pytest.mark.slow, pytest.mark.requires_local, pytest.mark.timeout(900)]

FIXTURES = Path(__file__).parent / "fixtures" / "model_signals"


def load(name: str) -> list[dict]:
    with open(FIXTURES / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def auc(lower: list[float], higher: list[float]) -> float:
    """P(a value from ``lower`` < a value from ``higher``), ties half."""
    pairs = list(product(lower, higher))
    return sum((a < b) + 0.5 * (a == b) for a, b in pairs) / len(pairs)


@pytest.fixture(scope="module")
def model() -> LocalLossModel:
    return LocalLossModel(batch_size=8)


def test_ifd_ranks_copy_below_dependent_below_generic(model, tmp_path):
    rows = load("ifd_pairs.jsonl")
    groups = {row["group"] for row in rows}
    assert groups == {"copy", "dependent", "generic"}
    assert all(sum(r["group"] == g for r in rows) >= 20 for g in groups)
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "ifd.jsonl"
    options = EngineOptions(quiet=True)
    selection = SelectOptions(method="ifd", budget=len(rows), max_answer_tokens=64)
    asyncio.run(select_signal_async(source, out, selection=selection, options=options,
                                    loss_model=model))  # fmt: skip
    scored = {}
    for path in (out, out.with_name("ifd.rejects.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            data = json.loads(line)
            record = data.get("record", data)
            scored[record["id"]] = record["meta"]["ifd"]
    assert len(scored) == len(rows)
    by_group: dict[str, list[float]] = {g: [] for g in groups}
    for row in rows:
        block = scored[row["id"]]
        assert block["model"] == model.identity
        by_group[row["group"]].append(block["score"])
    assert auc(by_group["copy"], by_group["dependent"]) >= 0.8
    assert auc(by_group["dependent"], by_group["generic"]) >= 0.8
    assert auc(by_group["copy"], by_group["generic"]) >= 0.8

    # A re-run of the same command: every score from the cache, no forward pass.
    before = model.forward_passes
    report = asyncio.run(select_signal_async(source, tmp_path / "again.jsonl", selection=selection,
                                             options=options, loss_model=model))  # fmt: skip
    assert model.forward_passes == before and report["signals"]["forward_passes"] == 0
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()


def test_real_facts_score_a_higher_memorisation_level(model):
    facts = load("memorisation_facts.jsonl")
    assert sum(f["group"] == "real" for f in facts) == 20
    assert sum(f["group"] == "made_up" for f in facts) == 20
    scorer = MemorisationScorer(model, templates=2, max_new_tokens=8)
    blocks = scorer.score_batch(facts)
    levels = {"real": [], "made_up": []}
    for fact, block in zip(facts, blocks, strict=True):
        levels[fact["group"]].append(block["level"])
    real = sum(levels["real"]) / 20
    made_up = sum(levels["made_up"]) / 20
    assert real >= made_up + 0.2, (levels["real"], levels["made_up"])


def test_ifd_scorer_truncates_both_losses_alike(model):
    long_answer = "one two three four five six seven eight nine ten " * 20
    [short] = IfdScorer(model, max_answer_tokens=16).score_batch(
        [{"id": "a", "kind": "instruction", "instruction": "Count.", "output": long_answer}]
    )
    assert short["answer_tokens"] == 16 and short["max_answer_tokens"] == 16
