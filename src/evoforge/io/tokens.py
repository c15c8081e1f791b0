"""The ``tokens`` export: records as token ids with exact loss masks, for TRL's SFTTrainer.

One JSONL row per record: ``{"id", "input_ids", "attention_mask", "labels",
"assistant_masks"}``. The conversation (the ``messages`` export of the record) is
rendered with the tokenizer's chat template and tokenized once, with character offsets.
The trained character ranges are:

- every assistant turn's content, for kinds without segments (``chat``, ``instruction``,
  ``qa``, ``rag``, ``in2``): assistant-only loss;
- for a ``pam`` record, the segments marked ``trained`` (the initial answer only when it
  was correct; the verification and the correction always), each together with the
  separator before it (the blank line takes the mask of the segment it introduces).

A token is trained if and only if every character it covers lies in one trained range;
the end-of-turn token that closes a trained assistant turn (``<|im_end|>`` for SmolLM2)
is trained too. Trained tokens have ``labels == input_ids`` and ``assistant_masks == 1``;
every other token has ``labels == -100`` and ``assistant_masks == 0``.

Which column TRL reads: TRL >= 1.x's ``SFTTrainer`` keeps a ``labels`` column as it is,
and otherwise builds labels from ``assistant_masks`` (``completion_mask`` only with
``completion_only_loss``); its ``DataCollatorForLanguageModeling`` pads the labels it is
given. Both columns are written, so the loss is the same either way.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, MissingDependency
from evoforge.io.writers import JsonlWriter, RecordWriter

Row = dict[str, Any]
MASK_COLUMN = "assistant_masks"  # what the installed TRL's SFTTrainer folds into labels


def load_chat_tokenizer(
    spec: str | os.PathLike[str] | None = None, *, flag: str = "--tokenizer"
) -> Any:
    """A ``transformers`` tokenizer with a chat template, offline: the folder ``spec``,
    or (``None``) the embedded model's (its converted cache, else its GGUF file). Errors
    name ``flag``, the option the folder came from, in one line."""
    if spec is not None and not Path(spec).expanduser().is_dir():
        raise ConfigError(f"{flag} {str(spec)!r}: no such folder")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependency("transformers", "local") from None
    kwargs: dict[str, Any] = {"local_files_only": True}
    if spec is not None:
        folder = Path(spec).expanduser()
    else:
        from evoforge.llm.local import weights

        folder = weights.default_cache_dir() / weights.CACHE_SUBDIR
        if not (folder / "tokenizer.json").is_file():
            folder = weights._gguf_dir()
            kwargs["gguf_file"] = weights.GGUF_FILE
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ...
        why = " ".join(str(exc).split())  # transformers' messages span several lines
        raise ConfigError(
            f"{flag} {str(folder)!r}: cannot load a Hugging Face tokenizer from it ({why})"
        ) from None
    if not getattr(tokenizer, "is_fast", False) or not tokenizer.chat_template:
        raise ConfigError(
            f"{flag} {str(folder)!r}: needs a fast tokenizer (tokenizer.json) with a chat template"
        )
    return tokenizer


def _trained_ranges(record: Row, turns: list[dict[str, str]]) -> dict[int, list[tuple[int, int]]]:
    """Per assistant turn index: the trained character ranges of its content."""
    ranges: dict[int, list[tuple[int, int]]] = {}
    last = max(i for i, t in enumerate(turns) if t["role"] == "assistant")
    for index, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        if record["kind"] == "pam" and index == last:
            spans, previous_end = [], 0
            for segment in record["segments"]:
                if segment["trained"]:
                    spans.append((previous_end, segment["end"]))  # with the separator
                previous_end = segment["end"]
            ranges[index] = _merge(spans)
        else:
            ranges[index] = [(0, len(turn["content"]))]
    return ranges


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def tokenize_record(record: Row, tokenizer: Any) -> Row:
    """The ``tokens`` row of one record (see the module docstring)."""
    from evoforge.io.datasets import to_messages

    turns = to_messages(record)["messages"]
    text = tokenizer.apply_chat_template(turns, tokenize=False)
    ranges: list[tuple[int, int]] = []  # trained ranges in ``text``
    closers: list[int] = []  # where each trained assistant turn's content ends in ``text``
    for index, spans in _trained_ranges(record, turns).items():
        prefix = tokenizer.apply_chat_template(
            turns[:index], tokenize=False, add_generation_prompt=True
        )
        content = turns[index]["content"]
        if not text.startswith(prefix) or text[len(prefix) : len(prefix) + len(content)] != content:
            raise ConfigError(
                f"record {record['id']!r}: the tokenizer's chat template changes the "
                f"assistant turn's text, so its character spans cannot be mapped to tokens"
            )
        start = len(prefix)
        ranges.extend((start + a, start + b) for a, b in spans)
        if spans:
            closers.append(start + len(content))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    special = set(tokenizer.all_special_ids)
    mask = []
    for token_id, (start, end) in zip(ids, offsets, strict=True):
        inside = end > start and any(a <= start and end <= b for a, b in ranges)
        closes = token_id in special and start in closers
        mask.append(1 if inside or closes else 0)
    return {
        "id": record["id"],
        "input_ids": list(ids),
        "attention_mask": [1] * len(ids),
        "labels": [t if m else -100 for t, m in zip(ids, mask, strict=True)],
        MASK_COLUMN: mask,
    }


def token_writer(path: Path, tokenizer: Any) -> RecordWriter:
    """Writes :func:`tokenize_record` rows as JSONL, atomically."""
    return JsonlWriter(path, lambda record: tokenize_record(record, tokenizer))
