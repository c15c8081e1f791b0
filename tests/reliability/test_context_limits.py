"""Context limits before any spend (issue 15, item 3): a prompt whose estimated tokens
plus its output tokens exceed the model's context window is rejected ``too_long`` and
never sent. The window: ``--context-window``, else the server's ``/v1/models``, else
``models.yaml``; an unknown model is not checked. A provider's own 400
``context_length_exceeded`` keeps its reason."""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
import string
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.testing.fake_openai import FakeOpenAI, Reply
from helpers import rag_responder, read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability

TOO_LONG = re.compile(r"^prompt ≈(\d+) tokens \+ 512 output > window (\d+); not sent \((.+)\)$")


def answer(server, seeds: Path, out: Path, *extra: str, model: str = "fake-model"):
    llm = f"openai:{model}@{server.base_url}"
    args = ["answer", "--seeds", str(seeds), "--out", str(out), "--llm", llm, "-q", "--no-cache"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert "Traceback" not in result.output
    return result


def seeds_with(tmp_path: Path, words: int) -> Path:
    """Two seeds: ``big`` of ``words`` words, and a short one."""
    rows = [
        {"id": "big", "instruction": "Summarise this. " + "word " * words},
        {"id": "small", "instruction": "What is a context window?"},
    ]
    return write_jsonl(tmp_path / "seeds.jsonl", rows)


def outcome(out: Path) -> tuple[list[str], dict[str, dict]]:
    kept = [r["id"] for r in read_jsonl(out)]
    rejects = {r["id"]: r for r in read_jsonl(out.with_name(out.stem + ".rejects.jsonl"))}
    return kept, rejects


def sent_sizes(server) -> list[int]:
    return [len(json.dumps(request.messages)) for request in server.requests]


def test_the_issues_case_a_huge_instruction_to_a_known_model_is_not_sent(fake_openai, tmp_path):
    """100,000 words to gpt-4o-mini (128,000 tokens in models.yaml): the issue saw a
    3-million-word request of 3.9M prompt tokens go out. Now it is rejected before the
    call."""
    seeds = seeds_with(tmp_path, 100_000)
    out = tmp_path / "o.jsonl"
    result = answer(fake_openai, seeds, out, model="gpt-4o-mini")
    assert result.exit_code == 0, result.output
    kept, rejects = outcome(out)
    assert kept == ["small"] and set(rejects) == {"big"}
    assert rejects["big"]["reason"] == "too_long"
    match = TOO_LONG.match(rejects["big"]["detail"])
    assert match, rejects["big"]["detail"]
    assert int(match.group(1)) > 150_000 and match.group(2) == "128000"
    assert match.group(3) == "gpt-4o-mini, from models.yaml: gpt-4o-mini"
    assert fake_openai.hits == 1 and max(sent_sizes(fake_openai)) < 2_000


def test_context_window_flag_rejects_before_the_call(fake_openai, tmp_path):
    seeds = seeds_with(tmp_path, 3_000)  # 15 KB: ≈5,000 tokens by ceil(bytes / 3)
    out = tmp_path / "o.jsonl"
    result = answer(fake_openai, seeds, out, "--context-window", "4000")
    assert result.exit_code == 0, result.output
    kept, rejects = outcome(out)
    assert kept == ["small"] and rejects["big"]["reason"] == "too_long"
    match = TOO_LONG.match(rejects["big"]["detail"])
    assert match and match.group(2) == "4000", rejects["big"]["detail"]
    assert match.group(3) == "fake-model, from --context-window"
    assert fake_openai.hits == 1
    manifest = json.loads((tmp_path / "o.manifest.json").read_text())
    assert manifest["counts"]["rejected_by_reason"] == {"too_long": 1}
    assert manifest["engine"]["context_window"] == 4000
    # A window the prompt fits: it is sent.
    again = answer(fake_openai, seeds, tmp_path / "p.jsonl", "--context-window", "9000")
    assert again.exit_code == 0 and outcome(tmp_path / "p.jsonl")[0] == ["big", "small"]


def test_the_window_comes_from_the_servers_models_list(tmp_path):
    """vLLM lists ``max_model_len`` in GET /v1/models; that window applies, before the
    table, and ``--context-window`` comes before both."""
    seeds = seeds_with(tmp_path, 3_000)
    fields = {"fake-model": {"max_model_len": 4096}}
    with FakeOpenAI(max_seconds=120, model_fields=fields) as server:
        result = answer(server, seeds, tmp_path / "o.jsonl")
        assert result.exit_code == 0, result.output
        kept, rejects = outcome(tmp_path / "o.jsonl")
        assert kept == ["small"]
        match = TOO_LONG.match(rejects["big"]["detail"])
        assert match and match.group(2) == "4096", rejects["big"]["detail"]
        assert match.group(3) == "fake-model, from the server's /models"
        assert server.hits == 1 and server.hits_by_path["/v1/models"] == 1
        flag = answer(server, seeds, tmp_path / "p.jsonl", "--context-window", "16000")
        assert flag.exit_code == 0 and outcome(tmp_path / "p.jsonl")[0] == ["big", "small"]


def test_an_unknown_model_is_not_checked(fake_openai, tmp_path):
    seeds = seeds_with(tmp_path, 3_000)
    result = answer(fake_openai, seeds, tmp_path / "o.jsonl")
    assert result.exit_code == 0, result.output
    assert outcome(tmp_path / "o.jsonl") == (["big", "small"], {})


def test_a_providers_context_length_exceeded_keeps_its_reason(fake_openai, tmp_path):
    """The provider part: its 400 ``context_length_exceeded`` is a rejection without a
    retry, with that reason, as before (the estimate can be under the truth)."""
    seeds = seeds_with(tmp_path, 10)
    fake_openai.responder = lambda request: (
        Reply.context_length_exceeded() if "Summarise" in request.last_user else None
    )
    result = answer(fake_openai, seeds, tmp_path / "o.jsonl", "--max-attempts", "3")
    assert result.exit_code == 0, result.output
    kept, rejects = outcome(tmp_path / "o.jsonl")
    assert kept == ["small"] and rejects["big"]["reason"] == "context_length_exceeded"
    assert fake_openai.hits == 2  # no retry


def test_a_dry_run_plan_counts_no_call_for_a_prompt_over_the_window(tmp_path):
    seeds = seeds_with(tmp_path, 30_000)  # ≈50,000 tokens, over gpt-4's 8,192
    args = ["answer", "--seeds", str(seeds), "--out", str(tmp_path / "o.jsonl"), "--dry-run"]
    result = CliRunner().invoke(app, [*args, "--llm", "openai:gpt-4@http://127.0.0.1:9/v1"])
    assert result.exit_code == 0, result.output
    assert "1 records kept, 1 rejected" in result.output
    assert re.search(r"answer\s+1\s+", result.output)


def test_estimate_is_ceil_bytes_over_three_and_the_tokenizer_is_used_only_when_needed():
    from evoforge.engine.context_window import ContextLimit, estimate_tokens

    messages = [{"role": "system", "content": "abcd"}, {"role": "user", "content": "é" * 5}]
    assert estimate_tokens(messages) == math.ceil(4 / 3) + 4 + math.ceil(10 / 3) + 4

    class Model:
        identity = {"backend": "x", "model": "gpt-4"}

    counted: list[int] = []

    def tokenizer():
        def count(msgs):
            counted.append(len(msgs))
            return 9_000

        return count

    limit = ContextLimit(Model(), tokenizer=tokenizer)
    short = [{"role": "user", "content": "x" * 100}]
    asyncio.run(limit.check(short, {"max_tokens": 512}))  # fits by bytes: not tokenized
    assert counted == [] and limit.window == 8192 and limit.source == "models.yaml: gpt-4"
    long = [{"role": "user", "content": "x" * 20_000}]  # bytes say maybe; the tokenizer says no
    with pytest.raises(Exception, match="prompt ≈9000 tokens") as raised:
        asyncio.run(limit.check(long, {"max_tokens": 512}))
    assert raised.value.reason == "too_long" and counted == [1]


def test_models_yaml_gives_window_date_and_source_for_every_model():
    from evoforge.llm.models_table import load_table, lookup, window_from_models_list

    table = load_table()
    assert len(table) >= 40
    for facts in table.values():
        assert facts.context_window and facts.context_window >= 2048, facts.name
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", facts.date), facts.name
        assert facts.source.strip(), facts.name
    expected = {
        "gpt-4o-mini-2024-07-18": 128_000,
        "gpt-4o": 128_000,
        "openai/gpt-4o": 128_000,
        "gpt-4-0613": 8_192,
        "claude-3-5-sonnet-20241022": 200_000,
        "deepseek-chat": 128_000,
        "meta-llama/Llama-3.1-8B-Instruct": 131_072,
        "meta-llama/Meta-Llama-3-8B-Instruct": 8_192,
        "llama3.1:8b": 131_072,
        "Qwen/Qwen2.5-0.5B-Instruct": 32_768,
        "mistralai/Mistral-7B-Instruct-v0.3": 32_768,
        "google/gemma-2-9b-it": 8_192,
        "HuggingFaceTB/SmolLM2-135M-Instruct": 8_192,
        "SmolLM2-135M-Instruct-Q4_1": 8_192,  # the embedded model's name
    }
    for name, window in expected.items():
        facts = lookup(name)
        assert facts is not None and facts.context_window == window, name
    assert lookup("gpt-4.5-preview") is None  # "gpt-4" is a prefix only at a -:@_ boundary
    assert lookup("fake-model") is None
    body = {"data": [{"id": "m", "max_model_len": 4096}, {"id": "n", "context_length": 9}]}
    assert window_from_models_list(body, "m") == 4096
    assert window_from_models_list(body, "n") == 9
    assert window_from_models_list(body, "other") is None


def test_rag_sends_chunks_of_a_huge_document_never_the_whole(fake_openai, tmp_path):
    """A 320 KB document (≈100,000 tokens) with no line breaks: ``rag`` chunks it; no
    request comes near a 4,096-token window and none is rejected as too long."""
    docs = tmp_path / "docs"
    docs.mkdir()
    rng = random.Random(3)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(7)) for _ in range(5000)]
    sentences = [
        f"The {rng.choice(words).title()} {' '.join(rng.sample(words, 9))}." for _ in range(4_000)
    ]
    (docs / "huge.txt").write_text(" ".join(sentences))
    fake_openai.responder = lambda request: rag_responder(request.messages, request.n)
    out = tmp_path / "eval.jsonl"
    args = ["rag", "--docs", str(docs), "--n", "3", "--out", str(out), "--embedder", "hashing"]
    llm = f"openai:fake-model@{fake_openai.base_url}"
    result = CliRunner().invoke(app, [*args, "--llm", llm, "-q", "--context-window", "4096"])
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out)) == 3
    assert all(r["reason"] != "too_long" for r in read_jsonl(tmp_path / "eval.rejects.jsonl"))
    assert fake_openai.hits > 0 and max(sent_sizes(fake_openai)) < 3 * (4096 - 512)


