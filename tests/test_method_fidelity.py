"""Issue 14: the paper's behaviour is the default, per method (LTD k-center, DEITA
scoring, Evol-Instruct's rules and rounds, VaL probing's top line)."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext
from evoforge.errors import ConfigError
from evoforge.options import SelectOptions
from evoforge.records import Record
from evoforge.testing.scripted import ScriptedChatModel
from evoforge.validators.select import DeitaScorer, select_kcenter, text_of

# --- LTD k-center: one global farthest-point loop from the centroids ---------------------


class TableEmbedder:
    """Vectors by record text, for exact geometry."""

    identity = {"backend": "table"}

    def __init__(self, table: dict[str, np.ndarray]) -> None:
        self.table = table
        self.dim = len(next(iter(table.values())))

    def embed(self, texts):
        return [self.table[t] for t in texts]


def unequal_clusters(seed: int) -> tuple[list[Record], TableEmbedder, np.ndarray]:
    """One big tight cluster and 3-5 small, spread ones on the unit sphere in 8-D."""
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(80, 160))] + [
        int(rng.integers(4, 15)) for _ in range(int(rng.integers(3, 6)))
    ]
    spreads = [0.05] + [float(rng.uniform(0.15, 0.4)) for _ in sizes[1:]]
    parts = []
    for size, spread in zip(sizes, spreads, strict=True):
        centre = rng.normal(size=8)
        parts.append(centre / np.linalg.norm(centre) + spread * rng.normal(size=(size, 8)))
    points = np.concatenate(parts)
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    records = [
        Record("instruction", {"instruction": f"point {i}", "output": "o"}, id=f"p{i}")
        for i in range(len(points))
    ]
    table = {text_of(r): points[i] for i, r in enumerate(records)}
    return records, TableEmbedder(table), points


def covering_radius(points: np.ndarray, selected: list[Record]) -> float:
    """The k-center objective: the largest distance of any point to its nearest centre."""
    centres = points[[int(r.id[1:]) for r in selected]]
    distances = np.sqrt(((points[:, None, :] - centres[None]) ** 2).sum(axis=-1))
    return float(distances.min(axis=1).max())


def test_global_kcenter_covers_unequal_clusters_better_than_the_per_cluster_split():
    global_radii, split_radii = [], []
    for seed in range(20):
        records, embedder, points = unequal_clusters(seed)
        kw = {"budget": 20, "embedder": embedder, "k": 4, "seed": seed}
        default, _ = select_kcenter(records, **kw)
        explicit, _ = select_kcenter(records, **kw, mode="global")
        split, _ = select_kcenter(records, **kw, mode="per-cluster")
        assert [r.id for r in default] == [r.id for r in explicit]  # the paper's is default
        assert len(default) == len(split) == 20
        global_radii.append(covering_radius(points, default))
        split_radii.append(covering_radius(points, split))
    assert all(g <= s for g, s in zip(global_radii, split_radii, strict=True))
    assert np.mean(global_radii) < np.mean(split_radii)


def test_global_kcenter_starts_at_the_points_nearest_the_centroids():
    # Three tight pairs: with k = 3 and a budget of 3, one point of each pair.
    vectors = {
        "a": [1.0, 0.0, 0.0], "a2": [0.99, 0.1, 0.0],
        "b": [0.0, 1.0, 0.0], "b2": [0.1, 0.99, 0.0],
        "c": [0.0, 0.0, 1.0], "c2": [0.0, 0.1, 0.99],
    }  # fmt: skip
    records = [Record("instruction", {"instruction": k, "output": ""}, id=k) for k in vectors]
    table = {text_of(r): np.array(vectors[r.id]) for r in records}
    selected, dropped = select_kcenter(records, 3, TableEmbedder(table), k=3, seed=0)
    assert len({r.id[0] for r in selected}) == 3
    assert {d.reason for d in dropped} == {"not_selected"}
    # a budget below K keeps the budget
    assert len(select_kcenter(records, 2, TableEmbedder(table), k=3, seed=0)[0]) == 2


def test_kcenter_mode_is_checked():
    with pytest.raises(ConfigError, match="did you mean 'per-cluster'"):
        SelectOptions(method="kcenter", budget=3, kcenter_mode="per_cluster")
    assert SelectOptions().kcenter_mode == "global"
    with pytest.raises(ConfigError, match="mode 'local'"):
        select_kcenter([], 1, TableEmbedder({"x": np.zeros(2)}), mode="local")


# --- DEITA: every record scored alone by default ----------------------------------------


def deita_judge(messages, _n):
    user = messages[-1]["content"]
    if "[Instruction 1]" in user or "[Response 1]" in user:
        return '{"scores": [1, 2, 6]}'
    return '{"score": 3}' if "##Complexity" in user else '{"score": 4}'


def score(record: Record, **kw):
    model = ScriptedChatModel(deita_judge)
    result = asyncio.run(DeitaScorer(**kw)(record, RecordContext(LLMClient(model), 0, record.id)))
    return result.records[0].meta["deita"], model.calls


CHAINED = Record(
    "instruction",
    {"instruction": "Sort a list stably in O(n log n).", "output": "Use merge sort."},
    id="s/r1/r2",
    meta={
        "instruction_chain": ["Sort a list.", "Sort a list quickly."],
        "response_chain": ["sorted()", "Use a sort."],
    },
)
ALONE = Record("instruction", {"instruction": "Sort a list.", "output": "sorted()"}, id="s")


def test_deita_scores_a_chained_record_with_the_single_record_prompts_by_default():
    deita, calls = score(CHAINED)
    assert deita == {"complexity": 3.0, "quality": 4.0, "score": 12.0}
    assert len(calls) == 2
    assert all("[Instruction 1]" not in c["messages"][-1]["content"] for c in calls)
    # the same prompts and score as a record without a chain: comparable across the set
    alone, _ = score(ALONE)
    assert alone == deita


def test_deita_chain_mode_is_the_papers_labelling_step():
    deita, calls = score(CHAINED, mode="chain")
    assert deita["chain"] == {"complexity": [1.0, 2.0, 6.0], "quality": [1.0, 2.0, 6.0]}
    assert deita["score"] == 36.0 and len(calls) == 2
    assert SelectOptions().deita_mode == "record"
    with pytest.raises(ConfigError, match="mode 'chains'"):
        DeitaScorer(mode="chains")
    with pytest.raises(ConfigError, match="did you mean 'chain'"):
        SelectOptions(deita_mode="chains")


def test_select_passes_the_deita_mode_to_the_scorer(tmp_path):
    from evoforge import EngineOptions
    from evoforge.api import select

    seeds = tmp_path / "in.jsonl"
    seeds.write_text(json.dumps(CHAINED.to_json()) + "\n")
    for mode, want in (("record", 12.0), ("chain", 36.0)):
        out = tmp_path / mode / "data.jsonl"
        select(
            seeds, out,
            selection=SelectOptions(method="deita", budget=1, tau=1.0, deita_mode=mode),
            options=EngineOptions(quiet=True, cache=False),
            model=ScriptedChatModel(deita_judge),
        )  # fmt: skip
        kept = [json.loads(line) for line in out.read_text().splitlines()]
        assert kept[0]["meta"]["deita"]["score"] == want


# --- Evol-Instruct: answers and the union of all rounds by default ----------------------


def evol_reply(messages, _n):
    """Rewrites grow by a clause; the judge says Not Equal; answers answer, but the
    answer to a rewrite of seed 1 refuses and one of seed 2 is only stop words."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if "prompt rewriter" in system or "prompt creator" in system:
        given = user.split("#The Given Prompt#:")[-1].split("#Given Prompt#:")[-1].strip()
        if "seed 3" in given and "Also" in given:
            return "#Rewritten Prompt#: " + given.splitlines()[0]  # rule 4: prompt_leak
        return given.splitlines()[0] + " Also explain why."
    if "Equal" in user and "Not Equal" in user:
        return "Equal" if "seed 4" in user else "Not Equal"  # rule 1
    if "seed 1" in user and "Also" in user:
        return "Sorry, I cannot help with that."  # rule 2: refusal
    if "seed 2" in user and "Also" in user:
        return "the of and to a ."  # rule 3: empty_answer
    return "A complete and helpful answer with enough content words in it."


