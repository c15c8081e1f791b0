"""Generators: turn a source (seed file, documents, corpus) into records, streaming."""
