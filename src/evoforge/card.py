"""Dataset cards: a ``README.md`` in Hugging Face card format beside an export.

The YAML header carries what the Hub indexes (``license``, ``language``,
``task_categories``, ``size_categories``, ``tags`` with ``synthetic`` and
``evoforge``, and ``configs`` naming the data files, so ``load_dataset`` on the
folder or the Hub repository finds them). The body says how the data was made,
read from the run's manifest (``X.manifest.json`` beside ``X.jsonl``): the method,
the models, the prompt templates with their content hashes, the run seed, the
counts and the rejections by reason (from the manifest, else the rejects file).
What the manifest lacks is taken from the records' lineage.

``huggingface_hub.DatasetCard.load(path)`` parses the result.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from evoforge.errors import ConfigError, InputError
from evoforge.io.layout import output_paths
from evoforge.io.readers import iter_rows
from evoforge.io.writers import atomic_text

CARD_NAME = "README.md"
# The card's last line: a README.md without it is someone's own, never replaced.
CARD_MARK = "<!-- dataset card written by evoforge; rewritten by the next export here -->"

_TASKS = {
    "instruction": "text-generation",
    "in2": "text-generation",
    "qa": "question-answering",
    "rag": "question-answering",
}
_KIND_TAGS = {
    "instruction": ["instruction-tuning"],
    "in2": ["long-context", "in2"],
    "qa": ["rag"],
    "rag": ["rag", "rag-evaluation"],
}
_METHODS = {
    "answer": "answers written for instruction seeds by the model",
    "evolve": "Evol-Instruct (Xu et al., 2023; WizardLM) rounds on instruction seeds, "
    "optionally Evol-Quality (Liu et al., 2024; DEITA) on the answers, or Ragas-style "
    "question rewrites (reasoning, multi-context, conditional, conversational) of qa/rag seeds",
    "rag": "documents -> chunks -> knowledge graph -> seed questions -> Ragas-style rewrites "
    "-> critics (answerable, grounded): a RAG evaluation set with provenance",
    "in2": "IN2 training (An et al., 2024): questions that need one 128-token segment "
    "(fine-grained) or several (integration), placed at random positions in 4K-32K contexts",
    "select": "a selected subset (DEITA, AlpaGasus, LTD k-center or random)",
    "dedup": "exact, MinHash and semantic deduplication, one record kept per group",
}
_TAGS = {"evolve": ["evol-instruct"], "select": ["data-selection"]}


@dataclass
class CardStats:
    """Counts gathered while records stream past: kinds, sample types, models and the
    prompt templates (id -> content hash) named in their lineage."""

    count: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    models: Counter[str] = field(default_factory=Counter)
    prompts: dict[str, str] = field(default_factory=dict)
    skipped: Counter[str] = field(default_factory=Counter)  # left out of the export, by reason

    def add(self, record: dict[str, Any]) -> None:
        self.count += 1
        self.kinds[record["kind"]] += 1
        sample_type = record.get("sample_type") or record.get("synthesizer_name")
        if sample_type:
            self.types[str(sample_type)] += 1
        for step in record.get("lineage") or []:
            if step.get("model"):
                self.models[str(step["model"])] += 1
            if step.get("prompt_id"):
                self.prompts[step["prompt_id"]] = step.get("prompt_hash", "")


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` value for ``n`` rows."""
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
              (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
              (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]  # fmt: skip
    for bound, name in bounds:
        if n < bound:
            return name
    return "n>1B"


def read_manifest(source: Path | None) -> dict[str, Any]:
    """The manifest beside ``source`` (``X.manifest.json`` for ``X.jsonl``), or ``{}``."""
    if source is None:
        return {}
    path = output_paths(source)["manifest"]
    try:
        return json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}


def rejection_counts(source: Path | None, manifest: dict[str, Any]) -> dict[str, int] | None:
    """Rejections by reason: the manifest's (a run's or a selection's), else the rejects
    file's; ``None`` when neither exists."""
    counts = manifest.get("counts", {}).get("rejected_by_reason")
    if counts is None:
        counts = manifest.get("dropped_by_reason")
    if counts is not None:
        return dict(counts)
    if source is None:
        return None
    rejects = output_paths(source)["rejects"]
    if not rejects.is_file():
        return None
    found: Counter[str] = Counter()
    for item in iter_rows(rejects):  # a line a killed run left half-written is not counted
        if not isinstance(item, InputError):
            found[str(item[1].get("reason", "unknown"))] += 1
    return dict(found.most_common())


def _find_prompts(config: Any) -> dict[str, str]:
    """Every ``prompts`` mapping (template id -> hash) anywhere in a manifest's config."""
    found: dict[str, str] = {}
    if isinstance(config, dict):
        for key, value in config.items():
            if key == "prompts" and isinstance(value, dict):
                found.update({str(k): str(v) for k, v in value.items()})
            else:
                found.update(_find_prompts(value))
    return found


def _model_name(identity: Any) -> str:
    if isinstance(identity, dict):
        name = f"{identity.get('backend', '?')}:{identity.get('model', '?')}"
        return f"{name} @ {identity['base_url']}" if identity.get("base_url") else name
    return str(identity)


