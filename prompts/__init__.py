"""Prompt templates shipped with evoforge, one YAML file each (see ``evoforge.prompting``)."""
