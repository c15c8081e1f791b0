"""Progress and summaries in Jupyter, driven through a real kernel with nbclient: a run of
hundreds of seeds leaves one progress output (redrawn in place), not a line per tick,
and the summary renders as a table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoforge.testing.fake_openai import FakeOpenAI
from helpers import read_jsonl

nbformat = pytest.importorskip("nbformat")  # the dev extra (make test) has both
NotebookClient = pytest.importorskip("nbclient").NotebookClient

pytestmark = pytest.mark.timeout(180)

N = 400


def _run(cells: list[str], tmp_path) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    # "python3" resolves to ipykernel in this interpreter (jupyter_client runs a kernel
    # spec's "python" as sys.executable), so the kernel imports this checkout's evoforge.
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return notebook


def test_a_run_in_a_notebook_shows_one_progress_output_and_a_summary_table(tmp_path):
    with FakeOpenAI(latency=0.01, max_seconds=170) as server:
        setup = (
            "import evoforge\n"
            f"options = evoforge.EngineOptions(llm='openai:gpt-4o-mini@{server.url}/v1', "
            f"concurrency=4, cache_dir={str(tmp_path / 'cache')!r})\n"
            f"seeds = [{{'instruction': f'Explain idea {{i}}.'}} for i in range({N})]"
        )
        run = "summary = evoforge.answer(seeds, 'out/answers.jsonl', options=options)"
        notebook = _run(["import os; os.environ['OPENAI_API_KEY'] = 'test-key'", setup, run,
                         "summary"], tmp_path)  # fmt: skip
        assert server.hits == N
    outputs = notebook.cells[2].outputs
    assert [o.output_type for o in outputs] == ["display_data"]  # one output, no stream lines
    text = outputs[0].data["text/plain"]
    assert f"{N}/{N}" in text and f"accepted {N}" in text and "answer" in text
    assert len(text.splitlines()) == 1 and "<pre" in outputs[0].data["text/html"]
    assert len(json.dumps(outputs)) < 20_000  # bounded, whatever the number of seeds
    summary = notebook.cells[3].outputs
    assert [o.output_type for o in summary] == ["execute_result"]
    html, plain = summary[0].data["text/html"], summary[0].data["text/plain"]
    assert f"complete: {N} kept, 0 rejected" in plain and "answers.jsonl" in plain
    assert "calls (cache hits)" in plain and f"{N} (0)" in plain and "<pre" in html


def test_quiet_and_outside_a_notebook_nothing_is_displayed(tmp_path):
    cells = [
        "from evoforge.progress import ProgressBar\n"
        "from evoforge.notebook import in_notebook\n"
        "quiet = ProgressBar('answer', 3, enabled=False)\n"
        "with quiet:\n    quiet.update({'seeds_done': 3})\n"
        "print(in_notebook(), quiet.enabled)",
    ]
    notebook = _run(cells, tmp_path)
    assert [o.get("text") for o in notebook.cells[0].outputs] == ["True False\n"]
    from evoforge.notebook import in_notebook
    from evoforge.progress import ProgressBar

    assert not in_notebook()  # pytest is no kernel: the terminal rules hold
    assert ProgressBar("answer", 3).enabled is False  # stderr is captured, not a terminal


def test_the_example_notebook_runs(tmp_path):
    """examples/notebook.ipynb as a user runs it: from its folder (here a copy), offline."""
    import shutil

    examples = Path(__file__).resolve().parents[1] / "examples"
    shutil.copytree(examples / "docs", tmp_path / "docs")
    notebook = nbformat.read(examples / "notebook.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells)  # committed clean
    client = NotebookClient(
        notebook,
        kernel_name="python3",
        timeout=120,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # a cell that raises fails the test here
    out = tmp_path / "notebook-run"
    kept = read_jsonl(out / "eval.jsonl")
    rejects = read_jsonl(out / "eval.rejects.jsonl")
    assert len(kept) == 8 and rejects
    ragas = read_jsonl(out / "ragas.jsonl")
    assert [r["user_input"] for r in ragas] == [r["user_input"] for r in kept]
    assert set(ragas[0]) >= {"user_input", "reference", "reference_contexts"}
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = {cell.source.splitlines()[-1]: cell.outputs for cell in code if cell.outputs}
    build = outputs["summary"]
    assert [o.output_type for o in build] == ["display_data", "execute_result"]
    assert "8 kept" in build[1].data["text/plain"]
    by_reason = outputs["run.by_reason()"][0].data["text/plain"]
    reasons = {r["reason"] for r in rejects}
    assert all(reason in by_reason for reason in reasons)
    lineage = outputs["run.lineage(sample)"][0].data["text/plain"]
    assert "rag_seed_question@v2" in lineage and "kept" in lineage


def test_run_blocking_inside_a_running_loop_returns_raises_and_cancels():
    import asyncio
    import os
    import signal
    import threading

    from evoforge.blocking import run_blocking

    async def work(value):
        await asyncio.sleep(0)
        return value, threading.current_thread() is threading.main_thread()

    async def fail():
        raise ValueError("bad seed")

    async def cell():  # a notebook cell: the kernel's loop is running
        return run_blocking(work(3))

    assert run_blocking(work(1)) == (1, True)  # no loop running: asyncio.run, this thread
    assert asyncio.run(cell()) == (3, False)  # a loop running: a worker thread
    with pytest.raises(ValueError, match="bad seed"):
        asyncio.run(_calls(run_blocking, fail()))

    cancelled = threading.Event()

    async def long_run():
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def interrupted_cell():  # the kernel's interrupt lands in the waiting cell
        threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
        return run_blocking(long_run())

    loop = asyncio.new_event_loop()  # a kernel's loop: SIGINT raises KeyboardInterrupt
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(interrupted_cell())
    finally:
        loop.close()
    assert cancelled.wait(5)  # the run was cancelled, not left running


async def _calls(function, *args):
    return function(*args)
