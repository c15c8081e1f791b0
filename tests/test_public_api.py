"""The public surface is small and deliberate; this pins it."""

from __future__ import annotations

import json

import evoforge
from evoforge import EngineOptions, answer
from evoforge.testing.scripted import ScriptedChatModel

PUBLIC = {
    "ChatModel", "Completion", "ConfigError", "EngineOptions", "EvoforgeError", "InputError",
    "EvolveOptions", "In2Options", "RagOptions", "evolve", "evolve_async", "in2", "in2_async",
    "rag", "rag_async",
    "LLMError", "PromptTemplate", "QuotaExhausted", "Record", "RecordContext", "Rejection",
    "RequestRejected", "Result", "RunStopped", "RunSummary", "TransientError", "Usage",
    "answer", "answer_async", "builtin_template", "load_chat_model", "load_template",
    "read_records", "run_task_async", "schema_error", "schema_for",
    "dedup", "DedupResult", "select", "select_async", "SelectOptions", "export", "ExportResult",
    "to_dataset",
    "run_recipe", "plan_recipe",
    "write_report",
    "grow", "grow_async", "GrowOptions",
    "open_run", "validate",
    "orca2", "orca2_async", "pam", "pam_async", "Orca2Options", "PamOptions",
}  # fmt: skip


def test_public_names_are_pinned():
    assert set(evoforge.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(evoforge, name) is not None


def test_card_folders_live_in_the_evoforge_namespace():
    import evoforge.evolvers
    import evoforge.generators
    import evoforge.prompts
    import evoforge.validators

    assert evoforge.generators.__name__ == "evoforge.generators"
    for module in (evoforge.evolvers, evoforge.prompts, evoforge.validators):
        assert module.__name__.startswith("evoforge.")


def test_credentials_never_reach_the_manifest(seeds_file, tmp_path):
    options = EngineOptions(llm_args={"api_key": "sk-secret", "temperature": 0.1}, quiet=True)
    summary = answer(
        seeds_file(1), tmp_path / "o.jsonl", options=options, model=ScriptedChatModel("ok")
    )
    manifest = json.loads(summary.manifest.read_text())
    assert manifest["engine"]["llm_args"] == {"api_key": "***", "temperature": 0.1}
    assert "sk-secret" not in summary.manifest.read_text()
