"""The langchain backend: any BaseChatModel, from Python or from the --llm spec."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from evoforge import ConfigError, EngineOptions, answer, load_chat_model
from evoforge.engine.client import LLMClient, RetryPolicy
from evoforge.errors import RequestRejected
from evoforge.llm.langchain_backend import LangChainChatModel
from helpers import read_jsonl, run_cli


def test_a_langchain_model_instance_answers_through_the_engine(seeds_file, tmp_path):
    model = FakeListChatModel(responses=["first answer", "second answer"])
    summary = answer(
        seeds_file(2), tmp_path / "o.jsonl", options=EngineOptions(concurrency=1, quiet=True),
        model=model,
    )  # fmt: skip
    assert summary.accepted == 2
    outputs = [r["output"] for r in read_jsonl(tmp_path / "o.jsonl")]
    assert outputs == ["first answer", "second answer"]
    manifest_model = read_jsonl(tmp_path / "o.jsonl")[0]["lineage"][0]["model"]
    assert manifest_model  # the model's name is in every record's lineage


def test_spec_builds_the_class_with_llm_args():
    model = load_chat_model(
        "langchain:langchain_core.language_models.fake_chat_models:FakeListChatModel",
        {"responses": ["hi"]},
    )
    assert isinstance(model, LangChainChatModel)
    assert model.identity["class"].endswith("FakeListChatModel")


def test_bad_spec_names_the_expected_form():
    with pytest.raises(ConfigError, match="langchain:package.module:ClassName"):
        load_chat_model("langchain:NoColonHere")


def test_missing_module_names_the_package_to_install():
    with pytest.raises(ConfigError, match="pip install langchain-anthropic"):
        load_chat_model("langchain:langchain_anthropic:ChatAnthropic")


def test_missing_class_is_named():
    with pytest.raises(ConfigError, match="has no class Nope"):
        load_chat_model("langchain:langchain_core.language_models.fake_chat_models:Nope")


def test_cli_with_langchain_spec(seeds_file, tmp_path):
    out = tmp_path / "o.jsonl"
    result = run_cli(
        "answer", "--seeds", str(seeds_file(1)), "--out", str(out), "--quiet",
        "--llm", "langchain:langchain_core.language_models.fake_chat_models:FakeListChatModel",
        "--llm-arg", 'responses=["from the cli"]',
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert read_jsonl(out)[0]["output"] == "from the cli"


class _Failing(FakeListChatModel):
    error: str = "status"

    async def _agenerate(self, *args, **kwargs):
        if self.error == "status":
            exc = RuntimeError("upstream said no")
            exc.status_code = 400
            raise exc
        raise ConnectionError("network down")


def test_provider_errors_are_classified():
    async def go(error):
        client = LLMClient(
            LangChainChatModel(_Failing(responses=["x"], error=error)),
            retry=RetryPolicy(backoff_base=0.01, max_attempts=2),
        )
        return await client.complete([{"role": "user", "content": "x"}], op="t")

    with pytest.raises(RequestRejected) as info:
        asyncio.run(go("status"))
    assert info.value.reason == "http_400"
    with pytest.raises(RequestRejected) as info:
        asyncio.run(go("connection"))
    assert info.value.reason == "retries_exhausted"