def run_evolve(tmp_path, name: str, **kw):
    from evoforge import EngineOptions
    from evoforge.api import EvolveOptions, evolve

    seeds = tmp_path / "seeds.jsonl"
    rows = [{"id": f"s{i}", "instruction": f"Describe seed {i} in detail."} for i in range(5)]
    seeds.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / name / "evolved.jsonl"
    summary = evolve(
        seeds, out, evolution=EvolveOptions(rounds=2, **kw),
        options=EngineOptions(quiet=True, cache=False), model=ScriptedChatModel(evol_reply),
    )  # fmt: skip
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return summary, records, out


def test_evolve_defaults_answer_every_round_and_keep_the_union(tmp_path):
    from evoforge.options import EvolveOptions

    defaults = EvolveOptions()
    assert defaults.answers is True and defaults.final_only is False
    summary, records, out = run_evolve(tmp_path, "default")
    # All four rules fire, rules 2 and 3 on the answers.
    assert summary.rejected_by_reason == {
        "refusal": 2, "empty_answer": 2, "prompt_leak": 1, "no_information_gain": 2,
    }  # fmt: skip
    # The union: each seed (round 0) and every accepted round, answered.
    assert len(records) == 5 + 5 * 2 - 7
    assert all(r["output"] for r in records if "/r" in r["id"])
    manifest = json.loads(out.with_name("evolved.manifest.json").read_text())
    assert manifest["config"]["evolve"]["keep_all_rounds"] is True
    assert "final_only" not in manifest["config"]["evolve"]


