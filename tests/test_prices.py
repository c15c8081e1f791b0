"""Prices (issue 19, part 4): models.yaml's ``prices``, ``--prices FILE`` over them, the
manifest's ``cost`` block online and at the batch price, the dry run's USD columns, the
report's cost table; an unknown model has no price rather than a guessed one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoforge import EngineOptions, answer
from evoforge.dry_run import simulate
from evoforge.errors import ConfigError
from evoforge.llm.prices import (
    Price,
    cost_block,
    format_usd,
    load_prices_file,
    packaged_prices,
    pricing,
)
from evoforge.testing.fake_openai import FakeOpenAI
from evoforge.testing.scripted import ScriptedChatModel
from helpers import run_cli

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _seeds(folder: Path, n: int = 6) -> Path:
    path = folder / "seeds.jsonl"
    rows = (json.dumps({"id": f"s{i}", "instruction": f"Name {i} primes."}) for i in range(n))
    path.write_text("\n".join(rows) + "\n")
    return path


def _manifest(out: Path) -> dict:
    return json.loads(out.with_name(f"{out.stem}.manifest.json").read_text())


def _tokens(manifest: dict) -> tuple[int, int]:
    usage = manifest["usage"].values()
    return sum(op["prompt_tokens"] for op in usage), sum(op["completion_tokens"] for op in usage)


def test_every_packaged_price_is_complete_and_dated():
    table = packaged_prices()
    assert len(table) >= 25
    for facts in table.values():
        price: Price = facts.raw["price"]
        assert price.input_per_mtok > 0 and price.output_per_mtok > 0
        assert price.date[:4] == "2025" and "transcribed, not fetched" in price.source
        assert price.batch_discount in (0.5, None)
    # the providers named by the issue are all there
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o3", "o4-mini", "deepseek-chat",
                  "claude-sonnet-4", "mistral-large", "gemini-2.0-flash"):  # fmt: skip
        assert pricing("openai", model).price is not None, model
    mini = pricing("openai", "gpt-4o-mini-2024-07-18")  # a dated snapshot: its family
    assert mini.price == Price(0.15, 0.60, 0.075, 0.5, mini.price.date, mini.price.source)
    assert mini.source.startswith("models.yaml: gpt-4o-mini, as of 2025-")


def test_the_arithmetic_online_cached_and_batch():
    price = Price(input_per_mtok=2.0, output_per_mtok=8.0, cached_input_per_mtok=0.5)
    # 1M prompt tokens of which 400K cached, 100K completion tokens
    online = price.usd(1_000_000, 100_000, cached_tokens=400_000)
    assert online == pytest.approx(0.6 * 2.0 + 0.4 * 0.5 + 0.1 * 8.0)
    assert price.batch_usd(online) == pytest.approx(online / 2)
    no_cache_price = Price(2.0, 8.0, None)  # no cached rate: cached tokens at the input price
    assert no_cache_price.usd(1_000_000, 0, cached_tokens=400_000) == pytest.approx(2.0)
    assert Price(1.0, 1.0, batch_discount=None).batch_usd(3.0) is None
    block = cost_block(
        {"backend": "openai", "model": "gpt-4o"},
        {"a": {"prompt_tokens": 1_000_000, "completion_tokens": 0, "cached_tokens": 1_000_000}},
        accepted=4, settings={"batch": True},
    )  # fmt: skip
    assert block["usd_online"] == pytest.approx(1.25)  # gpt-4o's cached-input price
    assert block["usd_batch"] == pytest.approx(0.625) and block["priced_at"] == "batch"
    assert block["usd_per_accepted_batch"] == pytest.approx(0.625 / 4)
    assert [format_usd(v) for v in (None, 0.0, 1.5, 0.0000131)] == [
        "-", "$0.0000", "$1.5000", "$0.0000131",
    ]  # fmt: skip


def test_the_manifest_prices_a_run_online_and_a_batch_run_at_the_batch_price(tmp_path):
    seeds = _seeds(tmp_path)
    with FakeOpenAI(record=False) as server:
        spec = f"openai:gpt-4o-mini@{server.base_url}"
        for name, batch in (("online", False), ("batch", True)):
            options = EngineOptions(llm=spec, cache=False, quiet=True, batch=batch,
                                    batch_poll=0.01)  # fmt: skip
            answer(seeds, tmp_path / f"{name}.jsonl", options=options)
    online, batch = _manifest(tmp_path / "online.jsonl"), _manifest(tmp_path / "batch.jsonl")
    prompt, completion = _tokens(online)
    assert prompt > 0 and completion > 0
    expected = (prompt * 0.15 + completion * 0.60) / 1e6
    for manifest in (online, batch):
        cost = manifest["cost"]
        assert cost["model"] == "gpt-4o-mini"
        assert cost["usd_online"] == pytest.approx(expected, rel=1e-5)
        assert cost["usd_batch"] == pytest.approx(expected / 2, rel=1e-5)
        assert cost["usd_per_accepted_online"] == pytest.approx(expected / 6, rel=1e-5)
        assert cost["price"]["input_per_mtok"] == 0.15
        assert "models.yaml: gpt-4o-mini, as of" in cost["price_source"]
    assert online["cost"]["priced_at"] == "online" and batch["cost"]["priced_at"] == "batch"
    assert batch["batch"]["ids"]  # the batch ids beside the cost at the batch price
    assert "prices" not in online["engine"]  # a run without --prices: engine as before


def test_an_unknown_model_has_no_price_and_a_free_backend_costs_zero(tmp_path):
    seeds = _seeds(tmp_path, 2)
    with FakeOpenAI(record=False) as server:
        options = EngineOptions(llm=f"openai:my-finetune@{server.base_url}", quiet=True,
                                cache=False)  # fmt: skip
        answer(seeds, tmp_path / "unknown.jsonl", options=options)
    cost = _manifest(tmp_path / "unknown.jsonl")["cost"]
    assert cost["usd_online"] is None and cost["usd_batch"] is None and cost["price"] is None
    assert cost["price_source"] == "no price for my-finetune (give --prices or --price)"
    model = ScriptedChatModel(lambda messages, n: "An answer.")
    answer(seeds, tmp_path / "scripted.jsonl", options=EngineOptions(quiet=True, cache=False),
           model=model)  # fmt: skip
    cost = _manifest(tmp_path / "scripted.jsonl")["cost"]
    assert cost["usd_online"] == 0.0 and cost["usd_batch"] == 0.0
    assert "no per-token price (cost 0)" in cost["price_source"]


def _prices_file(folder: Path, body: str, suffix: str = ".yaml") -> Path:
    path = folder / f"prices{suffix}"
    path.write_text(body)
    return path


def test_a_prices_file_overrides_models_yaml_and_prices_unknown_models(tmp_path):
    path = _prices_file(
        tmp_path,
        """\
