"""Selection by model signals (issue 17) without the embedded model: a loss model that
counts its passes stands in, so scoring, caching, ranking, composition with DEITA /
k-center, the mining fit and the server backend's errors run in milliseconds."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.commands.select_signals import select_signal_async
from evoforge.errors import ConfigError, InputError
from evoforge.llm.losses import PairLoss, load_loss_model
from evoforge.llm.server_losses import ServerLossModel
from evoforge.options import EngineOptions, SelectOptions
from evoforge.validators.select import (
    APPROXIMATE_RULE,
    IfdScorer,
    fit_rule,
    select_ifd,
    select_memorisation,
)
from evoforge.validators.select.memorisation import MemorisationScorer, level_histogram, normalise
from evoforge.validators.select.mining import (
    PUBLISHED_RULES,
    knn_distances,
    mtld,
    published_rule,
)
from evoforge.validators.select.score_cache import ScoreCache, score_stream
from helpers import write_jsonl


class CountingLosses:
    """IFD = (2 / (1 + instruction words the answer shares)) / 1.9: an answer sharing no
    word has IFD > 1; counts its passes."""

    identity = "counting-losses"
    batch_size = 4

    def __init__(self) -> None:
        self.forward_passes = 0
        self.known = {"paris", "rome"}

    def pair_losses(self, pairs, *, max_answer_tokens):
        self.forward_passes += 1
        out = []
        for instruction, answer in pairs:
            if not answer:
                out.append(None)
                continue
            shared = len(set(instruction.lower().split()) & set(answer.lower().split()))
            out.append(PairLoss(2.0 / (1 + shared), 1.9, len(answer.split())))
        return out

    def greedy(self, prompts, *, max_new_tokens):
        self.forward_passes += 1
        return [" Paris is the one." if "France" in p else " I do not know." for p in prompts]


def instruction(i: int, text: str, output: str, **extra) -> dict:
    return {"id": f"r{i}", "kind": "instruction", "instruction": text, "output": output, **extra}


RECORDS = [
    instruction(0, "say the cat sat", "the cat sat"),  # copies: IFD low
    instruction(1, "what is a cat", "a small pet"),  # IFD 1 / 1.x
    instruction(2, "name a cat", "a cat named Tom"),
    instruction(3, "tell me", ""),  # empty answer: unscored
    instruction(4, "describe a dog", "loyal animals bark"),
]


def run(source, out, selection, model, **engine):
    options = EngineOptions(quiet=True, **engine)
    return asyncio.run(
        select_signal_async(source, out, selection=selection, options=options, loss_model=model)
    )


def rows(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_ifd_scores_ranks_and_drops_ifd_at_or_above_one(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    model = CountingLosses()
    report = run(source, tmp_path / "out.jsonl", SelectOptions(method="ifd", budget=1), model)
    kept = rows(tmp_path / "out.jsonl")
    rejects = {r["id"]: r for r in rows(tmp_path / "out.rejects.jsonl")}
    assert [r["id"] for r in kept] == ["r1"]  # the highest IFD below 1
    assert kept[0]["meta"]["ifd"]["model"] == "counting-losses"
    assert kept[0]["meta"]["ifd"]["score"] == pytest.approx(1.0 / 1.9, abs=1e-5)
    assert rejects["r3"]["reason"] == "unscored"
    assert rejects["r4"]["reason"] == "ifd_not_below_one"
    assert rejects["r0"]["reason"] == rejects["r2"]["reason"] == "over_budget"
    assert rejects["r0"]["record"]["meta"]["ifd"]["score"] < kept[0]["meta"]["ifd"]["score"]
    assert report["signals"]["forward_passes"] == model.forward_passes == 1  # one chunk


def test_a_rerun_makes_zero_forward_passes(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    first, second = CountingLosses(), CountingLosses()
    run(source, tmp_path / "a.jsonl", SelectOptions(method="ifd", budget=2), first)
    report = run(source, tmp_path / "b.jsonl", SelectOptions(method="ifd", budget=2), second)
    assert first.forward_passes > 0 and second.forward_passes == 0
    assert report["signals"]["forward_passes"] == 0
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    third = CountingLosses()  # --no-cache: scored again
    run(source, tmp_path / "c.jsonl", SelectOptions(method="ifd", budget=2), third, cache=False)
    assert third.forward_passes > 0


def test_the_cache_key_follows_the_settings(tmp_path):
    cache = ScoreCache(tmp_path / "scores.db")
    model = CountingLosses()
    records = RECORDS[:2]
    try:
        list(score_stream(records, IfdScorer(model, max_answer_tokens=512), cache))
        list(score_stream(records, IfdScorer(model, max_answer_tokens=512), cache))
        assert model.forward_passes == 1
        list(score_stream(records, IfdScorer(model, max_answer_tokens=64), cache))
        assert model.forward_passes == 2  # another truncation is another score
    finally:
        cache.close()  # Python 3.13 warns (an error here) on a connection left unclosed


def test_score_stream_holds_one_chunk(tmp_path):
    held = []

    class Recorder(CountingLosses):
        def pair_losses(self, pairs, *, max_answer_tokens):
            held.append(len(pairs))
            return super().pair_losses(pairs, max_answer_tokens=max_answer_tokens)

    many = (instruction(i, f"q {i}", f"a {i}") for i in range(1000))
    count = sum(1 for _ in score_stream(many, IfdScorer(Recorder()), None, chunk=50))
    assert count == 1000 and max(held) == 50


def test_ifd_then_deita_and_kcenter_compose(tmp_path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [instruction(i, f"topic {i % 3} question", f"topic {i % 3} answer {i}") for i in range(12)],
    )
    model = CountingLosses()
    selection = SelectOptions(method="ifd", budget=3, then="deita", tau=0.95, embedder="hashing")
    report = run(source, tmp_path / "d.jsonl", selection, model)
    assert report["selected"] == 3
    reasons = report["dropped_by_reason"]
    assert set(reasons) <= {"too_similar", "over_budget", "ifd_not_below_one"}
    selection = SelectOptions(method="ifd", budget=3, then="kcenter", embedder="hashing")
    report = run(source, tmp_path / "k.jsonl", selection, model)
    kept = rows(tmp_path / "k.jsonl")
    assert len(kept) == 3 and all("ifd" in r["meta"] for r in kept)
    assert report["dropped_by_reason"].get("not_selected", 0) > 0
    with pytest.raises(ConfigError, match="--then"):
        run(source, tmp_path / "x.jsonl", SelectOptions(method="ifd", then="random"), model)


def test_select_ifd_in_memory():
    records = [
        {**instruction(i, "q", "a"), "meta": {"ifd": {"score": s}}}
        for i, s in enumerate([0.2, 0.9, 1.3, 0.5])
    ]
    kept, dropped = select_ifd(records, 2)
    assert [r.id for r in kept] == ["r1", "r3"]
    assert {d.id: d.reason for d in dropped} == {"r0": "over_budget", "r2": "ifd_not_below_one"}


def test_memorisation_levels_histogram_and_band(tmp_path):
    facts = [
        {"id": "f1", "kind": "qa", "question": "What is the capital of France?",
         "answer": "Paris", "contexts": []},
        {"id": "f2", "kind": "qa", "question": "What is the capital of Zorvania?",
         "answer": "Quellmark", "contexts": []},
        {"id": "f3", "kind": "qa", "subject": "France", "relation": "capital",
         "object": "Paris", "question": "", "answer": "", "contexts": []},
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "facts.jsonl", facts)
    model = CountingLosses()
    report = run(source, tmp_path / "m.jsonl", SelectOptions(method="memorisation"), model)
    assert report["budget"] == 60
    assert report["histogram"] == {"0": 1, "1": 2}
    kept = rows(tmp_path / "m.jsonl")
    assert [r["id"] for r in kept] == ["f1", "f2", "f3"]
    assert kept[0]["meta"]["memorisation"]["level"] == 1.0
    assert kept[0]["meta"]["memorisation"]["templates"] == 10
    banded = run(source, tmp_path / "b.jsonl", SelectOptions(method="memorisation", band="0:0.5",
                                                            budget=5), model)  # fmt: skip
    assert banded["selected"] == 1 and banded["dropped_by_reason"] == {"outside_band": 2}
    assert normalise("The  Paris!") == "paris"
    assert level_histogram([{"score": 0.5}, {"score": 0.5}, {"error": "x"}]) == {"0.5": 2}
    scorer = MemorisationScorer(model, templates=3)
    assert len(scorer.templates) == 3
    kept, dropped = select_memorisation([{**facts[0], "meta": {"memorisation": {"score": 1}}}])
    assert len(kept) == 1 and not dropped


def test_bad_band_and_scorer_model_are_one_line_errors(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    result = CliRunner().invoke(app, ["select", str(source), "--out", str(tmp_path / "o.jsonl"),
                                      "--method", "ifd", "--scorer-model",
                                      str(tmp_path / "nowhere")])  # fmt: skip
    assert result.exit_code == 2
    assert "--scorer-model" in result.output and "Traceback" not in result.output
    with pytest.raises(ConfigError, match="--band"):
        run(source, tmp_path / "o.jsonl", SelectOptions(method="memorisation", band="high"),
            CountingLosses())  # fmt: skip
    with pytest.raises(ConfigError, match="config.json"):
        load_loss_model(str(tmp_path))


def synthetic_labels(path, coefficients, n=2000, rho=0.6, sigma=0.1, seed=7):
    """Indicators correlated at ``rho``, loss = linear rule + N(0, sigma) noise."""
    rng = np.random.default_rng(seed)
    k = len(coefficients)
    cov = np.full((k, k), rho) + (1 - rho) * np.eye(k)
    x = rng.multivariate_normal(np.zeros(k), cov, size=n)
    names = list(coefficients)
    y = 1.5 + x @ np.array([coefficients[n] for n in names]) + rng.normal(0, sigma, n)
    with open(path, "w", encoding="utf-8") as fh:
        for row, loss in zip(x, y, strict=True):
            indicators = {name: float(v) for name, v in zip(names, row, strict=True)}
            fh.write(json.dumps({"indicators": indicators, "loss": float(loss)}) + "\n")
    return np.corrcoef(x.T)


def test_mining_fit_recovers_known_coefficients(tmp_path):
    truth = {"reward": -0.6, "length": 0.4, "mtld": -0.3, "knn6": 0.8}
    corr = synthetic_labels(tmp_path / "labels.jsonl", truth)
    assert abs(corr[0, 1] - 0.6) < 0.05  # the indicators really are correlated
    rule = fit_rule(tmp_path / "labels.jsonl")
    assert set(rule.coefficients) == set(truth)
    for name, value in truth.items():
        assert abs(rule.coefficients[name] - value) <= 0.05 * abs(value), name
    assert abs(rule.intercept - 1.5) <= 0.05 * 1.5
    assert rule.fit["rows"] == 2000 and rule.fit["r2"] > 0.9


def test_mining_selects_by_predicted_loss_and_warns_on_the_approximate_rule(tmp_path, caplog):
    records = [
        instruction(i, "q", " ".join(f"w{j}" for j in range(5 + 10 * i)),
                    meta={"alpagasus": {"score": s}})
        for i, s in enumerate([1.0, 4.5, 3.0, 5.0])
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", records)
    selection = SelectOptions(method="mining", budget=2, reward_field="meta.alpagasus.score",
                              embedder="hashing")  # fmt: skip
    with caplog.at_level("WARNING"):
        report = run(source, tmp_path / "m.jsonl", selection, CountingLosses())
    assert "approximate" in caplog.text
    assert report["rule"]["approximate"] and "2307.06290" in report["rule"]["source"]
    kept = rows(tmp_path / "m.jsonl")
    assert {r["id"] for r in kept} == {"r1", "r3"}  # the highest rewards: lowest loss
    indicators = kept[0]["meta"]["mining"]["indicators"]
    assert {"length", "mtld", "knn6", "reward"} <= set(indicators)
    assert report["signals"]["forward_passes"] == 0  # the rule has no ppl: no model


def test_the_published_rules_are_the_papers():
    v1, v3 = PUBLISHED_RULES["v1"], PUBLISHED_RULES["v3"]
    assert (v1.intercept, v1.coefficients) == (
        1.0694, {"reward": -0.1498, "length": 8.257e-5, "knn6": -0.9350})  # fmt: skip
    assert (v3.intercept, v3.coefficients) == (0.0274, {
        "reward": -0.0078, "understandability": 0.4421, "naturalness": -0.3212,
        "coherence": -0.1520})  # fmt: skip
    # UniEval scores are in [0, 1]: the judge's 1-5 ratings are mapped onto them
    best = {"reward": 0.0, "understandability": 5, "naturalness": 5, "coherence": 5}
    assert v3.predict(best) == pytest.approx(0.0274 + 0.4421 - 0.3212 - 0.1520)
    assert v3.predict({**best, "naturalness": 1}) == pytest.approx(0.0274 + 0.4421 - 0.1520)
    assert all(rule.approximate for rule in (v1, v3))
    with pytest.raises(ConfigError, match="--mining-rule 'v2'"):
        published_rule("v2")


def test_mining_rule_v3_ranks_by_the_judges_ratings(tmp_path, caplog):
    ratings = [(3, 3, 3), (2, 5, 5), (5, 1, 1), (4, 4, 4)]  # understandability, nat., coh.
    records = [
        instruction(i, "q", f"answer {i}", meta={"judge": {
            "understandability": u, "naturalness": n, "coherence": c}, "reward": 1.0})
        for i, (u, n, c) in enumerate(ratings)
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", records)
    selection = SelectOptions(method="mining", mining_rule="v3", budget=2,
                              reward_field="meta.reward")  # fmt: skip
    with caplog.at_level("WARNING"):
        report = run(source, tmp_path / "m.jsonl", selection, CountingLosses())
    assert "cao2023-v3-approximate" in caplog.text
    assert report["rule"]["unit"]["naturalness"] == [1.0, 5.0]
    predicted = {r["id"]: r["meta"]["mining"]["score"] for r in rows(tmp_path / "m.jsonl")}
    assert set(predicted) == {"r1", "r3"}  # the lowest predicted loss
    assert predicted["r1"] == pytest.approx(
        0.0274 - 0.0078 + 0.4421 * 0.25 - 0.3212 - 0.1520, abs=1e-6)  # fmt: skip
    assert report["settings"]["mining_rule"] == "v3"


def test_mining_fit_with_ppl_uses_the_model(tmp_path):
    labels = tmp_path / "labels.jsonl"
    with open(labels, "w", encoding="utf-8") as fh:
        for i in range(10):
            fh.write(json.dumps({"ppl": 1.0 + i, "length": 3.0 * (i % 4), "loss": 0.5 + 0.1 * i})
                     + "\n")  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    model = CountingLosses()
    report = run(source, tmp_path / "m.jsonl",
                 SelectOptions(method="mining", fit=str(labels), budget=2), model)  # fmt: skip
    assert report["rule"]["name"] == "fit" and set(report["rule"]["coefficients"]) == {
        "ppl", "length"}  # fmt: skip
    assert model.forward_passes > 0
    kept = rows(tmp_path / "m.jsonl")
    assert all("ppl" in r["meta"]["mining"]["indicators"] for r in kept)


def test_mining_fit_names_a_bad_line(tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"ppl": 1, "loss": 2}\n{"ppl": 2}\n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        fit_rule(labels)
    assert caught.value.line == 2 and "loss" in str(caught.value)


def test_indicators():
    assert mtld("") == 0.0
    assert mtld("the the the the the the the the") < mtld("a quick brown fox jumps over dogs")
    vectors = np.array([[1.0, 0.0], [1.0, 0.01], [0.0, 1.0]])
    distances = knn_distances(vectors, k=1)
    assert distances[0] < 0.05 and distances[2] > 1.0
    assert APPROXIMATE_RULE.approximate and "reward" in APPROXIMATE_RULE.coefficients


def echo_server(with_logprobs: bool):
    """A vLLM-like /v1/completions: one token per character, logprob -1 for characters
    after the instruction's blank line (so conditioned answers look easier), -2 else."""

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        choices = []
        for index, prompt in enumerate(body["prompt"]):
            choice = {"index": index, "text": "x"}
            if with_logprobs:
                conditioned = "\n\n" in prompt
                values = [None] + [(-1.0 if conditioned else -2.0)] * (len(prompt) - 1)
                choice["logprobs"] = {"token_logprobs": values,
                                      "text_offset": list(range(len(prompt)))}  # fmt: skip
            choices.append(choice)
        return httpx.Response(200, json={"choices": choices})

    return httpx.MockTransport(handler)


