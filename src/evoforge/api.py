"""The Python API: the command functions (``evoforge.commands``) and their options
(``evoforge.options``) under one roof. The CLI is thin over the same functions.

    from evoforge import EngineOptions, answer

    summary = answer("seeds.jsonl", "out/answers.jsonl",
                     options=EngineOptions(llm="openai:gpt-4o-mini", concurrency=64))
    print(summary.accepted, summary.rejected_by_reason)

``model=`` also takes a ChatModel or any LangChain ``BaseChatModel`` instance.
"""

from __future__ import annotations

from evoforge.commands.answer import answer, answer_async
from evoforge.commands.common import (
    Source,
    build_client,
    default_cache_dir,
    run_task_async,
    source_path,
    source_paths,
)
from evoforge.commands.common import engine_settings as _engine_settings
from evoforge.commands.common import prompt_hashes as _prompt_hashes
from evoforge.commands.dedup import (
    DEDUP_FIELDS,
    DedupResult,
    JsonlRows,
    dedup,
    dedup_fields,
    field_score,
    write_dedup,
)
from evoforge.commands.evolve import evolve, evolve_async
from evoforge.commands.grow import grow, grow_async
from evoforge.commands.in2 import in2, in2_async
from evoforge.commands.orca2 import orca2, orca2_async
from evoforge.commands.pam import pam, pam_async
from evoforge.commands.rag import rag, rag_async
from evoforge.commands.select import SCORERS, select, select_async
from evoforge.commands.validate import ValidateSummary, validate, validate_async
from evoforge.io.readers import read_evoforge_records as _read_evoforge_records
from evoforge.options import (
    DEFAULT_REWRITE_MIX,
    EVOLVE_KINDS,
    DedupOptions,
    EngineOptions,
    EvolveOptions,
    In2Options,
    RagOptions,
    SelectOptions,
    ValidateOptions,
)
from evoforge.options_grow import GROW_METHODS, GrowOptions
from evoforge.options_training import Orca2Options, PamOptions
from evoforge.run_view import RunView, open_run

__all__ = [
    "DEDUP_FIELDS",
    "DEFAULT_REWRITE_MIX",
    "EVOLVE_KINDS",
    "SCORERS",
    "DedupOptions",
    "DedupResult",
    "EngineOptions",
    "EvolveOptions",
    "GROW_METHODS",
    "GrowOptions",
    "In2Options",
    "JsonlRows",
    "Orca2Options",
    "PamOptions",
    "RunView",
    "RagOptions",
    "SelectOptions",
    "Source",
    "ValidateOptions",
    "ValidateSummary",
    "_engine_settings",
    "_prompt_hashes",
    "_read_evoforge_records",
    "answer",
    "answer_async",
    "build_client",
    "dedup",
    "dedup_fields",
    "default_cache_dir",
    "evolve",
    "evolve_async",
    "field_score",
    "grow",
    "grow_async",
    "in2",
    "in2_async",
    "orca2",
    "orca2_async",
    "pam",
    "pam_async",
    "open_run",
    "rag",
    "rag_async",
    "run_task_async",
    "select",
    "select_async",
    "source_path",
    "source_paths",
    "validate",
    "validate_async",
    "write_dedup",
]
