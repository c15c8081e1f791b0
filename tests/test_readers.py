"""Seed readers: every format, streaming, and errors that name file, line and field."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from evoforge import InputError, read_records
from evoforge.io.readers import iter_rows, parse_field_map

ROWS = [
    {"instruction": "one", "input": "", "extra": 1},
    {"instruction": "two", "input": "ctx"},
]


def records_of(path, **kwargs):
    return list(
        read_records(
            path, kind="instruction", required=("instruction",), optional={"input": ""}, **kwargs
        )
    )


@pytest.fixture
def files(tmp_path):
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    array = tmp_path / "s.json"
    array.write_text(json.dumps(ROWS))
    csv_path = tmp_path / "s.csv"
    pd.DataFrame(ROWS).to_csv(csv_path, index=False)
    parquet = tmp_path / "s.parquet"
    pd.DataFrame(ROWS).to_parquet(parquet)
    folder = tmp_path / "hf"
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(folder))
    return {"jsonl": jsonl, "json": array, "csv": csv_path, "parquet": parquet, "hf": folder}


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "parquet", "hf"])
def test_every_format_gives_the_same_records(files, fmt):
    records = records_of(files[fmt])
    assert [r["instruction"] for r in records] == ["one", "two"]
    assert [r["input"] for r in records] == ["", "ctx"]
    # ids are stable: same content and position, same id
    assert [r.id for r in records] == [r.id for r in records_of(files[fmt])]


def test_blank_lines_are_skipped_and_line_numbers_kept(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('\n{"instruction": "a"}\n\n{"nope": 1}\n')
    items = records_of(path)
    assert items[0].id.startswith("s2-")
    assert isinstance(items[1], InputError)
    assert str(items[1]) == f'{path} line 4: field "instruction" is missing (expected string)'


def test_json_array_items_are_numbered(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps([{"instruction": "a"}, 3]))
    items = records_of(path)
    assert str(items[1]) == f"{path} item 2: expected a JSON object, got integer"


def test_csv_row_with_too_many_cells(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("instruction,input\na,b\nc,d,e\n")
    items = records_of(path)
    assert str(items[1]).startswith(f"{path} line 3: has 3 cells but the header has 2")


def test_empty_required_field(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text('{"instruction": "   "}\n')
    assert str(records_of(path)[0]) == f'{path} line 1: field "instruction" is empty'


def test_non_utf8_file_names_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(b'{"instruction": "ok"}\n{"instruction": "\xff\xfe"}\n')
    items = records_of(path)
    assert items[0]["instruction"] == "ok"
    assert str(items[1]) == f"{path} line 2: is not UTF-8 text (invalid start byte)"


def test_unsupported_extension(tmp_path):
    path = tmp_path / "s.xlsx"
    path.write_text("x")
    with pytest.raises(InputError, match="unsupported file type .xlsx"):
        list(iter_rows(path))


def test_folder_that_is_not_a_dataset(tmp_path):
    with pytest.raises(InputError, match="not a datasets folder"):
        list(iter_rows(tmp_path))


def test_field_map_and_unknown_target(files):
    records = records_of(files["jsonl"], field_map={"input": "extra"})
    assert str(records[0]).endswith('line 1: field "extra" must be a string, got integer')
    assert records[1]["input"] == ""  # no "extra" column on that row: the default
    bad = records_of(files["jsonl"], field_map={"instruction": "missing_col"})
    assert 'field "missing_col" is missing' in str(bad[0])
    with pytest.raises(InputError, match="not a field of instruction records"):
        records_of(files["jsonl"], field_map={"question": "x"})
    with pytest.raises(InputError, match="TARGET=SOURCE"):
        parse_field_map(["nonsense"])


def test_extra_columns_are_kept_in_meta(files):
    assert records_of(files["jsonl"])[0].meta == {"source": {"extra": 1}}


def test_jsonl_is_streamed_not_loaded(tmp_path):
    path = tmp_path / "big.jsonl"
    with open(path, "w") as fh:
        for i in range(50_000):
            fh.write(json.dumps({"instruction": f"q{i}"}) + "\n")
    rows = iter_rows(path)
    first = next(rows)
    assert first[0] == 1
    # The reader holds one line at a time: the generator's frame has no list of rows.
    frame_locals = rows.gi_frame.f_locals if rows.gi_frame else {}
    assert not any(isinstance(v, list) and len(v) > 10 for v in frame_locals.values())
