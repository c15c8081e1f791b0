"""Fuzzed inputs (issue 15, item 5): property tests over every reader, each through the
command line in process. Every input yields its documented exit code (0, with bad rows
in the rejects; 1 for ``validate`` on invalid records; 2 with one line naming the
problem), never a traceback.

Readers and the command that reads them: JSONL, JSON, CSV/TSV, Parquet and datasets
folders (``validate``, and seeds through ``answer --dry-run``), documents in txt, md,
html, pdf and jsonl (``rag --dry-run``), recipes (``run --dry-run``) and prompt
templates (``evoforge.load_template``: no command reads a template file, so the Python
API's documented outcome: a template, or a ConfigError). Hypothesis derandomized: the
same cases on every run; ``FUZZ_SCALE`` multiplies the case counts.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import typer.main
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evoforge.cli import app

pytestmark = pytest.mark.reliability

COMMAND = typer.main.get_command(app)  # built once: typer builds it on every invoke
SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def fuzz(examples: int):
    return settings(
        max_examples=max(1, int(examples * SCALE)), derandomize=True, deadline=None,
        database=None, suppress_health_check=list(HealthCheck),
    )  # fmt: skip


@pytest.fixture(scope="module")
def folder():
    path = Path(tempfile.mkdtemp(prefix="evoforge-fuzz-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def fresh(folder: Path, name: str) -> Path:
    case = folder / name
    shutil.rmtree(case, ignore_errors=True)
    case.mkdir()
    return case


def invoke(args: list, allowed: set[int]):
    """Run the CLI in process: an allowed exit, no traceback, and an exit 2 says why in
    one line."""
    result = CliRunner().invoke(COMMAND, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}"
    )
    assert "Traceback" not in result.output, result.output
    assert result.exit_code in allowed, (result.exit_code, result.output)
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("evoforge: error: "), result.stderr
    return result


# --- values ------------------------------------------------------------------------------

TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20) | st.sampled_from(
    ["", " ", "\n", "\t", '"', ",", "\\", "\x00", "\ufeff", "NaN", "null", "{", "[1,", "é"]
)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)  # fmt: skip
FIELDS = ["id", "instruction", "input", "output", "kind", "question", "answer", "contexts",
          "user_input", "reference", "reference_contexts", "messages", "meta", "text"]  # fmt: skip
KINDS = st.sampled_from(["instruction", "qa", "rag", "in2", "chat", "bogus", ""])
VALUE = TEXT | TEXT | TEXT | JSON_VALUES | KINDS
RECORDS = st.dictionaries(st.sampled_from(FIELDS) | TEXT, VALUE, max_size=6)
GOOD_RECORD = st.fixed_dictionaries(
    {"id": TEXT, "kind": st.just("instruction"), "instruction": TEXT, "input": st.just(""),
     "output": TEXT},
)  # fmt: skip


def jsonl_line(draw) -> bytes:
    kind = draw(st.integers(0, 5))
    if kind <= 2:
        return json.dumps(draw(RECORDS if kind else GOOD_RECORD), ensure_ascii=False).encode()
    if kind == 3:
        return json.dumps(draw(JSON_VALUES)).encode()
    if kind == 4:
        text = json.dumps(draw(RECORDS), ensure_ascii=False)
        return text[: draw(st.integers(0, len(text)))].encode()
    return draw(st.binary(max_size=30)).replace(b"\n", b"")


@st.composite
def jsonl_files(draw) -> bytes:
    lines = [jsonl_line(draw) for _ in range(draw(st.integers(0, 6)))]
    return b"\n".join(lines) + draw(st.sampled_from([b"", b"\n", b"\r\n"]))


@st.composite
def json_files(draw) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return json.dumps(draw(st.lists(RECORDS | GOOD_RECORD, max_size=5))).encode()
    if kind == 1:
        return json.dumps(draw(st.lists(JSON_VALUES, max_size=4))).encode()
    if kind == 2:
        text = json.dumps(draw(JSON_VALUES), ensure_ascii=False)
        return text[: draw(st.integers(0, len(text)))].encode()
    return draw(st.binary(max_size=60))


@st.composite
def csv_files(draw, delimiter: str) -> bytes:
    header = draw(st.lists(st.sampled_from(FIELDS) | TEXT, max_size=5))
    rows = draw(st.lists(st.lists(TEXT, max_size=6), max_size=5))
    buffer = io.StringIO()
    quoted = draw(st.booleans())
    if quoted:
        writer = csv.writer(buffer, delimiter=delimiter)
        try:
            writer.writerow(header)
            writer.writerows(rows)
        except csv.Error:  # Python 3.10's writer cannot write some cells ("need to escape")
            buffer, quoted = io.StringIO(), False
    if not quoted:  # unquoted: stray quotes, delimiters and newlines inside cells
        for row in [header, *rows]:
            buffer.write(delimiter.join(row) + "\n")
    data = buffer.getvalue().encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.integers(0, 4)) == 0:
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8)) + data[cut:]
    return data


# --- record files through validate, seeds through answer --dry-run -----------------------


@fuzz(500)
@given(data=jsonl_files(), checks=st.sampled_from(["schema", "schema,empty,refusal,leak"]))
def test_fuzzed_jsonl_through_validate(folder, data, checks):
    path = folder / "records.jsonl"
    path.write_bytes(data)
    invoke(["validate", path, "-q", "--checks", checks], {0, 1, 2})


@fuzz(300)
@given(data=json_files())
def test_fuzzed_json_through_validate(folder, data):
    path = folder / "records.json"
    path.write_bytes(data)
    invoke(["validate", path, "-q"], {0, 1, 2})


@fuzz(400)
@given(data=st.data(), suffix=st.sampled_from([".csv", ".tsv"]))
def test_fuzzed_csv_and_tsv_through_validate(folder, data, suffix):
    path = folder / f"records{suffix}"
    path.write_bytes(data.draw(csv_files("\t" if suffix == ".tsv" else ",")))
    invoke(["validate", path, "-q"], {0, 1, 2})


COLUMNS = st.sampled_from(["text", "int", "float", "bool", "list", "null", "struct", "binary"])


@st.composite
def parquet_files(draw) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = draw(st.integers(0, 4))
    columns = {}
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=5, unique=True)):
        kind = draw(COLUMNS)
        if kind == "text":
            values = draw(st.lists(TEXT | st.none(), min_size=n, max_size=n))
        elif kind == "int":
            values = draw(st.lists(st.integers(-(2**62), 2**62), min_size=n, max_size=n))
        elif kind == "float":
            values = draw(st.lists(st.floats(), min_size=n, max_size=n))
        elif kind == "bool":
            values = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        elif kind == "list":
            values = draw(st.lists(st.lists(TEXT, max_size=3), min_size=n, max_size=n))
        elif kind == "struct":
            values = [{"a": draw(TEXT), "b": draw(st.integers(0, 9))} for _ in range(n)]
        elif kind == "binary":
            values = draw(st.lists(st.binary(max_size=8), min_size=n, max_size=n))
        else:
            values = [None] * n
        columns[name] = pa.array(values)
    sink = io.BytesIO()
    pq.write_table(pa.table(columns) if columns else pa.table({}), sink)
    data = sink.getvalue()
    damage = draw(st.integers(0, 3))
    if damage == 1:
        data = data[: draw(st.integers(0, len(data)))]
    elif damage == 2:
        data = draw(st.binary(max_size=80))
    return data


@fuzz(150)
@given(data=parquet_files())
def test_fuzzed_parquet_through_validate(folder, data):
    path = folder / "records.parquet"
    path.write_bytes(data)
    invoke(["validate", path, "-q"], {0, 1, 2})


@fuzz(15)
@given(rows=st.lists(st.dictionaries(st.sampled_from(FIELDS), VALUE, max_size=5), max_size=4),
       damage=st.integers(0, 4))  # fmt: skip
def test_fuzzed_datasets_folders_through_validate(folder, rows, damage):
    import datasets

    case = fresh(folder, "dataset")
    target = case / "ds"
    # One column per field, each value as JSON text: Arrow needs a type per column.
    names = sorted({key for row in rows for key in row})
    table = {name: [json.dumps(row.get(name)) if name in row else None for row in rows]
             for name in names}  # fmt: skip
    datasets.Dataset.from_dict(table).save_to_disk(str(target))
    files = sorted(target.iterdir())
    if damage == 1:  # a file gone
        files[0].unlink()
    elif damage == 2:  # a file garbled
        files[-1].write_bytes(b"\x00garbled{")
    elif damage == 3:  # an arrow file cut short
        for arrow in target.glob("*.arrow"):
            arrow.write_bytes(arrow.read_bytes()[:40])
    elif damage == 4:  # a folder that is no dataset
        shutil.rmtree(target)
        target.mkdir()
        (target / "notes.txt").write_text("nothing here")
    invoke(["validate", target, "-q"], {0, 1, 2})


@fuzz(40)
@given(data=st.data(), suffix=st.sampled_from([".jsonl", ".json", ".csv"]))
def test_fuzzed_seeds_through_answer_dry_run(folder, data, suffix):
    case = fresh(folder, "seeds")
    strategy = {".jsonl": jsonl_files(), ".json": json_files(), ".csv": csv_files(",")}[suffix]
    seeds = case / f"seeds{suffix}"
    seeds.write_bytes(data.draw(strategy))
    invoke(["answer", "--seeds", seeds, "--out", case / "o.jsonl", "--dry-run", "--json"], {0, 2})


# --- documents through rag --dry-run -----------------------------------------------------

PDF_HEAD = b"%PDF-1.4\n"


@st.composite
def document_folders(draw) -> dict[str, bytes]:
    files = {}
    for index in range(draw(st.integers(1, 3))):
        suffix = draw(st.sampled_from([".txt", ".md", ".html", ".pdf", ".jsonl"]))
        kind = draw(st.integers(0, 3))
        if suffix == ".pdf":
            body = PDF_HEAD + draw(st.binary(max_size=60)) if kind else draw(st.binary(max_size=60))
        elif suffix == ".jsonl":
            body = draw(jsonl_files())
        elif suffix == ".html" and kind:
            tags = draw(st.lists(st.sampled_from(["<p>", "</p>", "<script>", "</script>", "<br>",
                                                 "<!--", "-->", "&amp;", "&#x110000;", "<a"]),
                                 max_size=6))  # fmt: skip
            body = "".join(tags + [draw(TEXT)]).encode("utf-8", "surrogatepass")
        elif kind == 3:
            body = draw(st.binary(max_size=60))
        else:
            words = draw(st.lists(TEXT, max_size=30))
            body = " ".join(words).encode("utf-8", "surrogatepass")
        files[f"doc{index}{suffix}"] = body
    return files


@fuzz(50)
@given(files=document_folders())
def test_fuzzed_documents_through_rag_dry_run(folder, files):
    case = fresh(folder, "docs")
    docs = case / "docs"
    docs.mkdir()
    for name, body in files.items():
        (docs / name).write_bytes(body)
    invoke(["rag", "--docs", docs, "--out", case / "o.jsonl", "--dry-run", "--json", "--n", "2",
            "--embedder", "hashing"], {0, 2, 3})  # fmt: skip


# --- recipes through run --dry-run, templates through the API ---------------------------

SECTION_KEYS = {
    "llm": ["spec", "args", "temperature", "max_output_tokens", "bogus"],
    "source": ["seeds", "docs", "field_map"],
    "generator": ["type", "rounds", "ops", "n", "answers", "kind", "mix", "bogus"],
    "validators": ["checks", "kind", "min_len", "max_len", "unit"],
    "dedup": ["methods", "threshold", "fields"],
    "selection": ["method", "budget", "tau"],
    "engine": ["concurrency", "timeout", "seed", "wait", "cache", "bogus"],
    "budget": ["max_calls", "max_tokens"],
    "outputs": ["dir", "name", "format", "export", "report"],
}
RECIPE_VALUE = (
    TEXT | st.integers(-3, 5) | st.booleans() | st.none() | st.lists(TEXT, max_size=2)
    | st.sampled_from(["answer", "evolve", "rag", "in2", "grow", "hashing", "exact", "random",
                       "schema", "jsonl", "messages", "instruction"])
)  # fmt: skip


@st.composite
def recipes(draw, seeds: str) -> str:
    kind = draw(st.integers(0, 4))
    if kind == 0:
        return draw(TEXT)  # rarely YAML that means anything
    recipe: dict = {"embedder": "hashing", "llm": {"spec": "local"},
                    "source": {"seeds": seeds}, "generator": {"type": "answer"}}  # fmt: skip
    for section in draw(st.lists(st.sampled_from(sorted(SECTION_KEYS)), max_size=4)):
        keys = draw(st.lists(st.sampled_from(SECTION_KEYS[section]), max_size=3))
        recipe[section] = {key: draw(RECIPE_VALUE) for key in keys}
        if section == "generator" and draw(st.booleans()):
            recipe[section]["type"] = draw(RECIPE_VALUE)
    if kind == 1:
        recipe[draw(TEXT)] = draw(RECIPE_VALUE)
    if kind == 2:
        recipe["seed"] = draw(RECIPE_VALUE)
    text = yaml.safe_dump(recipe, allow_unicode=True)
    if kind == 3:
        text = text[: draw(st.integers(0, len(text)))]
    return text


@fuzz(300)
@given(data=st.data())
def test_fuzzed_recipes_through_run_dry_run(folder, data):
    case = fresh(folder, "recipe")
    seeds = case / "seeds.jsonl"
    seeds.write_text('{"id": "a", "instruction": "Name a colour."}\n')
    recipe = case / "recipe.yaml"
    recipe.write_text(data.draw(recipes(str(seeds))), "utf-8", errors="surrogatepass")
    invoke(["run", recipe, "--dry-run", "--out", case / "run"], {0, 2})


@st.composite
def templates(draw) -> str:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(TEXT)
    body = {
        "id": draw(TEXT | st.just("mine")), "version": draw(st.integers(0, 3) | TEXT),
        "messages": draw(st.lists(st.fixed_dictionaries(
            {"role": st.sampled_from(["system", "user", "assistant", "bogus"]),
             "content": TEXT | st.sampled_from(["{{ x }}", "{% if %}", "{{", "{# c #}"])}),
            max_size=3) | JSON_VALUES),
    }  # fmt: skip
    for key in draw(st.lists(st.sampled_from(["inputs", "output", "bogus", "description"]))):
        body[key] = draw(JSON_VALUES)
    text = yaml.safe_dump(body, allow_unicode=True)
    return text[: draw(st.integers(0, len(text)))] if kind == 3 else text


@fuzz(300)
@given(text=templates())
def test_fuzzed_templates_load_or_say_why(folder, text):
    from evoforge import ConfigError, PromptTemplate, load_template

    path = folder / "template.yaml"
    path.write_text(text, "utf-8", errors="surrogatepass")
    try:
        template = load_template(path)
    except ConfigError as exc:
        message = str(exc)
        assert message and "\n" not in message.strip(), message
    else:
        assert isinstance(template, PromptTemplate)