def test_server_backend_reads_echoed_prompt_logprobs():
    model = ServerLossModel("m", "http://server/v1", transport=echo_server(True))
    [loss, empty] = model.pair_losses([("Say hi", "hello there"), ("Say", "")])
    assert loss == PairLoss(1.0, 2.0, len("hello there"))
    assert empty is None and model.forward_passes == 1
    assert model.identity == "openai:m@http://server/v1"


def test_server_without_prompt_logprobs_says_so():
    model = ServerLossModel("m", "http://server/v1", transport=echo_server(False))
    with pytest.raises(ConfigError, match="cannot give prompt losses"):
        model.pair_losses([("Say hi", "hello")])
    assert isinstance(load_loss_model("openai:m@http://server/v1"), ServerLossModel)


def test_mining_judge_rates_through_the_engine(fake_openai, tmp_path):
    def judge(request):
        good = "pet" in request.last_user
        n = 5 if good else 2
        return json.dumps({"naturalness": n, "coherence": n, "understandability": 4})

    fake_openai.responder = judge
    labels = tmp_path / "labels.jsonl"
    with open(labels, "w", encoding="utf-8") as fh:
        for i in range(12):
            row = {
                "naturalness": 1 + i % 5,
                "coherence": 1 + (i * 2) % 5,
                "loss": 3.0 - 0.3 * (i % 5),
            }
            fh.write(json.dumps(row) + "\n")
    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    options = EngineOptions(quiet=True, llm=f"openai:fake-model@{fake_openai.base_url}")
    selection = SelectOptions(method="mining", fit=str(labels), judge=True, budget=1)
    report = asyncio.run(select_signal_async(source, tmp_path / "j.jsonl", selection=selection,
                                             options=options))  # fmt: skip
    assert report["judge"]["judged"] == 4 and report["judge"]["rejected"] == {"missing_response": 1}
    [kept] = rows(tmp_path / "j.jsonl")
    assert kept["id"] == "r1" and kept["meta"]["judge"]["naturalness"] == 5
    assert report["signals"]["forward_passes"] == 0  # no ppl in the fitted rule


