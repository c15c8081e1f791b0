"""``evoforge.options``: one home for every default and help text."""

from __future__ import annotations

import dataclasses

import pytest

from evoforge import ConfigError
from evoforge import options as opts
from evoforge.engine.client import Limits, RetryPolicy

CLASSES = [
    opts.EngineOptions, opts.EvolveOptions, opts.RagOptions, opts.In2Options,
    opts.SelectOptions, opts.DedupOptions, opts.ValidateOptions, opts.AnswerOptions,
    opts.ProbeOptions, opts.ExportOptions,
]  # fmt: skip


def test_the_public_names_are_the_options_classes():
    import evoforge.api

    for name in ("EngineOptions", "EvolveOptions", "RagOptions", "In2Options", "SelectOptions"):
        assert getattr(evoforge, name) is getattr(opts, name) is getattr(evoforge.api, name)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_field_has_its_help_text(cls):
    for item in dataclasses.fields(cls):
        assert item.metadata.get("help"), f"{cls.__name__}.{item.name} has no help text"


def test_unknown_engine_option_names_the_closest():
    with pytest.raises(ConfigError, match="unknown engine option 'concurency'; did you mean "
                       "'concurrency'"):  # fmt: skip
        opts.EngineOptions.from_dict({"concurency": 4})
    with pytest.raises(ConfigError, match="unknown engine option 'zzz'$"):
        opts.EngineOptions.from_dict({"zzz": 4})


def test_unknown_validate_setting_names_the_closest(tmp_path):
    from evoforge.commands.validate import validate

    with pytest.raises(ConfigError, match="did you mean 'checks'"):
        validate([{"id": "a", "kind": "qa"}], chekcs="schema")


def test_settings_are_checked_where_they_are_made():
    with pytest.raises(ConfigError, match="--kind 'instructions'.*did you mean 'instruction'"):
        opts.EvolveOptions(kind="instructions")
    with pytest.raises(ConfigError, match="--concurrency must be at least 1"):
        opts.EngineOptions(concurrency=0)
    with pytest.raises(ConfigError, match="shards must be at least 1"):
        opts.DedupOptions(shards=0)
    with pytest.raises(ConfigError, match="--n must be at least 1"):
        opts.RagOptions(n=0)


def test_the_engine_defaults_agree_with_the_engine():
    """The engine's own dataclasses (for callers that build a client by hand) read their
    defaults from EngineOptions; build_client passes every value explicitly anyway."""
    engine = opts.EngineOptions()
    limits, retry = Limits(), RetryPolicy()
    for name in ("concurrency", "rpm", "tpm", "max_calls", "max_tokens"):
        assert getattr(limits, name) == getattr(engine, name)
    assert retry.max_attempts == engine.max_attempts
    assert retry.backoff_base == engine.backoff_base
    assert retry.max_retry_after == engine.max_retry_wait
    assert retry.request_timeout == engine.timeout


def test_the_default_llm_is_the_spec_default():
    from evoforge.llm.spec import DEFAULT_SPEC

    assert opts.DEFAULT_LLM == DEFAULT_SPEC == opts.EngineOptions().llm


def test_api_defaults_read_from_options():
    import inspect

    from evoforge.commands.answer import answer_async
    from evoforge.commands.dedup import dedup

    signature = inspect.signature(dedup).parameters
    for item in dataclasses.fields(opts.DedupOptions):
        default = signature[item.name].default
        assert default == opts.default_of(item), item.name
    allow = inspect.signature(answer_async).parameters["allow_truncated"].default
    assert allow == opts.AnswerOptions.allow_truncated


def test_dict_defaults_are_not_shared():
    first, second = opts.EngineOptions(), opts.EngineOptions()
    first.llm_args["x"] = 1
    assert second.llm_args == {}
