"""`evoforge report`: the funnel, the plots and every seed's fate, checked in a real browser.

One folder is built the way a user builds it: evolve (with answers), dedup (with a
clusters file), DEITA select, and an IN2 run, all through the engine with scripted
models. The report of that folder is read back as text and rendered by headless
Chromium, whose DOM must show every plot drawn and no script error.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_in2 import SMALL, in2_responder, make_corpus
from typer.testing import CliRunner

from evoforge import EngineOptions, write_report
from evoforge.api import (
    EvolveOptions,
    In2Options,
    RagOptions,
    SelectOptions,
    answer,
    evolve,
    in2,
    rag,
    select,
)
from evoforge.cli import app
from evoforge.testing.scripted import ScriptedChatModel
from helpers import rag_responder, read_jsonl, write_jsonl

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
OPTIONS = EngineOptions(quiet=True, cache=False)

WORDS = (
    "harbour glacier orchard comet bridge violin desert forest river canyon meadow "
    "lantern copper marble falcon ember tundra lagoon summit prairie quartz willow "
    "thunder saffron mosaic beacon cobalt juniper nebula pepper velvet walnut"
).split()


def seed_rows() -> list[dict]:
    rng = random.Random(3)
    rows = []
    for i in range(8):
        words = " ".join(rng.choice(WORDS) for _ in range(24))
        rows.append({"id": f"s{i}", "instruction": f"Describe {words}."})
    rows[3]["instruction"] = "leaky " + rows[3]["instruction"]  # every evolution leaks
    rows[6]["instruction"] = rows[5]["instruction"]  # twins: their evolutions are duplicates
    return rows


def evolve_responder(messages: list[dict], n: int) -> str:
    system, user = messages[0]["content"], messages[-1]["content"]
    if "careful judge" in system:
        return "Not Equal"
    if "helpful, accurate assistant" in system:
        return "A direct answer with two reasons, one example and a short caveat."
    for row in seed_rows():
        if row["instruction"] in user:
            current = re.search(re.escape(row["instruction"]) + r"[^\n]*", user).group(0)
            if current.startswith("leaky"):
                return "#Rewritten Prompt#: " + current
            step = " Add one more step." if "constraint" in current else " Add one constraint."
            return current + step
    raise AssertionError(f"no seed in the prompt: {user[:200]}")


def alpagasus_judge(messages: list[dict], n: int) -> str:
    text = messages[-1]["content"]
    return f"{3 + len(text) % 3}\n\nAccurate enough."


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    folder = tmp / "run"
    seeds = write_jsonl(tmp / "seeds.jsonl", seed_rows())
    evolve(
        seeds, folder / "evolved.jsonl", options=OPTIONS,
        evolution=EvolveOptions(rounds=2, answers=True, final_only=True),  # funnel: finals
        model=ScriptedChatModel(evolve_responder, record=False),
    )  # fmt: skip
    done = CliRunner().invoke(app, [
        "dedup", str(folder / "evolved.jsonl"), "--out", str(folder / "unique.jsonl"),
        "--fields", "instruction", "--clusters", str(folder / "unique.clusters.jsonl"),
    ])  # fmt: skip
    assert done.exit_code == 0, done.output
    select(
        folder / "unique.jsonl", folder / "best.jsonl", options=OPTIONS,
        selection=SelectOptions(method="alpagasus"),
        model=ScriptedChatModel(alpagasus_judge, record=False),
    )  # fmt: skip
    in2(
        [make_corpus(tmp / "corpus", n_docs=8)], folder / "in2.jsonl", options=OPTIONS,
        in2=In2Options(n=6, **SMALL), model=ScriptedChatModel(in2_responder, record=False),
    )  # fmt: skip
    write_report(folder)
    return folder


def test_the_funnel_follows_records_from_seeds_to_selection(run_folder):
    evolved = read_jsonl(run_folder / "evolved.jsonl")
    rejects = read_jsonl(run_folder / "evolved.rejects.jsonl")
    unique = read_jsonl(run_folder / "unique.jsonl")
    scored = read_jsonl(run_folder / "best.scored.jsonl")
    best = read_jsonl(run_folder / "best.jsonl")
    summary = (run_folder / "summary.md").read_text()
    leaks = sum(r["reason"] == "prompt_leak" for r in rejects)
    assert leaks == 2  # the leaky seed's two rounds
    generated = len(evolved) + len(rejects)
    expected = (
        f"seeds 8 -> generated {generated} -> passed prompt_leak check {len(evolved)} -> "
        f"deduplicated (unique) {len(unique)} -> scored (best.scored) {len(scored)} -> "
        f"selected (best) {len(best)}"
    )
    assert expected in summary
    assert len(unique) == len(evolved) - 1  # one twin lost to the other
    assert len(scored) == len(unique) - 1  # the leaky seed has no answer to rate
    assert 0 < len(best) < len(scored)


def test_every_seed_has_its_fate(run_folder):
    html = (run_folder / "report.html").read_text()
    table = html[html.index('id="seeds-evolved"') :]
    table = table[: table.index("</table>")]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", table, re.S)[1:]
    cells = {
        re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)[0]: re.findall(r"<td[^>]*>(.*?)</td>", row)
        for row in rows
    }
    assert set(cells) == {f"s{i}" for i in range(8)}
    twin_drop = read_jsonl(run_folder / "unique.rejects.jsonl")[0]
    loser = twin_drop["id"].split("/")[0]
    assert cells[loser][3] == "0"
    assert f"duplicate to {twin_drop['lost_to']} at unique" in cells[loser][4]
    # The leaky seed kept its own text (both rounds were rejected) unless selection dropped it.
    assert "prompt_leak x2" in cells["s3"][4]
    kept_at_end = {r["id"].split("/")[0] for r in read_jsonl(run_folder / "best.jsonl")}
    for seed, row in cells.items():
        assert (row[3] != "0") == (seed in kept_at_end), row


def test_sections_and_plots_come_from_the_data(run_folder):
    html = (run_folder / "report.html").read_text()
    for plot in (
        "plot-funnel-evolved", "plot-funnel-in2", "plot-reasons", "plot-lengths-instruction",
        "plot-lengths-in2", "plot-yield-evolved", "plot-requests-evolved", "plot-scores",
        "plot-clusters", "plot-in2",
    ):  # fmt: skip
        assert f'id="{plot}"' in html, plot
    clusters = read_jsonl(run_folder / "unique.clusters.jsonl")
    assert "1 groups of duplicates" in html and len(clusters) == 1
    # Self-contained: no external script, style, image or font.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    assert "AlpaGasus rating" in html and "needle position" in html


def test_a_file_reports_the_steps_its_records_went_through(run_folder, tmp_path):
    copy = shutil.copytree(run_folder, tmp_path / "copy")
    summary = write_report(copy / "unique.jsonl")["summary"].read_text()
    assert "## evolved.jsonl (evolve)" in summary and "best.jsonl (select (alpagasus))" in summary
    assert "in2" not in summary
    summary = write_report(copy / "in2.jsonl")["summary"].read_text()
    assert "## in2.jsonl (in2)" in summary and "evolved" not in summary


def test_validate_outputs_are_a_step_of_the_funnel(run_folder, tmp_path):
    copy = shutil.copytree(run_folder, tmp_path / "copy")
    checked = CliRunner().invoke(app, [
        "validate", str(copy / "evolved.jsonl"), "--checks", "length", "--min-len", "5",
        "--out", str(copy / "valid.jsonl"),
    ])  # fmt: skip
    assert checked.exit_code == 1  # the leaky seed has no answer: too_short
    # validate refreshed the folder's report itself, like every command with --out
    assert "-> passed validation (valid) " in (copy / "summary.md").read_text()
    assert "too_short at valid" in (copy / "report.html").read_text()


def test_validate_without_out_writes_no_report(run_folder, tmp_path):
    copy = shutil.copytree(run_folder, tmp_path / "copy")
    for name in ("report.html", "summary.md"):
        (copy / name).unlink(missing_ok=True)
    checked = CliRunner().invoke(
        app, ["validate", str(copy / "evolved.jsonl"), "--checks", "length"]
    )
    assert checked.exit_code in (0, 1), checked.output
    assert not (copy / "report.html").exists() and not (copy / "summary.md").exists()


def test_sections_without_data_are_a_note_not_an_empty_plot(tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows()[:3])
    answer(seeds, tmp_path / "answers.jsonl", options=OPTIONS,
           model=ScriptedChatModel("A plain answer with enough words to count."))  # fmt: skip
    paths = write_report(tmp_path / "answers.jsonl")
    html = paths["html"].read_text()
    assert "plot-clusters" not in html and "plot-scores" not in html and "plot-in2" not in html
    assert "Dedup clusters: no dedup output here." in html
    assert "Rejection reasons: nothing was rejected." in html
    assert "seeds 3 -> generated 3" in paths["summary"].read_text()


def test_a_big_run_caps_the_seed_table_and_says_so(tmp_path):
    rows = [{"id": f"q{i:03d}", "instruction": f"Question number {i}?"} for i in range(230)]
    seeds = write_jsonl(tmp_path / "seeds.jsonl", rows)
    model = ScriptedChatModel(lambda m, n: "" if "7?" in m[-1]["content"] else "Yes.")
    answer(seeds, tmp_path / "out" / "answers.jsonl", options=OPTIONS, model=model)
    html = write_report(tmp_path / "out")["html"].read_text()
    assert "the first 200 of 230 seeds" in html
    table = html[html.index('id="seeds-answers"') :]
    table = table[: table.index("</table>")]
    assert table.count("<tr") == 201  # the header and 200 seeds
    first = re.findall(r"<td>(q\d+)</td>", table)[:23]
    assert first == [f"q{i:03d}" for i in range(230) if str(i).endswith("7")]  # rejected first


def test_a_rag_set_in_ragas_format_is_traced_through_its_journal(tmp_path):
    docs = ROOT / "examples" / "docs"
    rag(
        [docs], tmp_path / "eval.json", options=OPTIONS, model=ScriptedChatModel(rag_responder),
        rag=RagOptions(n=6, format="ragas", embedder="hashing", chunk_size=400, chunk_overlap=40),
    )  # fmt: skip
    written = read_jsonl(tmp_path / "eval.json")  # one sample a line, as Ragas reads it
    assert "id" not in written[0]  # the ragas format keeps no ids
    if (tmp_path / "eval.multi_turn.jsonl").exists():
        written += read_jsonl(tmp_path / "eval.multi_turn.jsonl")
    summary = write_report(tmp_path)["summary"].read_text()
    rejects = read_jsonl(tmp_path / "eval.rejects.jsonl")
    made = len(written) + sum(r.get("record") is not None for r in rejects)
    assert f"generated {made}" in summary
    assert f"check {len(written)}\n" in summary  # what is left after the last reason
    kinds = {r["synthesizer_name"] for r in written}
    html = (tmp_path / "report.html").read_text()
    yield_table = html[html.index("eval: yield per operator</caption>") :]
    for kind in kinds:
        kept = sum(r["synthesizer_name"] == kind for r in written)
        assert f"<td>{kind}</td><td>{kept}</td>" in yield_table.replace("\n", "").replace(" ", "")


def test_a_funnel_names_its_commonest_reasons_and_groups_the_rest(tmp_path):
    write_jsonl(tmp_path / "o.jsonl", [{"id": "k", "kind": "instruction", "instruction": "x"}])
    drops = [
        {"id": f"s{i}-{j}", "reason": f"rule{i}", "detail": "",
         "record": {"id": f"s{i}-{j}", "kind": "instruction", "instruction": "x"}}
        for i in range(12) for j in range(i + 1)
    ]  # fmt: skip
    write_jsonl(tmp_path / "o.rejects.jsonl", drops)
    (tmp_path / "o.manifest.json").write_text('{"command": "answer"}')
    summary = write_report(tmp_path)["summary"].read_text()
    assert "-> passed rule11 check 67 -> passed rule10 check 56 ->" in summary
    assert "-> passed rule4 check 11 -> passed 4 other checks 1\n" in summary


def test_commands_refresh_the_report_unless_told_not_to(tmp_path):
    records = [dict(r, kind="instruction", output="An answer.") for r in seed_rows()]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    runner = CliRunner()
    quiet = runner.invoke(app, ["dedup", str(source), "--out", str(tmp_path / "a" / "u.jsonl"),
                                "--fields", "instruction", "--no-report"])  # fmt: skip
    assert quiet.exit_code == 0, quiet.output
    assert not (tmp_path / "a" / "report.html").exists()
    loud = runner.invoke(app, ["dedup", str(source), "--out", str(tmp_path / "b" / "u.jsonl"),
                               "--fields", "instruction"])  # fmt: skip
    assert loud.exit_code == 0, loud.output
    assert "duplicate (u)" in (tmp_path / "b" / "report.html").read_text()
    shown = runner.invoke(app, ["report", str(tmp_path / "a" / "u.jsonl")])
    assert shown.exit_code == 0, shown.output
    assert "u.jsonl (dedup): kept 7, dropped 1 (duplicate 1)" in shown.output
    missing = runner.invoke(app, ["report", str(tmp_path)])
    assert missing.exit_code == 2 and "no evoforge outputs here" in missing.output


def _chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={user_data}", *args],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def _need_browser() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("EVOFORGE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
        pytest.skip("chromium is not installed (make test installs it)")


def _body_attributes(page: Path, user_data: Path) -> dict[str, str]:
    """The <body> data attributes the page's own check set, as the browser left them."""
    dom = _chromium("--dump-dom", page.as_uri(), user_data=user_data)
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None, dom.stderr[-2000:]
    return dict(re.findall(r'(data-[a-z]+)="([^"]*)"', body.group(0)))