def test_memorisation_adds_llm_paraphrased_templates(fake_openai, tmp_path):
    def paraphrase(request):
        frame = request.last_user.strip().splitlines()[-1]
        return f"Please answer: {frame}"

    fake_openai.responder = paraphrase
    facts = [{"id": "f1", "kind": "qa", "question": "What is the capital of France?",
              "answer": "Paris", "contexts": []}]  # fmt: skip
    source = write_jsonl(tmp_path / "facts.jsonl", facts)
    options = EngineOptions(quiet=True, llm=f"openai:fake-model@{fake_openai.base_url}")
    selection = SelectOptions(method="memorisation", templates=12)
    prompts = []

    class Recording(CountingLosses):
        def greedy(self, batch, *, max_new_tokens):
            prompts.extend(batch)
            return super().greedy(batch, max_new_tokens=max_new_tokens)

    report = asyncio.run(select_signal_async(source, tmp_path / "m.jsonl", selection=selection,
                                             options=options, loss_model=Recording()))  # fmt: skip
    assert len(prompts) == 12 and sum(p.startswith("Please answer: ") for p in prompts) == 2
    assert report["histogram"] == {"1": 1}
    assert rows(tmp_path / "m.jsonl")[0]["meta"]["memorisation"]["templates"] == 12


def test_the_html_report_plots_the_signal_scores(tmp_path):
    from evoforge.report import write_report

    source = write_jsonl(tmp_path / "in.jsonl", RECORDS)
    run(source, tmp_path / "ifd.jsonl", SelectOptions(method="ifd", budget=2), CountingLosses())
    paths = write_report(tmp_path / "ifd.jsonl")
    page = paths["html"].read_text(encoding="utf-8")
    assert "IFD (answer loss with / without the instruction)" in page