def card_text(
    *,
    data_files: dict[str, str],
    stats: CardStats,
    source: Path | None = None,
    fmt: str = "jsonl",
    consumer: str = "",
    license: str = "other",
    language: list[str] | None = None,
) -> str:
    """The card: YAML header + body. ``data_files`` maps config name -> file (pattern)
    relative to the card's folder."""
    manifest = read_manifest(source)
    command = str(manifest.get("command") or ("select" if "method" in manifest else ""))
    family = command.split("-")[0]
    kinds = sorted(stats.kinds)
    tags = ["synthetic", "evoforge", *_TAGS.get(family, [])]
    for kind in kinds:
        tags += [t for t in _KIND_TAGS.get(kind, []) if t not in tags]
    header: dict[str, Any] = {
        "license": license,
        "language": language or ["en"],
        "task_categories": sorted({_TASKS[k] for k in kinds if k in _TASKS}) or ["text-generation"],
        "size_categories": [size_category(stats.count)],
        "tags": tags,
        "configs": [
            {"config_name": name, "data_files": [{"split": "train", "path": path}]}
            for name, path in data_files.items()
        ],
    }
    name = source.stem if source is not None else "evoforge dataset"
    body = [f"# {name}", ""]
    body.append(
        f"Synthetic data made with [evoforge](https://github.com/evoforge/evoforge): "
        f"{stats.count} {' and '.join(kinds) or 'no'} records, exported as `{fmt}`"
        + (f" (for {consumer})." if consumer else ".")
    )
    body += ["", "## How it was made", ""]
    if manifest:
        method = _METHODS.get(family, "")
        body.append(f"- **Method**: `evoforge {command}`" + (f": {method}" if method else ""))
        if manifest.get("method"):
            body.append(f"- **Selection**: {manifest['method']}, budget {manifest.get('budget')}")
    else:
        body.append("- **Method**: unknown (no manifest beside the input)")
    models = [_model_name(manifest["model"])] if manifest.get("model") else []
    models += [m for m in stats.models if all(m not in known for known in models)]
    body.append(f"- **Models**: {', '.join(f'`{m}`' for m in models) or 'none recorded'}")
    seed = manifest.get("seed", manifest.get("settings", {}).get("seed"))
    body.append(f"- **Run seed**: {seed if seed is not None else 'not recorded'}")
    if manifest.get("evoforge_version"):
        body.append(f"- **evoforge**: {manifest['evoforge_version']}")
    if manifest.get("started_at"):
        body.append(f"- **Started**: {manifest['started_at']} ({manifest.get('status', '?')})")
    if source is not None:
        body.append(f"- **Source**: `{source.name}`")
    prompts = _find_prompts(manifest.get("config", {}))
    for tid, digest in stats.prompts.items():  # lineage names them "id@vN"
        if tid.split("@")[0] not in prompts:
            prompts[tid] = digest
    body += ["", "### Prompt templates", ""]
    if prompts:
        body += ["| template | content hash |", "|---|---|"]
        body += [f"| `{tid}` | `{digest}` |" for tid, digest in sorted(prompts.items())]
    else:
        body.append("No prompt templates recorded.")
    body += ["", "## Contents", "", "| | records |", "|---|---|", f"| all | {stats.count} |"]
    body += [f"| kind `{kind}` | {n} |" for kind, n in sorted(stats.kinds.items())]
    body += [f"| type `{kind}` | {n} |" for kind, n in sorted(stats.types.items())]
    body += [f"| left out: `{why}` | {n} |" for why, n in sorted(stats.skipped.items())]
    counts = manifest.get("counts", {})
    body += ["", "## Rejections", ""]
    rejected = rejection_counts(source, manifest)
    if rejected is None:
        body.append("Not recorded (no manifest or rejects file beside the input).")
    else:
        accepted = counts.get("accepted", manifest.get("selected"))
        total = sum(rejected.values())
        if accepted is not None:
            body.append(f"{accepted} records accepted, {total} rejected.")
        else:
            body.append(f"{total} records rejected.")
        if rejected:
            body += ["", "| reason | records |", "|---|---|"]
            body += [f"| `{reason}` | {n} |" for reason, n in rejected.items()]
    body += ["", "## Files", "", "| config | file |", "|---|---|"]
    body += [f"| {name} | `{path}` |" for name, path in data_files.items()]
    first = next(iter(data_files.values()))
    loader = (
        'load_from_disk(".")' if fmt == "hf-dir" else f'load_dataset("json", data_files="{first}")'
    )
    if fmt == "parquet":
        loader = f'load_dataset("parquet", data_files="{first}")'
    body += ["", "```python", f"from datasets import {loader.split('(')[0]}", "",
             f"ds = {loader}", "```", ""]  # fmt: skip
    body.append(CARD_MARK)
    head = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    return f"---\n{head}---\n\n" + "\n".join(body) + "\n"


def check_card_target(folder: Path) -> None:
    """Refuse to replace a ``README.md`` that evoforge did not write (a project's own)."""
    path = Path(folder) / CARD_NAME
    if path.is_file() and CARD_MARK not in path.read_text("utf-8", errors="replace"):
        raise ConfigError(
            f"{path} exists and is not an evoforge dataset card; export into a folder of "
            "its own (the card is README.md beside the export), or pass --no-card"
        )


def write_card(folder: Path, **kwargs: Any) -> Path:
    """Write :func:`card_text` to ``folder/README.md`` (atomically) and return its path."""
    check_card_target(folder)
    path = Path(folder) / CARD_NAME
    atomic_text(path, card_text(**kwargs))
    return path


def push_to_hub(
    folder: Path,
    repo_id: str,
    *,
    allow_patterns: list[str] | None = None,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Upload ``folder`` (only ``allow_patterns``, when given) to the Hub dataset
    repository ``repo_id``, creating it if needed. Needs network and a token
    (``HF_TOKEN`` or ``huggingface-cli login``); returns the commit URL."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", exist_ok=True, private=private)
    info = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=str(folder),
        allow_patterns=allow_patterns,
        commit_message="Upload an evoforge export",
    )
    return str(getattr(info, "commit_url", info))
