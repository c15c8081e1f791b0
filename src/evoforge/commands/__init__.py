"""The commands: one module each, composing steps. The CLI (``evoforge.cli``) and the
Python API (``evoforge.api``) are both thin over them."""
