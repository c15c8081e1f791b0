"""A RAG scenario: ``yes_no`` rewrites a seed question into one answered by yes or no.

Ragas' test-set evolutions (v0.1) rewrite a seed question per scenario; a closed
question tests whether a RAG system commits to an answer the context supports.
The rewrite is a prompt (``rewrite_yes_no.yaml``, beside this file) run by
``QuestionRewrite`` with every check of the built-in rewrites (no context
reference, no prompt leak, same language, at most ``max_words`` words). Register
it, then plan it like a built-in scenario::

    from evoforge.registry import register
    register("evolver", "yes_no", YES_NO)

    evoforge.rag(["docs/"], "eval.jsonl", rag=RagOptions(n=50, mix="simple=0.5,yes_no=0.5"))

The same op rewrites existing qa/rag samples: ``evoforge evolve --kind qa --mix yes_no=1``.
"""

from __future__ import annotations

from pathlib import Path

from evoforge.evolvers.ragas_rewrites import RewriteOp

YES_NO = RewriteOp("yes_no", max_words=20, template=Path(__file__).with_name("rewrite_yes_no.yaml"))
