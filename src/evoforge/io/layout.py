"""Where a run's files go: the output and the files evoforge keeps beside it.

For ``OUT`` = ``data/out.jsonl``:

- ``data/out.jsonl``            accepted records (or the format ``--format`` names)
- ``data/out.rejects.jsonl``    one rejection a line: ``{"id", "reason", "detail", "record"}``
- ``data/out.manifest.json``    command, config, seed, prompts, model, counts, usage, steps
- ``data/out.journal.db``       the run's journal (keep it to resume; delete it to forget)
"""

from __future__ import annotations

from pathlib import Path

# The names beside an output, by role (the output itself is "out").
SIDE_FILES = {
    "rejects": ".rejects.jsonl",
    "manifest": ".manifest.json",
    "journal": ".journal.db",
}


def output_stem(out: Path) -> str:
    """``out``'s name without its last suffix: the prefix of every file beside it."""
    return out.name[: -len(out.suffix)] if out.suffix else out.name


def output_paths(out: Path) -> dict[str, Path]:
    """The output and its side files: ``out``, ``rejects``, ``manifest``, ``journal``."""
    out = Path(out)
    stem = output_stem(out)
    return {
        "out": out,
        **{role: out.with_name(f"{stem}{tail}") for role, tail in SIDE_FILES.items()},
    }
