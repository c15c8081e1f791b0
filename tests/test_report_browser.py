"""The report's sample browser, driven in headless Chromium (Debian's) through playwright.

A folder is built the way a user builds it (evolve writing every round, a RAG set and an
IN2 set, through the engine with scripted models); its report is opened from file://,
filtered by a rejection reason, and a record opened: the page must show its lineage
(seed, each evolution with its prompt id and model, the final verdict), a RAG sample's
contexts highlighted inside their source document and an IN2 sample's needles inside its
context. The same runs with the data in sidecar chunks, and with ``--redact``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from test_in2 import SMALL, in2_responder, make_corpus
from test_report import OPTIONS, ROOT, evolve_responder, seed_rows
from typer.testing import CliRunner

from evoforge import write_report
from evoforge.api import EvolveOptions, In2Options, RagOptions, evolve, in2, rag
from evoforge.cli import app
from evoforge.testing.scripted import ScriptedChatModel
from helpers import rag_responder, read_jsonl, write_jsonl

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = ROOT / "examples" / "docs"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("browser")
    folder = tmp / "run"
    seeds = write_jsonl(tmp / "seeds.jsonl", seed_rows())
    evolve(
        seeds, folder / "evolved.jsonl", options=OPTIONS,
        evolution=EvolveOptions(rounds=2, answers=True),  # every round: lineage answers
        model=ScriptedChatModel(evolve_responder, record=False),
    )  # fmt: skip
    rag(
        [DOCS], folder / "rag.jsonl", options=OPTIONS, model=ScriptedChatModel(rag_responder),
        rag=RagOptions(n=6, embedder="hashing", chunk_size=400, chunk_overlap=40),
    )  # fmt: skip
    in2(
        [make_corpus(tmp / "corpus", n_docs=8)], folder / "in2.jsonl", options=OPTIONS,
        in2=In2Options(n=4, **SMALL), model=ScriptedChatModel(in2_responder, record=False),
    )  # fmt: skip
    return folder


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        if os.environ.get("EVOFORGE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (make test does)")
        pytest.skip("chromium is not installed (make test installs it)")
    try:
        from playwright import sync_api  # the dev extra installs it
    except ImportError:
        if os.environ.get("EVOFORGE_REQUIRE_BROWSER") == "1":
            pytest.fail("playwright is missing: pip install -e '.[dev]' (make test does)")
        pytest.skip("playwright is not installed (the dev extra has it)")
    with sync_api.sync_playwright() as driver:
        # Debian's chromium, through the DevTools protocol: playwright downloads nothing.
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


def _open(browser, page_path: Path):
    page = browser.new_page(viewport={"width": 1280, "height": 1400})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(page_path.as_uri())
    page.wait_for_selector("body[data-samples]", timeout=30_000)
    return page, errors


def _copy(run_folder: Path, where: Path) -> Path:
    shutil.copytree(run_folder, where)
    return where


def _screenshot(page, name: str) -> None:
    """The sample browser as shown, into build/ (make test keeps it for a look)."""
    (ROOT / "build").mkdir(exist_ok=True)
    page.locator("#samples").screenshot(path=str(ROOT / "build" / name))
    assert (ROOT / "build" / name).stat().st_size > 20_000


def _search_and_open(page, record_id: str) -> None:
    """Search for an id (a duplicate that lost to it matches too) and open its row."""
    page.fill("#sb-search", record_id)
    row = page.locator(f"#sb-table tbody tr:has(td:first-child:text-is('{record_id}'))")
    page.wait_for_function(  # the search has run: few rows left
        "document.querySelectorAll('#sb-table tbody tr').length <= 3", timeout=5_000
    )
    row.click()


def _check_browser(browser, folder: Path, shot: str) -> None:
    evolved = read_jsonl(folder / "evolved.jsonl")
    rejects = read_jsonl(folder / "evolved.rejects.jsonl")
    rag_rows = read_jsonl(folder / "rag.jsonl")
    in2_rows = read_jsonl(folder / "in2.jsonl")
    total = sum(len(read_jsonl(p)) for p in folder.glob("*.jsonl"))
    page, errors = _open(browser, folder / "report.html")
    assert page.get_attribute("body", "data-samples") == str(total)
    assert page.get_attribute("body", "data-ok") == "true"

    # filter by a reason: only the leaky seed's rejected evolutions remain
    page.select_option("#sb-reason", "prompt_leak")
    leaks = [r for r in rejects if r["reason"] == "prompt_leak"]
    assert page.inner_text("#sb-status").startswith(f"{len(leaks)} of {total} records")
    shown = page.locator("#sb-table tbody tr td:first-child").all_inner_texts()
    assert sorted(shown) == sorted(r["id"] for r in leaks)

    # open one: its lineage, seed to final, with the prompt id, the model and the verdict
    leak = leaks[0]
    page.click(f"#sb-table tbody tr:has(td:text-is('{leak['id']}'))")
    page.wait_for_selector(f"#sb-detail[data-id='{leak['id']}']")
    steps = page.locator("ol.sb-lineage > li").all_inner_texts()
    (entry,) = leak["record"]["lineage"]
    assert steps[0] == "seed\n" + leak["record"]["meta"]["instruction_chain"][0]
    assert steps[1].startswith(f"{entry['op']} round 1 · prompt {entry['prompt_id']}")
    assert f"model {entry['model']}" in steps[1] and leak["record"]["instruction"] in steps[1]
    assert steps[2] == "final\nrejected: prompt_leak"
    verdicts = page.inner_text("#sb-detail table.sb-verdicts")
    assert f"{leak['step']}\tprompt_leak: {leak['detail']}" in verdicts
    _screenshot(page, shot.replace(".png", "-reason.png"))

    # a kept round-2 record: each evolution's instruction, and round 1's answer (its record
    # is in the folder: every round is written), then the parent link opens that record
    page.select_option("#sb-reason", "")
    final = next(r for r in evolved if r["id"].endswith("/r2"))
    _search_and_open(page, final["id"])
    page.wait_for_selector(f"#sb-detail[data-id='{final['id']}']")
    steps = page.locator("ol.sb-lineage > li").all_inner_texts()
    entries, chain = final["lineage"], final["meta"]["instruction_chain"]
    assert len(steps) == len(entries) + 2
    for text, entry in zip(steps[1:-1], entries, strict=True):
        assert text.startswith(entry["op"]) and entry["prompt_id"] in text
        assert f"model {entry['model']}" in text
    parent = next(r for r in evolved if r["id"] == final["parent_id"])
    assert chain[0] in steps[0] and chain[1] in steps[1] and parent["output"] in steps[2]
    assert steps[3].endswith(final["instruction"]) and steps[4].endswith(final["output"])
    assert steps[-1] == "final\nkept"
    said = final["meta"]["evol"]["judge"]  # the equality judge's reply on this evolution
    verdicts = page.inner_text("#sb-detail table.sb-verdicts")
    assert said and f"equality judge, round 2\tkept\t{said}" in verdicts
    page.click("#sb-detail a")
    page.wait_for_selector(f"#sb-detail[data-id='{parent['id']}']")
    page.fill("#sb-search", "")

    # search and kind: a RAG sample's contexts are marked inside their source document; an
    # evolved one, so that every critic has spoken, the equality judge too
    sample = next(r for r in rag_rows if r["meta"]["critics"]["verdicts"]["information_gain"])
    _search_and_open(page, sample["id"])
    page.wait_for_selector(f"#sb-detail[data-id='{sample['id']}'] .sb-source mark")
    marks = page.locator("#sb-detail .sb-source mark").all_inner_texts()
    assert marks == sample["reference_contexts"]
    source = page.inner_text("#sb-detail .sb-source")
    assert len(source) > sum(len(c) for c in sample["reference_contexts"])  # the document
    # each critic's verdict on the kept sample: passed, its score, the judge's reason
    rows = page.locator("#sb-detail table.sb-verdicts tr").all_inner_texts()
    said = sample["meta"]["critics"]["verdicts"]
    assert list(said) == sample["meta"]["critics"]["passed"]
    for name, entry in said.items():
        (row,) = [row.split("\t") for row in rows if row.split("\t")[0] == name]
        assert row[1] == "passed" + (f" · score {entry['score']:g}" if "score" in entry else "")
        assert row[2:] == ([entry["reason"]] if "reason" in entry else [])
    assert said["grounded"]["reason"] == "supported"  # the scripted judge's own words
    assert said["information_gain"]["reason"] == "the judge: 'Not Equal'"
    _screenshot(page, shot.replace(".png", "-rag.png"))

    # an IN2 sample: its needles are marked inside its context
    page.fill("#sb-search", "")
    page.select_option("#sb-kind", "in2")
    page.wait_for_function(
        f"document.querySelectorAll('#sb-table tbody tr').length === {len(in2_rows)}",
        timeout=5_000,
    )
    page.click("#sb-table tbody tr >> nth=0")
    first = next(r for r in in2_rows if r["id"] == page.inner_text("#sb-detail h3"))
    page.wait_for_selector("#sb-detail .sb-source mark")
    marks = page.locator("#sb-detail .sb-source mark").all_inner_texts()
    assert marks == [n["text"] for n in first["needles"]]
    _screenshot(page, shot)
    assert errors == []
    page.close()


def test_the_sample_browser_filters_opens_and_highlights(run_folder, browser, tmp_path):
    folder = _copy(run_folder, tmp_path / "run")
    write_report(folder, docs=[DOCS])
    assert not (folder / "report-data").exists()  # small: inlined
    _check_browser(browser, folder, "report-browser.png")


def test_past_the_inline_limit_the_data_loads_from_sidecar_chunks(run_folder, browser, tmp_path):
    folder = _copy(run_folder, tmp_path / "run")
    write_report(folder, docs=[DOCS], inline_limit=1_000)
    chunks = sorted(p.name for p in (folder / "report-data").iterdir())
    assert "rows-0000.js" in chunks and "details-0000.js" in chunks and "doc-0000.js" in chunks
    html = (folder / "report.html").read_text()
    assert "evoforgeLoad('details'" not in html and "report-data/" in html
    _check_browser(browser, folder, "report-browser-chunks.png")
    write_report(folder, docs=[DOCS])  # small again: the sidecar folder goes
    assert not (folder / "report-data").exists()


def test_redact_leaves_source_texts_out_of_the_page(run_folder, browser, tmp_path):
    folder = _copy(run_folder, tmp_path / "run")
    done = CliRunner().invoke(app, ["report", str(folder), "--redact", "--docs", str(DOCS)])
    assert done.exit_code == 0, done.output
    html = (folder / "report.html").read_text()
    for sample in read_jsonl(folder / "rag.jsonl"):
        for context in sample["reference_contexts"]:
            assert json.dumps(context)[1:-1].replace("<", "\\u003c") not in html
    for sample in read_jsonl(folder / "in2.jsonl"):
        for needle in sample["needles"]:
            assert needle["text"][:60] not in html
    page, errors = _open(browser, folder / "report.html")
    page.select_option("#sb-kind", "rag")
    page.click("#sb-table tbody tr >> nth=0")
    page.wait_for_selector("#sb-detail[data-id]")
    assert "left out (report --redact)" in page.inner_text("#sb-detail")
    assert page.locator("#sb-detail mark").count() == 0
    assert errors == []
    page.close()