def test_the_page_check_catches_a_missing_plot_and_a_script_error(run_folder, tmp_path):
    _need_browser()
    html = (run_folder / "report.html").read_text()
    start = html.index("<svg", html.index('id="plot-reasons"'))
    broken = html[:start] + html[html.index("</svg>", start) + 6 :]
    broken = broken.replace(
        "<script>\n  // Marks", "<script>notDefined();</script>\n<script>\n  // Marks"
    )
    page = tmp_path / "broken.html"
    page.write_text(broken)
    attrs = _body_attributes(page, tmp_path / "profile")
    assert attrs["data-ok"] == "false"
    assert attrs["data-missing"] == "plot-reasons"
    assert "notDefined" in attrs["data-errors"]


def test_the_page_renders_in_a_headless_browser(run_folder, tmp_path):
    _need_browser()
    page = (run_folder / "report.html").as_uri()
    attrs = _body_attributes(run_folder / "report.html", tmp_path / "profile")
    html = (run_folder / "report.html").read_text()
    expected = len(re.findall(r'<figure class="plot" id="', html))
    assert attrs == {"data-plots": str(expected), "data-missing": "", "data-errors": "",
                     "data-ok": "true", "data-samples": attrs.get("data-samples")}  # fmt: skip
    assert int(attrs["data-samples"]) > 0  # the sample browser loaded its rows
    assert expected >= 10
    shot = tmp_path / "report.png"
    taken = _chromium(f"--screenshot={shot}", "--window-size=1280,4000", page,
                      user_data=tmp_path / "profile")  # fmt: skip
    assert shot.exists() and shot.stat().st_size > 20_000, taken.stderr[-2000:]
    (ROOT / "build").mkdir(exist_ok=True)
    shutil.copyfile(shot, ROOT / "build" / "report-screenshot.png")
