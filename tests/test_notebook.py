"""Progress and summaries in Jupyter, driven through a real kernel with nbclient: a run of
hundreds of seeds leaves one progress output (redrawn in place), not a line per tick,
and the summary renders as a table."""

from __future__ import annotations

import json

import nbformat
import pytest
from nbclient import NotebookClient

from evoforge.testing.fake_openai import FakeOpenAI

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
