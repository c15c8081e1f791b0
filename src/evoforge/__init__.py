"""evoforge: synthetic data generation for LLM training and evaluation.

The public surface (pinned by tests/test_public_api.py)::

    from evoforge import EngineOptions, answer, evolve, rag, in2, load_chat_model, Record
    from evoforge import orca2, pam   # training data: Orca 2 prompt erasure, PAM masking
    from evoforge import grow   # new instructions: Self-Instruct, back-translation, Magpie
    from evoforge import run_recipe, plan_recipe   # a whole pipeline from a YAML recipe
    from evoforge import dedup, select, export, to_dataset  # whole sets; Dataset in and out
    from evoforge import validate, open_run   # check records; a finished run as DataFrames
"""

from evoforge.api import (
    DedupResult,
    EngineOptions,
    EvolveOptions,
    GrowOptions,
    In2Options,
    Orca2Options,
    PamOptions,
    RagOptions,
    SelectOptions,
    answer,
    answer_async,
    dedup,
    evolve,
    evolve_async,
    grow,
    grow_async,
    in2,
    in2_async,
    orca2,
    orca2_async,
    pam,
    pam_async,
    rag,
    rag_async,
    run_task_async,
    select,
    select_async,
    validate,
)
from evoforge.engine.runner import RecordContext, Rejection, Result, RunSummary
from evoforge.errors import (
    ConfigError,
    EvoforgeError,
    InputError,
    LLMError,
    QuotaExhausted,
    RequestRejected,
    RunStopped,
    TransientError,
)
from evoforge.export import ExportResult, export, to_dataset
from evoforge.io.readers import read_records
from evoforge.llm.base import ChatModel, Completion, Usage
from evoforge.llm.spec import load_chat_model
from evoforge.prompting import PromptTemplate, builtin_template, load_template
from evoforge.recipe import plan_recipe, run_recipe
from evoforge.records import Record, schema_error, schema_for
from evoforge.report import write_report
from evoforge.run_view import open_run

__all__ = [
    "DedupResult",
    "ExportResult",
    "SelectOptions",
    "dedup",
    "export",
    "select",
    "select_async",
    "to_dataset",
    "ChatModel",
    "Completion",
    "ConfigError",
    "EngineOptions",
    "EvolveOptions",
    "GrowOptions",
    "In2Options",
    "RagOptions",
    "EvoforgeError",
    "InputError",
    "LLMError",
    "PromptTemplate",
    "QuotaExhausted",
    "Record",
    "RecordContext",
    "Rejection",
    "RequestRejected",
    "Result",
    "RunStopped",
    "RunSummary",
    "TransientError",
    "Usage",
    "answer",
    "answer_async",
    "builtin_template",
    "evolve",
    "evolve_async",
    "grow",
    "grow_async",
    "in2",
    "in2_async",
    "orca2",
    "orca2_async",
    "pam",
    "pam_async",
    "Orca2Options",
    "PamOptions",
    "rag",
    "rag_async",
    "load_chat_model",
    "load_template",
    "plan_recipe",
    "read_records",
    "run_recipe",
    "run_task_async",
    "schema_error",
    "schema_for",
    "write_report",
    "open_run",
    "validate",
]
