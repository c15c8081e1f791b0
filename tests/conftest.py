"""Shared fixtures. Everything is offline: servers bind 127.0.0.1 and stop by themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from evoforge.testing.fake_openai import FakeOpenAI
from helpers import write_jsonl


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own response cache, so no test sees another's answers."""
    monkeypatch.setenv("EVOFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def fake_openai():
    """An OpenAI-compatible server on 127.0.0.1, scriptable per test."""
    with FakeOpenAI(max_seconds=300) as server:
        yield server


@pytest.fixture
def seeds_file(tmp_path):
    def make(n: int, name: str = "seeds.jsonl") -> Path:
        rows = [{"id": f"q{i:03d}", "instruction": f"Question number {i}?"} for i in range(n)]
        return write_jsonl(tmp_path / name, rows)

    return make
