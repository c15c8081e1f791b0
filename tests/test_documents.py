"""Document loading and chunking: every format, every skip reason, exact offsets."""

from __future__ import annotations

import json
import random
import sys
from itertools import pairwise
from pathlib import Path

import pytest

from evoforge import ConfigError, InputError
from evoforge.io.documents import (
    MIN_CHUNK_CHARS,
    Chunk,
    Document,
    chunk_document,
    chunk_documents,
    count_tokens,
    html_to_text,
    load_documents,
    locate_chunks,
)
from evoforge.validators.heuristics import dominant_script

EXAMPLE_DOCS = Path(__file__).resolve().parents[1] / "examples" / "docs"

HTML = """<!DOCTYPE html>
<html><head><title>Head title</title>
<style>p { color: red; } .secret-style {}</style>
<script>var secret = "SCRIPT-TEXT"; if (a < b) { document.write("</p>"); }</script>
</head>
<body>
<nav><a href="/">NAV-LINK</a></nav>
<h1>Tides</h1>
<p>The Moon   pulls the <b>oceans</b>.</p>
<p>Spring tides &amp; neap tides.</p>
<ul><li>one</li><li>two</li></ul>
<noscript>NOSCRIPT-TEXT</noscript><template><p>TEMPLATE-TEXT</p></template>
</body></html>
"""


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def by_path(report):
    return {doc.path: doc for doc in report.documents}


def reasons(report):
    return {skip.path: skip.reason for skip in report.skipped}


# ---------------------------------------------------------------------------- formats


def test_text_and_markdown_load_as_written(tmp_path):
    write(tmp_path / "a.txt", "Plain text.\r\nSecond line.\n")
    write(tmp_path / "b.md", "# Title\n\nSome *markdown* text.\n")
    write(tmp_path / "c.markdown", "Another one.")
    docs = by_path(load_documents([tmp_path]))
    assert docs["a.txt"].text == "Plain text.\nSecond line.\n"  # line endings normalised
    assert docs["b.md"].text == "# Title\n\nSome *markdown* text.\n"
    assert docs["c.markdown"].text == "Another one."
    assert docs["b.md"].language == "Latin"


def test_html_keeps_visible_text_only(tmp_path):
    write(tmp_path / "page.html", HTML)
    write(tmp_path / "page2.htm", "<p>short</p>")
    docs = by_path(load_documents([tmp_path]))
    text = docs["page.html"].text
    for hidden in (
        "SCRIPT-TEXT",
        "secret-style",
        "color",
        "NAV-LINK",
        "NOSCRIPT",
        "TEMPLATE",
        "Head",
    ):
        assert hidden not in text
    assert text == "Tides\n\nThe Moon pulls the oceans.\n\nSpring tides & neap tides.\n\none\ntwo"
    assert docs["page2.htm"].text == "short"


def test_html_to_text_handles_tables_pre_and_unclosed_head():
    assert html_to_text("<head><title>x</title><body><p>body text") == "body text"
    table = "<table><tr><th>a</th><td>b</td></tr><tr><td>c</td><td>d</td></tr></table>"
    assert html_to_text(table) == "a b\nc d"
    assert html_to_text("<p>x</p><pre>  keep\n    this</pre>") == "x\n\n  keep\n    this"
    assert html_to_text("<div><div><p>a</p></div></div>\n\n\n<p>b<br>c</p>") == "a\n\nb\nc"


def test_jsonl_gives_one_document_per_line_and_skips_bad_lines(tmp_path):
    lines = [
        json.dumps({"text": "First document."}),
        json.dumps({"body": "no text field here"}),
        "",
        json.dumps({"text": "Third document.", "id": 7}),
        "{not json",
        json.dumps({"text": 12}),
        json.dumps({"text": "   "}),
        json.dumps(["a list"]),
    ]
    write(tmp_path / "rows.jsonl", "\n".join(lines) + "\n")
    report = load_documents([tmp_path / "rows.jsonl"])
    assert [(d.path, d.text) for d in report.documents] == [
        ("rows.jsonl:1", "First document."),
        ("rows.jsonl:4", "Third document."),
    ]
    assert reasons(report) == {
        "rows.jsonl:2": "no_text_field",
        "rows.jsonl:5": "unreadable",
        "rows.jsonl:6": "no_text_field",
        "rows.jsonl:7": "empty",
        "rows.jsonl:8": "no_text_field",
    }
    detail = next(s.detail for s in report.skipped if s.path == "rows.jsonl:2")
    assert detail.startswith('rows.jsonl line 2: field "text" is missing')


def test_jsonl_text_field_is_configurable(tmp_path):
    write(tmp_path / "rows.jsonl", json.dumps({"body": "In the body."}) + "\n")
    report = load_documents([tmp_path], text_field="body")
    assert [d.text for d in report.documents] == ["In the body."]
    assert report.skipped == []


