"""Evolvers: rewrite records through templated prompts (Evol-Instruct, Evol-Quality, Ragas)."""
