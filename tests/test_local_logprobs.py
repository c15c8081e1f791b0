"""Token logprobs from the embedded SmolLM2 backend, read off the scores ``generate``
used (loads the real model: marked slow, like the other local-model tests)."""

from __future__ import annotations

import asyncio
import math

import pytest

from evoforge.llm.local import LocalChatModel

pytestmark = [pytest.mark.slow, pytest.mark.requires_local]

PROMPT = [{"role": "user", "content": "Rate the difficulty of 2 + 2 from 1 to 6. Reply: N"}]


def ask(**params):
    model = LocalChatModel()

    async def go():
        try:
            return await model.complete(PROMPT, max_tokens=6, temperature=0.0, **params)
        finally:
            await model.aclose()

    return asyncio.run(go())


def test_logprobs_come_with_the_tokens_only_when_asked():
    plain = ask()
    assert plain.logprobs is None
    scored = ask(logprobs=True, top_logprobs=5)
    assert scored.text == plain.text  # asking for logprobs does not change greedy decoding
    assert scored.logprobs and "".join(t.token for t in scored.logprobs).strip() == plain.text
    for entry in scored.logprobs:
        assert entry.logprob <= 0.0 and len(entry.top) <= 6
        # Greedy: the chosen token is the likeliest alternative.
        assert math.isclose(entry.logprob, max(entry.top.values()), abs_tol=1e-5)
        assert entry.top[entry.token] == entry.logprob
