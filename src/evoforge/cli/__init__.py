"""The ``evoforge`` command line. Each command is a thin shell over its module in
:mod:`evoforge.commands`; its flags come from :mod:`evoforge.options`.

Exit codes: 0 done; 1 ``validate`` found invalid records; 2 bad input, flag or
config (the message names the file, line and field); 3 the run stopped early
(budget, long Retry-After) and a re-run resumes; 4 out of quota (a re-run
resumes); 130 interrupted.

Every command takes ``-q/--quiet``, ``--json`` (its summary as JSON on stdout) and,
where it writes outputs a report reads, ``--out`` and ``--no-report``.
"""

from __future__ import annotations

import sys

from evoforge.cli.app import app, probe_app
from evoforge.quiet import quiet_environment

# Importing a module registers its commands, in the order `evoforge --help` lists them.
# isort: off
from evoforge.cli import generate, methods, sets, demo, run, tools
# isort: on

__all__ = ["app", "main", "probe_app"]
_COMMANDS = (generate, methods, sets, demo, run, tools)


def main() -> None:
    quiet_environment()  # other libraries' bars and warnings off (a user's setting wins)
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
