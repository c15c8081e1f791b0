"""``python -m evoforge.cli``: the ``evoforge`` command."""

from evoforge.cli import main

main()
