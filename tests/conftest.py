"""Shared fixtures. Everything is offline: servers bind 127.0.0.1 and stop by themselves."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from evoforge.testing.fake_openai import FakeOpenAI
from helpers import write_jsonl

# The `local` extra (and trl, from `dev`). `make test-pythons` runs the suite without them
# on 3.10, 3.12 and 3.13, where the tests marked `requires_local` skip; `make test` (3.11)
# sets EVOFORGE_REQUIRE_LOCAL=1, so there a missing one fails the run instead.
LOCAL_MODULES = ("torch", "transformers", "trl", "sentence_transformers", "gguf", "accelerate")


def _missing_local() -> list[str]:
    return [name for name in LOCAL_MODULES if importlib.util.find_spec(name) is None]


def pytest_configure(config):
    missing = _missing_local()
    if missing and os.environ.get("EVOFORGE_REQUIRE_LOCAL") == "1":
        raise pytest.UsageError(
            f"EVOFORGE_REQUIRE_LOCAL=1 but {', '.join(missing)} not installed "
            "(pip install -e '.[local,dev]')"
        )


def pytest_collection_modifyitems(config, items):
    missing = _missing_local()
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs the local extra ({', '.join(missing)} missing)")
    for item in items:
        if "requires_local" in item.keywords:
            item.add_marker(skip)


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