def test_in2_sends_segments_of_a_huge_document_never_the_whole(fake_openai, tmp_path):
    from test_in2 import in2_responder

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for d in range(3):
        sentences = [
            f"The comet number {d}{i} has feature {i} named Orbit{i % 89}." for i in range(8_000)
        ]
        (corpus / f"doc{d}.txt").write_text(" ".join(sentences))
    fake_openai.responder = lambda request: in2_responder(request.messages, request.n)
    out = tmp_path / "in2.jsonl"
    args = ["in2", "--corpus", str(corpus), "--n", "4", "--out", str(out), "--tokenizer", "regex"]
    llm = f"openai:fake-model@{fake_openai.base_url}"
    sizes = ["--min-tokens", "300", "--max-tokens", "900", "--segment-tokens", "64"]
    result = CliRunner().invoke(
        app, [*args, *sizes, "--llm", llm, "-q", "--context-window", "2048"]
    )
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out)) == 4
    assert fake_openai.hits > 0 and max(sent_sizes(fake_openai)) < 3 * (2048 - 512)


def test_a_recipe_sets_the_context_window(tmp_path):
    from evoforge.recipe import load_recipe

    write_jsonl(tmp_path / "seeds.jsonl", [{"id": "a", "instruction": "Hi?"}])
    (tmp_path / "r.yaml").write_text(
        "llm: {spec: local}\nsource: {seeds: seeds.jsonl}\n"
        "generator: {type: evolve, rounds: 1}\nengine: {context_window: 4096}\n"
    )
    recipe = load_recipe(tmp_path / "r.yaml")
    assert recipe.engine == {"context_window": 4096}
    assert recipe.engine_options(max_calls=None, max_tokens=None).context_window == 4096