def test_a_dry_run_plans_the_scoring_without_loading_the_scorer(tmp_path):
    """A folder with only a config.json: loading it would fail, so the plan (records,
    sequences, batched forward passes) is proof that no model was loaded."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}", encoding="utf-8")
    facts = [{"id": f"f{i}", "kind": "qa", "question": f"q{i}?", "answer": "a", "contexts": []}
             for i in range(5)]  # fmt: skip
    cases = [
        (RECORDS, ["--method", "ifd", "--batch-size", "4"], 10, 3),  # 2 per record
        (
            RECORDS,
            ["--method", "mining", "--reward-field", "meta.r", "--embedder", "hashing"],
            0,
            0,
        ),  # the published rule needs no model  # fmt: skip
        (facts, ["--method", "memorisation", "--templates", "12"], 60, 8),  # 12 per fact
    ]
    for records, flags, sequences, passes in cases:
        source = write_jsonl(tmp_path / "in.jsonl", records)
        result = CliRunner().invoke(app, [
            "select", str(source), "--out", str(tmp_path / "o.jsonl"), "--dry-run", "--json",
            "--scorer-model", str(tmp_path / "model"), "--cache-dir", str(tmp_path / "c"),
            *flags])  # fmt: skip
        assert result.exit_code == 0, result.output
        plan = json.loads(result.stdout)
        note = " ".join(plan["notes"])
        assert f"at most {sequences} sequences in {passes} forward passes" in note, note
        assert plan["accepted"] == len(records)
        assert not (tmp_path / "o.jsonl").exists()
    # memorisation's 2 templates above the fixed 10 are paraphrased by the LLM: counted
    # (the counting model's replies are no frames, so all 20 tries are made)
    assert plan["calls"] == 20