# ----------------------------------------------------------------------------- skips


def test_bad_files_are_skipped_with_a_reason(tmp_path):
    write(tmp_path / "empty.txt", "")
    write(tmp_path / "blank.md", "  \n\t\n")
    write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    write(tmp_path / "latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"))
    write(tmp_path / "utf16.txt", "hello".encode("utf-16"))
    write(tmp_path / "data.csv", "a,b\n1,2\n")
    write(tmp_path / "noext", "text without a suffix")
    write(tmp_path / "empty.jsonl", "\n\n")
    write(tmp_path / "ok.txt", "fine")
    report = load_documents([tmp_path])
    assert [d.path for d in report.documents] == ["ok.txt"]
    assert reasons(report) == {
        "blank.md": "empty",
        "data.csv": "unsupported",
        "empty.jsonl": "empty",
        "empty.txt": "empty",
        "image.txt": "binary",
        "latin1.txt": "undecodable",
        "noext": "unsupported",
        "utf16.txt": "undecodable",
    }
    details = {s.path: s.detail for s in report.skipped}
    assert "save it as UTF-8" in details["latin1.txt"]
    assert ".txt" in details["data.csv"]  # names the supported types
    assert report.skipped_counts() == {"empty": 3, "unsupported": 2, "undecodable": 2, "binary": 1}


def test_a_bom_is_dropped(tmp_path):
    write(tmp_path / "bom.txt", "\ufeffWith a byte order mark.")
    assert load_documents([tmp_path / "bom.txt"]).documents[0].text == "With a byte order mark."


def test_an_explicit_unsupported_file_is_skipped_not_raised(tmp_path):
    report = load_documents([write(tmp_path / "table.csv", "a,b\n")])
    assert reasons(report) == {"table.csv": "unsupported"}


def test_a_missing_path_raises_naming_it(tmp_path):
    write(tmp_path / "ok.txt", "fine")
    missing = tmp_path / "nope" / "gone.md"
    with pytest.raises(InputError, match="gone.md"):
        load_documents([tmp_path, missing])


def test_an_unreadable_file_is_skipped(tmp_path, monkeypatch):
    write(tmp_path / "locked.txt", "secret")
    original = Path.read_bytes

    def read_bytes(self):
        if self.name == "locked.txt":
            raise PermissionError(13, "Permission denied")
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    report = load_documents([tmp_path])
    assert reasons(report) == {"locked.txt": "unreadable"}
    assert "Permission denied" in report.skipped[0].detail


# ------------------------------------------------------------------------ ids, walking


def test_walk_is_recursive_sorted_and_skips_hidden(tmp_path):
    for name in ["b.txt", "a/z.md", "a/b/c.txt", "a.txt", ".hidden.txt", ".git/config.txt", "c.md"]:
        write(tmp_path / name, f"content of {name}")
    report = load_documents([tmp_path])
    assert [d.path for d in report.documents] == ["a/b/c.txt", "a/z.md", "a.txt", "b.txt", "c.md"]
    assert report.skipped == []


def test_ids_are_stable_and_follow_content(tmp_path):
    write(tmp_path / "notes" / "one.txt", "The same text.")
    first = load_documents([tmp_path]).documents[0]
    again = load_documents([str(tmp_path)]).documents[0]
    assert first == again
    assert first.id.startswith("notes/one.txt#") and len(first.id.split("#")[1]) == 10
    write(tmp_path / "notes" / "one.txt", "Changed text.")
    changed = load_documents([tmp_path]).documents[0]
    assert changed.path == first.path and changed.id != first.id
    # A file given directly is named by its file name.
    direct = load_documents([tmp_path / "notes" / "one.txt"]).documents[0]
    assert direct.id == changed.id.replace("notes/", "")


def test_a_file_reached_twice_is_read_once(tmp_path):
    path = write(tmp_path / "one.txt", "once")
    report = load_documents([tmp_path, path])
    assert [d.path for d in report.documents] == ["one.txt"]


def test_language_is_the_dominant_script(tmp_path):
    write(tmp_path / "zh.md", "# Chang'e\n\n嫦娥四号在月球背面着陆。")
    write(tmp_path / "ru.txt", "Луна всегда обращена к Земле одной стороной.")
    write(tmp_path / "digits.txt", "12345 678")
    languages = {d.path: d.language for d in load_documents([tmp_path]).documents}
    assert languages == {"digits.txt": None, "ru.txt": "Cyrillic", "zh.md": "Han"}
    for document in load_documents([EXAMPLE_DOCS]).documents:
        assert document.language == dominant_script(document.text)


# ------------------------------------------------------------------------------- pdf


