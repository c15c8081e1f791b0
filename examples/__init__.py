"""Example inputs shipped with evoforge (used by ``evoforge demo`` and the README)."""
