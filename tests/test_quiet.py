"""Other libraries draw no progress bars and print no chatter through evoforge's output:
transformers' "Loading weights" bars, huggingface_hub's and datasets' bars."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from evoforge.quiet import ENVIRONMENT, quiet_environment, quiet_loading


@pytest.mark.requires_local
def test_quiet_loading_restores_the_libraries_settings():
    from transformers.utils import logging as hf_logging

    hf_logging.enable_progress_bar()
    before = hf_logging.get_verbosity()
    with quiet_loading():
        assert not hf_logging.is_progress_bar_enabled()
        assert hf_logging.get_verbosity() == hf_logging.ERROR
    assert hf_logging.is_progress_bar_enabled()
    assert hf_logging.get_verbosity() == before


@pytest.mark.requires_local
def test_quiet_loading_silences_the_gguf_conversion_bar():
    from transformers import modeling_gguf_pytorch_utils as gguf

    original = gguf.tqdm
    with quiet_loading(gguf=True):
        assert gguf.tqdm is not original
        assert gguf.tqdm([1, 2], file=sys.stderr).disable
    assert gguf.tqdm is original


def test_quiet_environment_keeps_what_the_user_set(monkeypatch):
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")
    quiet_environment()
    assert os.environ["TRANSFORMERS_VERBOSITY"] == "info"
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"


@pytest.mark.slow
@pytest.mark.requires_local
def test_the_embedded_model_loads_without_third_party_bars(seeds_file, tmp_path):
    """One run of the CLI on the embedded model (one load: tens of seconds; the first on
    a machine also converts the GGUF): stderr carries nothing but evoforge's own lines."""
    env = {k: v for k, v in os.environ.items() if k not in ENVIRONMENT}
    result = subprocess.run(
        [sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds_file(1)),
         "--out", str(tmp_path / "o.jsonl"), "--llm", "local", "--max-output-tokens", "8",
         "--no-report"],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Loading weights" not in result.stderr
    assert "de-quantizing" not in result.stderr
    assert "it/s" not in result.stderr and "\r" not in result.stderr
    assert result.stderr == "", result.stderr
