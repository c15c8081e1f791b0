"""Validators: per-record checks returning a Verdict, and whole-set steps (dedup, selection)."""