models:
  gpt-4o-mini:
    prices: {input_per_mtok: 1.0, output_per_mtok: 2.0, date: "2026-01-01"}
  my-finetune:
    prices: {input_per_mtok: 3.0, output_per_mtok: 4.0, batch_discount: null}
""",
    )
    mini = pricing("openai", "gpt-4o-mini", prices_file=path)
    assert (mini.price.input_per_mtok, mini.price.output_per_mtok) == (1.0, 2.0)
    assert mini.source == f"--prices {path}: gpt-4o-mini, as of 2026-01-01"
    tuned = pricing("openai", "my-finetune-v2", prices_file=path)
    assert tuned.usd(1_000_000, 1_000_000) == pytest.approx(7.0)
    assert tuned.batch_usd(7.0) is None  # no batch price given: none invented
    assert pricing("openai", "gpt-4o", prices_file=path).source.startswith("models.yaml")
    as_json = _prices_file(
        tmp_path, json.dumps({"models": {"x": {"prices": {"input_per_mtok": 1,
                                                           "output_per_mtok": 1}}}}), ".json",
    )  # fmt: skip
    assert pricing("openai", "x", prices_file=as_json).usd(10**6, 0) == pytest.approx(1.0)
    seeds = _seeds(tmp_path, 2)
    with FakeOpenAI(record=False) as server:
        options = EngineOptions(llm=f"openai:my-finetune@{server.base_url}", quiet=True,
                                cache=False, prices=str(path))  # fmt: skip
        answer(seeds, tmp_path / "out.jsonl", options=options)
    manifest = _manifest(tmp_path / "out.jsonl")
    prompt, completion = _tokens(manifest)
    usd = (3 * prompt + 4 * completion) / 1e6
    assert manifest["cost"]["usd_online"] == pytest.approx(usd, rel=1e-5)
    assert manifest["engine"]["prices"] == str(path)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ("models:\n  m:\n    prices:\n      input_per_mtok: -1\n      output_per_mtok: 1\n",
         ":4: models.m.prices.input_per_mtok: expected a number >= 0"),
        ("models:\n  m:\n    prices:\n      input_per_mtok: 1\n      output_per_mtok: 1\n"
         "      batch_discount: 2\n", ":6: models.m.prices.batch_discount: expected a share"),
        ("models:\n  m:\n    prices:\n      input_per_mtok: 1\n      outptu_per_mtok: 1\n",
         ":5: models.m.prices.outptu_per_mtok: unknown price field; did you mean "
         "'output_per_mtok'?"),
        ("models:\n  m:\n    price: {input_per_mtok: 1}\n",
         ":3: models.m.price: unknown key; did you mean 'prices'?"),
        ("models:\n  m:\n    prices: {input_per_mtok: 1\n", ": not valid YAML or JSON"),
        ("- just a list\n", ":1: models: expected a mapping"),
    ],
)  # fmt: skip
def test_a_bad_prices_file_names_its_file_line_and_field(tmp_path, body, where):
    path = _prices_file(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_prices_file(path)
    assert str(caught.value).startswith(str(path)) and where in str(caught.value)


def test_a_bad_prices_file_is_exit_2_in_one_line_before_any_call(tmp_path):
    path = _prices_file(tmp_path, "models:\n  m:\n    prices: {input_per_mtok: x}\n")
    seeds = _seeds(tmp_path, 2)
    with FakeOpenAI(record=False) as server:
        result = run_cli(
            "answer", "--seeds", str(seeds), "--out", str(tmp_path / "a.jsonl"), "--quiet",
            "--llm", f"openai:m@{server.base_url}", "--prices", str(path),
        )  # fmt: skip
        assert server.hits == 0
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{path}:3: models.m.prices.input_per_mtok" in lines[0]
    missing = run_cli("answer", "--seeds", str(seeds), "--out", str(tmp_path / "b.jsonl"),
                      "--llm", "openai:m@http://127.0.0.1:9", "--prices", "nope.yaml")  # fmt: skip
    assert missing.returncode == 2 and "--prices nope.yaml: cannot read it" in missing.stderr


def test_the_dry_run_shows_usd_online_against_batch(tmp_path):
    seeds = _seeds(tmp_path, 3)
    plan = simulate(answer, seeds, tmp_path / "a.jsonl",
                    options=EngineOptions(llm="openai:gpt-4o"))  # fmt: skip
    expected = (plan.prompt_tokens * 2.5 + plan.completion_tokens * 10.0) / 1e6
    assert plan.cost == pytest.approx(expected) and plan.cost_batch == pytest.approx(expected / 2)
    text = plan.render()
    assert "USD online" in text and "USD batch" in text and "priced: models.yaml: gpt-4o," in text
    assert plan.to_json()["cost_batch"] == pytest.approx(expected / 2)
    unknown = simulate(answer, seeds, tmp_path / "a.jsonl",
                       options=EngineOptions(llm="openai:my-finetune@http://h/v1"))  # fmt: skip
    assert unknown.cost is None and unknown.cost_batch is None
    assert "priced: no price for my-finetune (give --prices or --price)" in unknown.render()
    local = simulate(answer, seeds, tmp_path / "a.jsonl", options=EngineOptions())
    assert local.cost == 0.0 and "the embedded local model" in local.render()
    given = simulate(answer, seeds, tmp_path / "a.jsonl", options=EngineOptions(),
                     price=(1.0, 1.0))  # fmt: skip
    assert given.cost == pytest.approx((given.prompt_tokens + given.completion_tokens) / 1e6)
    result = run_cli("answer", "--seeds", str(seeds), "--out", str(tmp_path / "c.jsonl"),
                     "--llm", "openai:gpt-4o-mini", "--dry-run")  # fmt: skip
    assert result.returncode == 0, result.stderr
    total = next(line for line in result.stdout.splitlines() if line.startswith("total"))
    assert total.count("$") == 2 and "priced: models.yaml: gpt-4o-mini" in result.stdout
    assert "--batch: this run pays" not in result.stdout


def test_the_docs_example_prices_file_and_dry_run(tmp_path):
    # docs/cost.md: `evoforge answer ... --llm openai:my-finetune@... --prices
    # examples/prices.yaml --dry-run`, and a --batch dry run (the counting model has no
    # Batch API: the plan prices the batch instead of refusing)
    table = load_prices_file(EXAMPLES / "prices.yaml")
    assert table["my-finetune"].raw["price"].batch_discount is None
    assert table["gpt-4o-mini"].raw["price"].input_per_mtok == 0.12
    seeds, out = str(EXAMPLES / "instructions.jsonl"), str(tmp_path / "answers.jsonl")
    result = run_cli("answer", "--seeds", seeds, "--out", out, "--llm",
                     "openai:my-finetune@http://localhost:8000/v1", "--prices",
                     str(EXAMPLES / "prices.yaml"), "--dry-run", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    expected = (plan["prompt_tokens"] * 0.30 + plan["completion_tokens"] * 1.20) / 1e6
    assert plan["cost"] == pytest.approx(expected) and plan["cost_batch"] is None
    batch = run_cli("answer", "--seeds", seeds, "--out", out, "--llm", "openai:gpt-4o-mini",
                    "--dry-run", "--batch")  # fmt: skip
    assert batch.returncode == 0, batch.stderr
    assert "--batch: this run pays the USD batch column" in batch.stdout
    assert not Path(out).exists()  # a dry run writes nothing of the user's


def test_the_report_shows_the_cost_table(tmp_path):
    from evoforge.report import write_report

    seeds = _seeds(tmp_path, 4)
    run_dir = tmp_path / "run"
    with FakeOpenAI(record=False) as server:
        spec = f"openai:gpt-4.1-mini@{server.base_url}"
        answer(seeds, run_dir / "answers.jsonl",
               options=EngineOptions(llm=spec, quiet=True, cache=False))  # fmt: skip
    manifest = _manifest(run_dir / "answers.jsonl")
    write_report(run_dir)
    page = (run_dir / "report.html").read_text()
    section = page[page.index('<section id="cost"') :]
    section = section[: section.index("</section>")]
    assert "answers.jsonl" in section and "gpt-4.1-mini" in section
    assert format_usd(manifest["cost"]["usd_online"]) in section
    assert format_usd(manifest["cost"]["usd_batch"]) in section
    assert "models.yaml: gpt-4.1-mini, as of" in section
    summary = (run_dir / "summary.md").read_text()
    assert (
        f"- answers.jsonl (gpt-4.1-mini, 4 calls): {format_usd(manifest['cost']['usd_online'])} "
        in summary
    )
    assert "at the batch price; paid online" in summary


def test_the_report_prices_a_manifest_written_before_the_cost_block():
    from evoforge.report.cost import cost_of

    old = {
        "model": {"backend": "openai", "model": "gpt-4o"},
        "usage": {"answer": {"calls": 2, "prompt_tokens": 400_000, "completion_tokens": 100_000}},
        "counts": {"accepted": 2},
        "engine": {"batch": True},
    }
    block = cost_of(old)
    assert block["usd_online"] == pytest.approx(0.4 * 2.5 + 0.1 * 10.0)
    assert block["priced_at"] == "batch" and block["usd_per_accepted_batch"] == pytest.approx(0.5)
    assert block["price_source"].endswith("(priced by the report: the manifest has no cost block)")
    assert cost_of({"usage": {}}) is None  # dedup, export: no model calls, no cost row


def test_a_recipe_plan_is_priced_online_and_at_the_batch_price(tmp_path):
    from evoforge.commands.run import plan

    recipe = EXAMPLES / "recipes" / "instructions-deita.yaml"
    planned = plan(recipe, out=tmp_path / "run", llm="openai:gpt-4o-mini")
    expected = (planned.prompt_tokens * 0.15 + planned.completion_tokens * 0.60) / 1e6
    assert planned.calls > 0 and planned.cost == pytest.approx(expected)
    assert planned.cost_batch == pytest.approx(expected / 2)
    assert "USD batch" in planned.render() and "priced: models.yaml: gpt-4o-mini" in (
        planned.render()
    )
    result = run_cli(
        "run", str(recipe), "--out", str(tmp_path / "run"), "--dry-run", "--json",
        "--llm", "openai:my-finetune", "--prices", str(EXAMPLES / "prices.yaml"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    priced = json.loads(result.stdout)
    assert priced["cost"] == pytest.approx(
        (priced["prompt_tokens"] * 0.30 + priced["completion_tokens"] * 1.20) / 1e6
    )
    assert priced["cost_batch"] is None and priced["price_source"].startswith("--prices")
