"""The core suite on the other supported Pythons: `make test-pythons` (or `nox`).

The full suite (with the `local` extra: torch, transformers, trl, the embedded model) runs
on 3.11 under `make test`. Here each interpreter gets the core install only, in a venv
under .nox/ that is reused until pyproject.toml or this file changes; the tests marked
`requires_local` skip themselves (tests/conftest.py).

The venvs are made and filled by uv (the `dev` extra brings it) when it is there: a fresh
lane installs in seconds from uv's cache, where pip's resolver took minutes per lane.
Without uv, nox falls back to virtualenv and pip. The interpreters come from PATH (the
Makefile puts pyenv's there); none is ever downloaded.

The three lanes run at once (`nox -j 3`), each lane's output printed as one block when
it ends, with its time; `nox -j 1` runs them one after another. A lane keeps about one
core busy (about 490 CPU-seconds each), so on a 2-core machine all three at once end
sooner than two and then one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nox

nox.options.sessions = ["core"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True
nox.options.default_venv_backend = "uv|virtualenv"
nox.options.download_python = "never"
nox.options.parallel = 3  # the three PYTHONS

PYTHONS = ["3.10", "3.12", "3.13"]
# The `test` extra, not `dev`: dev's trl pulls transformers and torch (a CUDA build of
# several GB).
INSTALL = ["-e", ".[pdf,test]"]
LOCAL_ONLY = ("torch", "transformers", "trl", "sentence_transformers", "gguf", "accelerate")


def _install_key() -> str:
    digest = hashlib.sha256(Path("pyproject.toml").read_bytes())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()


@nox.session(python=PYTHONS, allow_parallel=True)
def core(session: nox.Session) -> None:
    """The suite without the `local` extra; `nox -s core -- ARGS` passes ARGS to pytest."""
    stamp = Path(session.virtualenv.location) / ".evoforge-installed"
    key = _install_key()
    if not (stamp.is_file() and stamp.read_text() == key):
        session.install("--quiet", *INSTALL)
        # Fail here rather than download torch unnoticed through some new dependency.
        session.run(
            "python",
            "-c",
            "import importlib.util, sys; bad = [m for m in sys.argv[1:]"
            " if importlib.util.find_spec(m)]; sys.exit(f'core lane has {bad}' if bad else 0)",
            *LOCAL_ONLY,
            silent=True,
        )
        stamp.write_text(key)
    session.run(
        "python",
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *session.posargs,
        env={"HF_HUB_OFFLINE": "1", "EVOFORGE_REQUIRE_LOCAL": "0"},
    )