def test_no_answers_and_final_only_opt_out(tmp_path):
    summary, records, _ = run_evolve(tmp_path, "opt-out", answers=False, final_only=True)
    assert len(records) == 5  # one final version per seed
    assert "refusal" not in summary.rejected_by_reason
    assert "empty_answer" not in summary.rejected_by_reason
    assert not any(r.get("output") for r in records if "/r" in r["id"])


def test_keep_all_rounds_still_works_with_a_deprecation_warning():
    from evoforge.options import EvolveOptions

    with pytest.warns(FutureWarning, match="--final-only"):
        kept = EvolveOptions(keep_all_rounds=True)
    assert kept.final_only is False
    with pytest.warns(FutureWarning, match="deprecated"):
        final = EvolveOptions(keep_all_rounds=False)
    assert final.final_only is True
    with pytest.raises(ConfigError, match="contradict"):
        EvolveOptions(keep_all_rounds=True, final_only=True)


def test_the_cli_flags_final_only_no_answers_and_the_deprecated_one(tmp_path):
    from helpers import run_cli

    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text('{"id": "s0", "instruction": "Describe seed 0."}\n')
    args = ["evolve", "--seeds", str(seeds), "--rounds", "1", "--dry-run", "--json"]
    # (flags, records written, calls: evolve + judge [+ answer], warned)
    for i, (extra, accepted, calls, warned) in enumerate((
        ([], 2, 3, False),
        (["--final-only", "--no-answers"], 1, 2, False),
        (["--keep-all-rounds"], 2, 3, True),
    )):  # fmt: skip
        result = run_cli(*args, "--out", str(tmp_path / f"o{i}.jsonl"), *extra)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout)
        assert (summary["accepted"], summary["calls"]) == (accepted, calls), extra
        assert ("--keep-all-rounds is deprecated" in result.stderr) is warned, result.stderr


def test_the_report_counts_each_of_the_four_rules(tmp_path):
    from evoforge.report.data import discover_stages
    from evoforge.report.sections import build_sections
    from evoforge.report.trace import Lineage

    _, _, out = run_evolve(tmp_path, "report")
    sections, _ = build_sections(Lineage(discover_stages(out.parent)), [])
    (section,) = [s for s in sections if s.id == "elimination"]
    (table,) = [b for b in section.blocks if b["type"] == "table"]
    assert [(row[0], row[1], row[3]) for row in table["rows"]] == [
        ("1", "no_information_gain", "2"), ("2", "refusal", "2"),
        ("3", "empty_answer", "2"), ("4", "prompt_leak", "1"),
    ]  # fmt: skip
    _, _, out = run_evolve(tmp_path, "no-answers", answers=False)
    sections, _ = build_sections(Lineage(discover_stages(out.parent)), [])
    (section,) = [s for s in sections if s.id == "elimination"]
    rows = section.blocks[-1]["rows"]
    assert [row[3] for row in rows[1:3]] == ["off", "off"]


def test_a_recipe_with_the_deprecated_key_still_loads(tmp_path):
    from evoforge.recipe.loader import load_recipe

    (tmp_path / "s.jsonl").write_text('{"instruction": "x"}\n')
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "source: {seeds: s.jsonl}\ngenerator: {type: evolve, keep_all_rounds: false}\n"
    )
    with pytest.warns(FutureWarning, match="final_only"):
        loaded = load_recipe(recipe)
    assert loaded.generator.final_only is True and loaded.generator.answers is True