def _text_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF with one Helvetica text line per page."""
    count = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {count} >>",
    ]
    font = 3 + 2 * count
    for i, line in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({line}) Tj ET"
        objects.append(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font} 0 R >> >> /Contents {4 + 2 * i} 0 R >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return out


def test_pdf_without_the_extra_is_skipped_naming_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pypdf", None)  # makes `import pypdf` fail
    write(tmp_path / "paper.pdf", _text_pdf(["Hello PDF"]))
    report = load_documents([tmp_path])
    assert report.documents == []
    assert reasons(report) == {"paper.pdf": "missing_extra"}
    assert "pip install 'evoforge[pdf]'" in report.skipped[0].detail


def test_pdf_text_is_extracted_page_by_page(tmp_path):
    pytest.importorskip("pypdf")
    write(tmp_path / "paper.pdf", _text_pdf(["First page text.", "Second page text."]))
    write(tmp_path / "broken.pdf", b"%PDF-1.4\nthis is not a pdf at all")
    write(tmp_path / "blank.pdf", _text_pdf([""]))
    report = load_documents([tmp_path])
    assert [(d.path, d.text) for d in report.documents] == [
        ("paper.pdf", "First page text.\n\nSecond page text.")
    ]
    assert reasons(report) == {"blank.pdf": "empty", "broken.pdf": "unreadable"}


# -------------------------------------------------------------------------- chunking


def _doc(text: str, path: str = "doc.txt") -> Document:
    return Document(id=f"{path}#test", path=path, text=text)


LATIN = [
    "The tide rises twice a day.",
    "Bees dance to share directions.",
    "Lava flows downhill slowly.",
    "A press prints many pages.",
    "Hello world.",
    "Pneumonoultramicroscopicsilicovolcanoconiosis!",
    "x",
    "a, b; c? d!",
]
CJK = ["月球总是以同一面朝向地球。", "嫦娥五号带回了月壤。", "蜜蜂会跳舞，", "你好！"]
SEPARATORS = [" ", "  ", "\n", "\n\n", "\n\n\n", " \n ", "\t", "", "   \n\n  "]


def random_text(rng: random.Random) -> str:
    """Repeated sentences from a small pool, odd whitespace, some Chinese."""
    if rng.random() < 0.04:
        return rng.choice(["a", "ab ", "月"]) * rng.randint(1, 2000)
    pool = rng.sample(LATIN + CJK, rng.randint(1, 5))
    parts = []
    for _ in range(rng.randint(1, 120)):
        parts += [rng.choice(pool), rng.choice(SEPARATORS)]
    text = "".join(parts)
    if rng.random() < 0.3:
        text = rng.choice(SEPARATORS) + text + rng.choice(SEPARATORS)
    return text


def assert_well_formed(document: Document, chunks: list[Chunk]) -> None:
    text = document.text
    assert chunks, "a non-blank document gives at least one chunk"
    for index, chunk in enumerate(chunks):
        assert text[chunk.start : chunk.end] == chunk.text
        assert chunk.text == chunk.text.strip() and chunk.text
        assert chunk.index == index
        assert chunk.id == f"{document.id}@{chunk.start}"
        assert (chunk.doc_id, chunk.path) == (document.id, document.path)
    assert chunks[0].start == len(text) - len(text.lstrip())
    assert chunks[-1].end == len(text.rstrip())
    for before, after in pairwise(chunks):
        assert before.start < after.start and before.end < after.end
        assert not text[before.end : after.start].strip(), "chunks overlap or touch"


@pytest.mark.parametrize(
    ("unit", "size", "overlap"),
    [
        ("chars", 12, 3),
        ("chars", 60, 0),
        ("chars", 80, 30),
        ("chars", 400, 50),
        ("tokens", 5, 1),
        ("tokens", 20, 5),
        ("tokens", 100, 10),
    ],
)
def test_chunk_offsets_hold_for_random_documents(unit, size, overlap):
    rng = random.Random(f"{unit}-{size}-{overlap}")
    length = len if unit == "chars" else count_tokens
    for n in range(250):
        document = _doc(random_text(rng), path=f"r{n}.txt")
        chunks = chunk_document(document, size=size, overlap=overlap, unit=unit)
        assert_well_formed(document, chunks)
        if size >= 60:  # small chunks are folded in, so a chunk may grow a little
            assert max(length(c.text) for c in chunks) <= 1.5 * size + MIN_CHUNK_CHARS


def test_locate_chunks_recovers_pieces_with_altered_whitespace():
    text = "Alpha beta.\n\nGamma   delta\tepsilon.\n\nAlpha beta."
    pieces = ["Alpha beta.", "Gamma delta epsilon.", "Alpha beta."]  # spaces collapsed
    spans = locate_chunks(text, pieces)
    assert [text[s:e] for s, e in spans] == [
        "Alpha beta.",
        "Gamma   delta\tepsilon.",
        "Alpha beta.",
    ]
    assert spans[-1][1] == len(text)


def test_locate_chunks_covers_the_text_even_when_pieces_cannot():
    text = "one two three"
    assert locate_chunks(text, ["two"]) == [(0, len(text))]
    assert locate_chunks(text, ["one", "three"]) == [(0, 7), (8, 13)]


@pytest.mark.parametrize("unit", ["chars", "tokens"])
def test_chunks_cover_highly_repetitive_text(unit):
    """A few characters repeated at random: the hardest case for placing chunks."""
    rng = random.Random(unit)
    alphabet = ["a", "b", " ", "\n", "。", ". ", "ab", "aab ", "月", ",", "\n\n"]
    for _ in range(300):
        symbols = rng.sample(alphabet, rng.randint(1, 5))
        text = "".join(rng.choice(symbols) for _ in range(rng.randint(1, 800)))
        if not text.strip():
            continue
        size = rng.choice([2, 3, 5, 8, 13, 30, 100])
        document = _doc(text)
        chunks = chunk_document(document, size=size, overlap=rng.randrange(size), unit=unit)
        assert_well_formed(document, chunks)


def test_repeated_paragraphs_get_distinct_offsets():
    text = "\n\n".join(["Same paragraph, repeated word for word."] * 6)
    document = _doc(text)
    chunks = chunk_document(document, size=45, overlap=0)
    assert [c.start for c in chunks] == [i * 41 for i in range(6)]
    assert_well_formed(document, chunks)


def test_chunk_ids_are_stable_and_chunks_respect_size():
    text = (EXAMPLE_DOCS / "tides.md").read_text("utf-8")
    document = _doc(text, "tides.md")
    first = chunk_document(document, size=300, overlap=120)
    assert first == chunk_document(document, size=300, overlap=120)
    assert len({c.id for c in first}) == len(first)
    assert all(len(c.text) <= 300 + MIN_CHUNK_CHARS for c in first)
    # Overlap: consecutive chunks share text, at most the overlap in characters.
    assert any(a.end > b.start for a, b in pairwise(first))
    assert all(a.end - b.start <= 120 for a, b in pairwise(first))


def test_small_trailing_chunk_is_folded_in():
    text = "A sentence long enough to be a chunk on its own here.\n\nEnd."
    chunks = chunk_document(_doc(text), size=60, overlap=0)
    assert [c.text for c in chunks] == [text]  # "End." alone is not a passage
    assert chunk_document(_doc("Tiny."), size=60, overlap=0)[0].text == "Tiny."


def test_blank_document_has_no_chunks():
    assert chunk_document(_doc(" \n\t "), size=10, overlap=0) == []


def test_token_unit_counts_words_punctuation_and_cjk():
    assert count_tokens("Hello, world!") == 4
    assert count_tokens("嫦娥四号") == 4
    assert count_tokens("GPT-4o costs $5.") == 7  # GPT - 4o costs $ 5 .
    assert count_tokens("") == 0
    document = _doc(" ".join(f"word{i}." for i in range(300)))
    chunks = chunk_document(document, size=50, overlap=10, unit="tokens")
    assert all(count_tokens(c.text) <= 50 for c in chunks)
    assert_well_formed(document, chunks)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 0}, "chunk size"),
        ({"size": -5}, "chunk size"),
        ({"size": 10, "overlap": 10}, "overlap"),
        ({"size": 10, "overlap": -1}, "overlap"),
        ({"unit": "words"}, "unit"),
    ],
)
def test_bad_chunking_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        chunk_document(_doc("text"), **kwargs)


def test_chunk_documents_rejects_unknown_options():
    with pytest.raises(ConfigError, match="chunk_sise"):
        chunk_documents([_doc("text")], chunk_sise=10)


# ------------------------------------------------------------------------- examples


def test_example_docs_load_cleanly_and_chunk():
    report = load_documents([EXAMPLE_DOCS])
    assert report.skipped == []
    assert len(report.documents) >= 4
    languages = {d.path: d.language for d in report.documents}
    assert languages["chang_e.md"] == "Han"
    honeybees = by_path(report)["honeybees.html"].text
    assert "waggle dance" in honeybees
    for noise in ("TRACKING-SNIPPET", "MENU-SCRIPT", "font-family", "Log in", "cookie"):
        assert noise not in honeybees
    chunks = chunk_documents(report.documents, size=400, overlap=50)
    for document in report.documents:
        mine = [c for c in chunks if c.doc_id == document.id]
        assert len(mine) >= 2, document.path
        assert_well_formed(document, mine)
