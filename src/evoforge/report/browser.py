"""The sample browser's data: every record of a folder, kept and rejected, with its lineage.

:func:`browser_data` reads each output's records whole (the report's other parts keep
only an :class:`~evoforge.report.data.Item` of each) and turns every record into a row
of the browser's table (id, output, step, operator, reason, kind, the start of its text
and the words its search matches) and a detail: its lineage from seed through each
evolution to the final record, with each step's prompt id, model and text (the
instructions between evolutions come from ``meta.instruction_chain`` and
``meta.response_chain``), the critics' verdicts, its fields, and the spans to highlight:
a RAG sample's reference contexts inside their source documents (read from the
documents folder at report time), an IN2 sample's needles inside its context.

:func:`write_browser_data` writes it into the page (up to :data:`INLINE_LIMIT` bytes of
JSON) or, past that, into sidecar ``report-data/*.js`` files beside the page, each
calling the page's global ``evoforgeLoad``. The page adds a ``<script>`` tag per file
when it needs it: browsers refuse ``fetch`` from a ``file://`` page, not scripts.
"""

from __future__ import annotations

import itertools
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoforge.report.data import (
    RECORD_FORMATS,
    Stage,
    _journal_records,
    _read_rows,
    operator_of,
)
from evoforge.report.trace import Lineage

INLINE_LIMIT = 5_000_000  # bytes of JSON inlined in the page; past it, sidecar chunks
ROWS_PER_CHUNK = 2_000  # records per sidecar chunk (rows and details chunk alike)
SEARCH_CHARS = 300  # of each text field that full-text search reads
FIELD_CHARS = 20_000  # of each field a detail shows
DATA_DIR = "report-data"
REDACTED = "(left out: report --redact)"

_TEXT_KEYS = ("instruction", "input", "output", "question", "answer", "user_input", "reference")
_IN_LINEAGE = ("instruction_chain", "response_chain")  # shown as the lineage's steps
_SKIP_FIELDS = {"lineage", "meta", "needles", "reference_context_ids", "reference_contexts"}


@dataclass
class BrowserData:
    """The rows, the details (same order) and the source documents they highlight."""

    rows: list[list[Any]] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    docs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# --- reading every record ---------------------------------------------------------------


def browser_data(
    lineage: Lineage, folder: Path, *, redact: bool = False, docs: list[Path] | None = None
) -> BrowserData:
    """Every record of the folder's chains (its final fate) and of the stages outside them."""
    data = BrowserData()
    seen: set[str] = set()
    in_chains: set[str] = set()
    read: dict[str, dict[str, Any]] = {}
    for chain in lineage.chains:
        source = chain.source
        in_chains.update(s.name for s in chain.later)
        for record in _records(source):
            rid = str(record.get("id") or "")
            fate = chain.fate(rid)
            if fate is None:
                last = chain.later[-1].name if chain.later else source.name
                _add(data, record, source.name, last, None, redact)
            else:
                stage, drop = fate
                _add(data, record, source.name, stage.name, _reject_of(stage, rid, read), redact)
            seen.add(rid)
        for reject in _rejects(source):
            _add(data, reject.get("record") or {"id": reject.get("id")}, source.name,
                 source.name, reject, redact)  # fmt: skip
    for stage in lineage.stages:
        if stage.role == "generate" or stage.name in in_chains:
            continue
        for record in _records(stage):
            if str(record.get("id") or "") not in seen:
                _add(data, record, stage.name, stage.name, None, redact)
        for reject in _rejects(stage):
            _add(data, reject.get("record") or {"id": reject.get("id")}, stage.name,
                 stage.name, reject, redact)  # fmt: skip
    _link_parents(data)
    if not redact:
        _read_documents(data, lineage.stages, folder, docs)
    return data


def _records(stage: Stage) -> list[dict[str, Any]]:
    journal = stage.out.with_name(f"{stage.name}.journal.db")
    if stage.role == "generate" and stage.manifest.get("format") not in RECORD_FORMATS:
        # an export format (ragas, deepeval, plain) drops ids: the journal has the records
        left_out = {d.id for d in stage.dropped}
        if journal.exists():
            return [r for r in _journal_records(journal) if r.get("id") not in left_out]
    return [r for r in _read_rows(stage.out) if isinstance(r, dict)]


def _rejects(stage: Stage) -> list[dict[str, Any]]:
    path = stage.out.with_name(f"{stage.name}.rejects.jsonl")
    return [r for r in _read_rows(path) if isinstance(r, dict)] if path.exists() else []


