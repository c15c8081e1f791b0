"""Secrets never reach an artifact; templates cannot escape the sandbox; outputs stay
where they were asked to go."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from evoforge import ConfigError
from evoforge.errors import redact
from evoforge.prompting import parse_template
from evoforge.testing.fake_openai import Reply
from helpers import read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability

KEY = "sk-evoforge-SENTINEL-KEY-5f3a9c0d1e"
PASSWORD = "PW-SENTINEL-7b1d"


def every_file(*roots: Path) -> list[Path]:
    return [p for root in roots for p in root.rglob("*") if p.is_file()]


def test_a_run_with_a_sentinel_key_and_url_password_leaks_neither(fake_openai, tmp_path):
    """The key (environment and --llm-arg) and the password in the base URL appear in no
    output, rejects, manifest, journal, cache, report, stdout or stderr, even when the
    server's error message quotes the key."""
    echo = f"Incorrect API key provided: {KEY}. Bearer {KEY}"
    fake_openai.responder = lambda r: Reply.fail(401, echo) if r.last_user == "Seed 1" else None
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl", [{"id": f"s{i}", "instruction": f"Seed {i}"} for i in range(4)]
    )
    work = tmp_path / "work"
    cache = tmp_path / "cache"
    url = fake_openai.base_url.replace("http://", f"http://alice:{PASSWORD}@")
    args = [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds),
        "--out", str(work / "out.jsonl"), "--llm", f"openai:fake-model@{url}",
        "--llm-arg", f"api_key={KEY}", "--cache-dir", str(cache), "--max-attempts", "1",
    ]  # fmt: skip
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    # The key did reach the server (it is used), and the run did its work.
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert len(read_jsonl(work / "out.jsonl")) == 3
    (rejection,) = read_jsonl(work / "out.rejects.jsonl")
    assert rejection["reason"] == "http_401" and "sk-***" in rejection["detail"]
    artifacts = every_file(work, cache)
    names = {p.name for p in artifacts}
    assert {"out.jsonl", "out.rejects.jsonl", "out.manifest.json", "llm-cache.db"} <= names
    assert any(name.startswith("out.journal.db") for name in names)
    texts = {str(p): p.read_bytes() for p in artifacts}
    texts["stdout"] = result.stdout.encode()
    texts["stderr"] = result.stderr.encode()
    for where, data in texts.items():
        assert KEY.encode() not in data, f"the API key leaked into {where}"
        assert PASSWORD.encode() not in data, f"the URL password leaked into {where}"
    manifest = json.loads((work / "out.manifest.json").read_text())
    # The URL's credentials are taken off it before it goes anywhere; argv is masked.
    assert manifest["model"]["base_url"] == fake_openai.base_url
    assert any("alice:***@127.0.0.1" in arg for arg in manifest["argv"])
    assert any(arg == "api_key=***" for arg in manifest["argv"])


def test_a_url_password_is_the_key_when_no_key_is_given(fake_openai, tmp_path):
    from evoforge import EngineOptions, answer

    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": "a", "instruction": "Hi?"}])
    url = fake_openai.base_url.replace("http://", f"http://alice:{PASSWORD}@")
    options = EngineOptions(llm=f"openai:m@{url}", quiet=True)
    assert answer(seeds, tmp_path / "out.jsonl", options=options).accepted == 1
    assert fake_openai.requests[0].headers["Authorization"] == f"Bearer {PASSWORD}"
    assert PASSWORD not in (tmp_path / "out.manifest.json").read_text()


def test_exception_messages_are_redacted():
    message = f"POST http://bob:{PASSWORD}@h/v1 failed; api_key={KEY}; Authorization: Bearer x1"
    cleaned = redact(message)
    assert PASSWORD not in cleaned and KEY not in cleaned and "x1" not in cleaned
    assert "http://bob:***@h/v1" in cleaned
    # Token counts and ordinary words are left alone.
    assert redact('{"max_tokens": 512, "prompt_tokens": 3} monkey=1') == (
        '{"max_tokens": 512, "prompt_tokens": 3} monkey=1'
    )


MALICIOUS = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('touch PWNED').read() }}",
    "{{ lipsum.__globals__['os'].popen('touch PWNED').read() }}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}{{ os.system('touch PWNED') }}",
    "{{ self._TemplateReference__context }}",
    "{{ namespace.__init__.__globals__ }}",
    "{% set x = [1] %}{{ x.append(2) }}",
    "{{ text|attr('__class__') }}",
    "{{ range(10**9)|list|length }}",
    "{{ 'a' * 10**9 }}",
]


@pytest.mark.parametrize("content", MALICIOUS)
def test_a_malicious_template_cannot_read_files_or_run_code(tmp_path, monkeypatch, content):
    """Each attempt is a ConfigError naming the template, never a file read, a command
    run or a memory bomb."""
    monkeypatch.chdir(tmp_path)
    if "text" not in content:
        content += " {{ text }}"
    source = yaml.safe_dump(
        {"id": "evil", "variables": ["text"], "messages": [{"role": "user", "content": content}]}
    )
    with pytest.raises(ConfigError, match="evil") as info:
        parse_template(source, source="evil.yaml").render(text="x")
    assert "root:" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_record_ids_with_dot_dot_and_symlinked_outputs_stay_in_place(fake_openai, tmp_path):
    """Ids such as ../../x are data, never file names; an output path that is a symlink
    to a file elsewhere is replaced, and the file it pointed to is left untouched."""
    from evoforge import EngineOptions, answer

    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("do not touch")
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    (work / "out.manifest.json").symlink_to(victim)
    (work / "out.rejects.jsonl").symlink_to(victim)
    ids = ["../../../outside/evil", "/etc/evil", "..", "a/../../b"]
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl", [{"id": i, "instruction": f"Q {n}"} for n, i in enumerate(ids)]
    )
    before = set(every_file(tmp_path))
    options = EngineOptions(llm=f"openai:m@{fake_openai.base_url}", quiet=True)
    summary = answer(seeds, work / "out.jsonl", options=options)
    assert summary.accepted == 4
    assert [r["id"] for r in read_jsonl(work / "out.jsonl")] == ids
    assert victim.read_text() == "do not touch"
    assert not (work / "out.manifest.json").is_symlink()
    new = set(every_file(tmp_path)) - before
    assert new and all(work in p.parents for p in new), sorted(map(str, new))


def test_an_error_about_a_url_with_a_password_does_not_print_it(tmp_path):
    from typer.testing import CliRunner

    from evoforge.cli import app

    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": "a", "instruction": "Hi?"}])
    result = CliRunner().invoke(
        app,
        ["answer", "--seeds", str(seeds), "--out", str(tmp_path / "o.jsonl"),
         "--llm", f"openai:m@ftp://alice:{PASSWORD}@127.0.0.1/v1"],
    )  # fmt: skip
    assert result.exit_code == 2
    assert "must start with http(s)://" in result.output
    assert PASSWORD not in result.output and "alice:***@" in result.output