@pytest.mark.slow
@pytest.mark.requires_local
def test_the_local_backend_counts_prompt_tokens_with_the_embedded_tokenizer():
    """``--llm local``: the estimate is the embedded model's tokenizer with its chat
    template (exact), against SmolLM2's 8,192 from models.yaml."""
    from evoforge import EngineOptions
    from evoforge.commands.common import build_client
    from evoforge.io.tokens import load_chat_tokenizer

    tokenizer = load_chat_tokenizer(None)
    messages = [{"role": "user", "content": "The quick brown fox jumps. " * 1_500}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    exact = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    assert 8_000 < exact < 10_000
    client = build_client(EngineOptions(llm="local", cache=False))
    with pytest.raises(Exception, match=f"prompt ≈{exact} tokens \\+ 512 output > window 8192"):
        asyncio.run(client.context.check(messages, client.params))
    assert estimate_bytes(messages) != exact  # the count is the tokenizer's, not the rule's
    asyncio.run(client.context.check([{"role": "user", "content": "Hi"}], client.params))


def estimate_bytes(messages):
    from evoforge.engine.context_window import estimate_tokens

    return estimate_tokens(messages)


@pytest.mark.requires_local
def test_a_tokenizer_folder_counts_the_prompt_for_any_backend(fake_openai, tmp_path):
    """``--context-tokenizer DIR`` counts with that tokenizer and its chat template: the
    3,000-word prompt is ≈5,000 tokens by ceil(bytes / 3), over a 4,500 window, but about
    3,000 by a word-level tokenizer, so it is sent; a folder with no tokenizer is exit 2."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel({"[UNK]": 0, "<eos>": 1, "word": 2}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>", unk_token="[UNK]")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>{% endif %}"
    )
    folder = tmp_path / "tok"
    tokenizer.save_pretrained(str(folder))
    seeds = seeds_with(tmp_path, 3_000)

    by_bytes = answer(fake_openai, seeds, tmp_path / "b.jsonl", "--context-window", "4500")
    assert by_bytes.exit_code == 0 and outcome(tmp_path / "b.jsonl")[1]["big"]["reason"] == (
        "too_long"
    )
    counted = answer(
        fake_openai, seeds, tmp_path / "t.jsonl",
        "--context-window", "4500", "--context-tokenizer", str(folder),
    )  # fmt: skip
    assert counted.exit_code == 0, counted.output
    assert outcome(tmp_path / "t.jsonl") == (["big", "small"], {})

    (tmp_path / "empty").mkdir()
    bad = answer(
        fake_openai, seeds, tmp_path / "x.jsonl", "--context-tokenizer", str(tmp_path / "empty")
    )
    assert bad.exit_code == 2 and len(bad.output.strip().splitlines()) == 1, bad.output
    assert "--context-tokenizer" in bad.output and "empty" in bad.output