def _reject_of(stage: Stage, record_id: str, read: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The reject line of ``record_id`` at a later stage (``read``: each stage's, by id)."""
    if stage.name not in read:
        read[stage.name] = {str(r.get("id")): r for r in _rejects(stage)}
    drop = stage.drops_by_id[record_id]
    return read[stage.name].get(record_id) or {"reason": drop.reason, "detail": drop.detail}


def _add(
    data: BrowserData,
    record: dict[str, Any],
    output: str,
    stage: str,
    reject: dict[str, Any] | None,
    redact: bool,
) -> None:
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    kind = str(record.get("kind") or "")
    rid = str(record.get("id") or (reject or {}).get("id") or "")
    reason = str(reject.get("reason") or "unknown") if reject else ""
    step = (reject.get("step") or stage) if reject else stage
    fields = _fields(record, redact)
    text = next((t for name, t in fields if name in _TEXT_KEYS and t), "")
    text = text or str(meta.get("question") or "") or (fields[0][1] if fields else "")
    words = [rid, reason, str((reject or {}).get("detail") or "")]
    words += [t[:SEARCH_CHARS] for _, t in fields]
    data.rows.append([
        rid, output, str(step), operator_of(record), reason or "kept", kind,
        " ".join(text[:140].split()), " ".join(" ".join(words).lower().split()),
    ])  # fmt: skip
    data.details.append({
        "id": rid, "output": output, "stage": stage, "kind": kind,
        "status": "rejected" if reject else "kept",
        "reject": _reject_part(reject),
        "parent": record.get("parent_id"),
        "lineage": _lineage(record, meta, fields, reject),
        "verdicts": _verdicts(meta, reject),
        "fields": [[n, t[:FIELD_CHARS]] for n, t in fields],
        "marks": _marks(record, redact),
        "meta": json.dumps(
            {k: v for k, v in meta.items() if k not in _IN_LINEAGE}, ensure_ascii=False
        )[:FIELD_CHARS],
    })  # fmt: skip


def _reject_part(reject: dict[str, Any] | None) -> dict[str, Any] | None:
    if not reject:
        return None
    keys = ("reason", "detail", "step", "field", "lost_to")
    return {k: reject[k] for k in keys if reject.get(k) is not None}


def _fields(record: dict[str, Any], redact: bool) -> list[list[str]]:
    out = []
    for name, value in record.items():
        if name in _SKIP_FIELDS or name in ("id", "kind") or value in (None, "", []):
            continue
        if name == "messages" and isinstance(value, list):
            for number, turn in enumerate(value):
                content = str(turn.get("content", "")) if isinstance(turn, dict) else str(turn)
                if redact and number == 0 and record.get("context_chars"):
                    start = int(record.get("context_start") or 0)
                    end = start + int(record["context_chars"])
                    content = content[:start] + REDACTED + content[end:]
                role = turn.get("role", "?") if isinstance(turn, dict) else "?"
                out.append([f"messages[{number}] {role}", content])
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        out.append([name, text])
    return out


def _lineage(
    record: dict[str, Any], meta: dict[str, Any], fields: list[list[str]], reject: Any
) -> list[dict[str, Any]]:
    """Seed, each step of ``record['lineage']`` with the text it made where it is known,
    then the final record's verdict."""
    kind = record.get("kind")
    instructions = list(meta.get("instruction_chain") or [])
    responses = list(meta.get("response_chain") or [])
    later_instructions = iter([*instructions[1:], record.get("instruction")])
    later_responses = iter([*responses[1:], record.get("output")])
    steps: list[dict[str, Any]] = []
    if instructions:
        seed = instructions[0]
    elif kind == "rag":
        seed = "passages of " + ", ".join(
            sorted({str(c.get("doc_id")) for c in record.get("reference_context_ids") or []})
        )
    elif kind == "in2":
        seed = "documents " + ", ".join(
            sorted({str(n.get("doc_id")) for n in record.get("needles") or []})
        )
    else:
        seed = str(record.get("instruction") or record.get("question") or "")
    steps.append({"label": "seed", "text": seed})
    entries = [e for e in record.get("lineage") or [] if isinstance(e, dict)]
    answers = [i for i, e in enumerate(entries) if e.get("op") == "answer"]
    rewrites = [i for i, e in enumerate(entries) if str(e.get("op")).startswith("rewrite_")]
    for number, entry in enumerate(entries):
        op = str(entry.get("op") or "?")
        text = None
        if op.startswith("evolve_") and kind == "instruction":
            text = next(later_instructions, None)
        elif "quality" in op:
            text = next(later_responses, None)
        elif op == "answer" and answers and number == answers[-1]:
            text = record.get("output")
        elif op == "rag_seed":
            text = meta.get("seed_question")
        elif (op.startswith("rewrite_") and number == rewrites[-1]) or (
            kind == "in2" and number == len(entries) - 1
        ):  # an earlier rewrite's question is not kept: only the last one's
            text = record.get("user_input") or meta.get("question")
        text = text if isinstance(text, str) else None
        step = {"label": op, "round": entry.get("round"), "prompt_id": entry.get("prompt_id"),
                "model": entry.get("model"), "text": text}  # fmt: skip
        same = [name for name, value in fields if text and value == text]
        if same:  # the page shows the field's text here: the data holds it once
            step["text"], step["field"] = None, same[0]
        steps.append(step)
    final = f"rejected: {reject.get('reason')}" if reject else "kept"
    steps.append({"label": "final", "text": final})
    return steps


def _verdicts(meta: dict[str, Any], reject: dict[str, Any] | None) -> list[list[str]]:
    """Rows of [who, verdict] or [who, verdict, reason]: for a rejection, first its step,
    reason and detail; each critic's (its score and reason from ``meta.critics.verdicts``;
    older folders have only the names that passed), the equality judge's reply on the
    evolution and the judges' entries in ``meta``."""
    out: list[list[str]] = []
    critics = meta.get("critics")
    said = critics.get("verdicts") if isinstance(critics, dict) else None
    if isinstance(said, dict):
        for name, entry in said.items():
            entry = entry if isinstance(entry, dict) else {}
            verdict = "passed" if entry.get("ok", True) else "failed"
            if isinstance(entry.get("score"), int | float):
                verdict += f" · score {entry['score']:g}"
            reason = entry.get("reason")
            out.append([str(name), verdict] + ([str(reason)] if reason else []))
    elif isinstance(critics, dict):
        for verdict, names in critics.items():
            for name in names if isinstance(names, list) else [names]:
                out.append([str(name), str(verdict)])
    for key in ("evol", "evol_quality"):  # the equality judge on this evolution
        said = meta.get(key).get("judge") if isinstance(meta.get(key), dict) else None
        if isinstance(said, str):
            out.append([f"equality judge, round {meta[key].get('round')}", "kept", said])
    for key in ("judge", "deita", "alpagasus", "rubric"):
        if meta.get(key) is not None:
            out.append([key, json.dumps(meta[key], ensure_ascii=False)])
    if reject:  # first: the final verdict, then what each step said on the way
        where = reject.get("step") or "rejected"
        out.insert(0, [str(where), f"{reject.get('reason')}: {reject.get('detail') or ''}"])
    return out


def _marks(record: dict[str, Any], redact: bool) -> list[dict[str, Any]]:
    """RAG: each source document and the spans of the contexts in it; IN2: the context and
    its needles. Redacted: only the note that they were left out."""
    if record.get("kind") == "rag" and record.get("reference_context_ids"):
        by_doc: dict[str, list[list[int]]] = {}
        for ref in record["reference_context_ids"]:
            if isinstance(ref, dict) and isinstance(ref.get("start"), int):
                by_doc.setdefault(str(ref.get("doc_id")), []).append([ref["start"], ref["end"]])
        contexts = [] if redact else [str(c) for c in record.get("reference_contexts") or []]
        return [
            {"title": f"reference contexts in {doc}", "doc": doc, "spans": spans,
             "contexts": contexts, "redacted": redact}
            for doc, spans in by_doc.items()
        ]  # fmt: skip
    if record.get("kind") == "in2" and record.get("needles") and record.get("context_chars"):
        if redact:
            return [{"title": "needles in the context", "redacted": True, "spans": []}]
        user = record["messages"][0]["content"] if record.get("messages") else ""
        start = int(record.get("context_start") or 0)
        context = user[start : start + int(record["context_chars"])]
        spans = [[n["char_start"], n["char_end"]] for n in record["needles"]
                 if isinstance(n, dict) and isinstance(n.get("char_start"), int)]  # fmt: skip
        return [{"title": "needles in the context", "text": context, "spans": spans}]
    return []


def _link_parents(data: BrowserData) -> None:
    """A detail's parent, when the folder holds it (a rejected earlier round, say): its row."""
    index = {d["id"]: number for number, d in enumerate(data.details)}
    for detail in data.details:
        parent = detail.get("parent")
        detail["parent_row"] = index.get(parent) if parent else None
    for detail in data.details:  # an earlier round's answer, from that round's record
        row, steps, hops = detail["parent_row"], detail["lineage"], 0
        while row is not None and hops < len(steps):  # a lineage is no longer than its steps
            hops += 1
            ancestor = data.details[row]
            last = len(ancestor["lineage"]) - 2  # its last step, counted as in ``steps``
            output = dict(ancestor["fields"]).get("output")
            known = steps[last]["text"] or steps[last].get("field") if 0 < last < len(steps) else 1
            if not known and output:
                steps[last]["text"] = output
            row = ancestor["parent_row"]


def _read_documents(
    data: BrowserData, stages: list[Stage], folder: Path, docs: list[Path] | None
) -> None:
    """The text of every document a RAG sample points into, from the documents folder:
    ``docs`` when given, else the paths on the rag run's command line that still exist."""
    wanted = {m["doc"] for d in data.details for m in d["marks"] if m.get("doc")}
    if not wanted:
        return
    paths = list(docs or [])
    if not paths:
        for stage in stages:
            if stage.command != "rag":
                continue
            argv = [str(a) for a in stage.manifest.get("argv") or []]
            for arg in argv[argv.index("rag") + 1 :] if "rag" in argv else []:
                for base in (Path.cwd(), folder, folder.parent):
                    candidate = base / arg
                    if arg and not arg.startswith("-") and candidate.is_dir():
                        paths.append(candidate)
                        break
    if not paths:
        data.notes.append(
            "Sample browser: the RAG documents folder was not found (pass report --docs), "
            "so reference contexts are shown without their source text."
        )
        return
    from evoforge.io.documents import load_documents

    try:
        loaded = load_documents(paths).documents
    except Exception as exc:  # a missing or unreadable folder is a note, not a failed report
        data.notes.append(f"Sample browser: documents not read ({exc}).")
        return
    data.docs = {d.id: d.text for d in loaded if d.id in wanted}
    missing = len(wanted - set(data.docs))
    if missing:
        data.notes.append(f"Sample browser: {missing} source documents were not found.")


# --- writing it -------------------------------------------------------------------------


def write_browser_data(data: BrowserData, folder: Path, *, limit: int = INLINE_LIMIT) -> str:
    """The ``<script>`` text the page inlines: the data itself when its JSON is at most
    ``limit`` bytes, else the call that loads the sidecar files written under
    ``report-data/``. Chunks are encoded one at a time: a big run's JSON is never held
    whole."""
    sidecar = folder / DATA_DIR
    docs = sorted(data.docs)
    doc_index = {name: number for number, name in enumerate(docs)}
    for detail in data.details:
        for mark in detail["marks"]:
            if mark.get("doc") in doc_index:
                mark["doc_no"] = doc_index[mark["doc"]]
    texts = [_safe(f"evoforgeLoad('doc',{n},{_json(data.docs[name])});") for n, name in
             enumerate(docs)]  # fmt: skip
    n_chunks = -(-len(data.rows) // ROWS_PER_CHUNK)
    start = f"evoforgeStart({{chunk:{ROWS_PER_CHUNK},chunks:{n_chunks},docs:{len(docs)}}});"
    held, size = list(texts), sum(map(len, texts))
    chunks = _chunks(data)
    for script in chunks:
        held.append(script)
        size += len(script)
        if size > limit:
            break
    else:  # small enough: inline, and no sidecar folder left from an earlier report
        if sidecar.exists():
            shutil.rmtree(sidecar)
        return "\n".join([*held, start])
    tmp = folder / f".{DATA_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    for script in itertools.chain(held, chunks):
        part, number = script[len("evoforgeLoad('") :].split(",", 2)[:2]
        (tmp / f"{part.rstrip(chr(39))}-{int(number):04d}.js").write_text(script + "\n", "utf-8")
    if sidecar.exists():
        shutil.rmtree(sidecar)
    tmp.rename(sidecar)
    return start


def _chunks(data: BrowserData) -> Iterator[str]:
    """``evoforgeLoad`` calls: each chunk's rows, then its details."""
    for number, first in enumerate(range(0, len(data.rows), ROWS_PER_CHUNK)):
        for part, items in (("rows", data.rows), ("details", data.details)):
            chunk = _json(items[first : first + ROWS_PER_CHUNK])
            yield _safe(f"evoforgeLoad('{part}',{number},{chunk});")


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _safe(script: str) -> str:
    """JSON inside a ``<script>``: no ``<`` may end it early (``<`` only occurs in strings)."""
    return script.replace("<", "\\u003c")
