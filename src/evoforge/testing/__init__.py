"""Test helpers for evoforge (a scriptable fake OpenAI-compatible server)."""
