"""A simulated provider prefix cache for the fake OpenAI server (issue 19, part 2).

OpenAI, DeepSeek, vLLM and SGLang keep the KV cache of prompts they have seen and
reuse it when a new prompt starts with the same tokens. OpenAI bills the reused
part at a discount and reports it as ``usage.prompt_tokens_details.cached_tokens``
by this rule: the longest prefix shared with an earlier prompt counts once it
reaches 1,024 tokens, in increments of 128 tokens (below 1,024 nothing is cached).

:class:`PrefixCache` applies that rule to the prompts the fake server sees, so a
run's cached share can be measured offline. It is off unless asked for
(``FakeOpenAI(prefix_cache=True)`` or ``python -m evoforge.testing.fake_openai
--prefix-cache``); without it the server's replies stay byte-identical.

The tokenizer is the fake server's own: whitespace-separated words of each
message's text (:func:`evoforge.llm.counting.prompt_tokens` counts the same words,
so ``cached_tokens <= prompt_tokens`` always holds), messages in order. Each word
is tagged with its message's role, as a real chat template puts role markers
between messages: the same words in a system message and in a user message are
different tokens. Prompts are cut into 128-token blocks, each identified by a
hash chained over every block before it; the number of leading blocks already
seen is the shared prefix rounded down to 128, exactly as a trie would give it.
Memory grows by one hash per 128 prompt tokens. By default the cache never evicts
(a provider evicts after minutes of disuse, which a short offline run never
reaches). ``capacity_tokens`` bounds it, as a self-hosted server's KV-cache memory
(vLLM, SGLang) or a busy provider's is bounded: past the capacity the least
recently used blocks go first, and of one prompt's blocks its last ones go first
(a prefix is evicted from its end, as vLLM frees a sequence's blocks). Under a
bound, calls that share a context hit the cache only if they run close together.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from evoforge.llm.counting import content_text

__all__ = ["BLOCK_TOKENS", "MIN_CACHED_TOKENS", "PrefixCache", "cached_share", "prompt_words"]

MIN_CACHED_TOKENS = 1024
"""A shared prefix counts once it is this long (OpenAI's threshold)."""
BLOCK_TOKENS = 128
"""...and then in increments of this many tokens."""


def prompt_words(messages: Any) -> list[str]:
    """The prompt's tokens: each message's whitespace-separated words, tagged with its
    role (``"user\\x1fword"``), messages in order."""
    tokens: list[str] = []
    for message in messages or ():
        if isinstance(message, dict):
            role = str(message.get("role", ""))
            tokens.extend(
                f"{role}\x1f{word}" for word in content_text(message.get("content")).split()
            )
    return tokens


def cached_share(cached_tokens: int, prompt_tokens: int) -> float:
    """Cached prompt tokens over all prompt tokens (0.0 when there were none)."""
    return cached_tokens / prompt_tokens if prompt_tokens else 0.0


class PrefixCache:
    """The longest earlier prefix of each prompt, rounded as a provider bills it.

    :meth:`lookup` answers for one prompt and then remembers it, so the first of
    two identical long prompts gets 0 and the second its full length (rounded down
    to 128). The totals (:attr:`requests`, :attr:`prompt_tokens`,
    :attr:`cached_tokens`) cover every prompt looked up.
    """

    def __init__(
        self,
        *,
        min_tokens: int = MIN_CACHED_TOKENS,
        block: int = BLOCK_TOKENS,
        capacity_tokens: int | None = None,
    ) -> None:
        if block < 1 or min_tokens < 0:
            raise ValueError("block must be >= 1 and min_tokens >= 0")
        if capacity_tokens is not None and capacity_tokens < block:
            raise ValueError(f"capacity_tokens must be at least one block ({block})")
        self.min_tokens = min_tokens
        self.block = block
        self.capacity_blocks = None if capacity_tokens is None else capacity_tokens // block
        self._seen: OrderedDict[bytes, None] = OrderedDict()  # oldest use first
        self.requests = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0

    def lookup(self, messages: Any) -> int:
        """Cached tokens of this chat prompt (see the module docstring); remembers it."""
        return self.lookup_tokens(prompt_words(messages))

    def lookup_tokens(self, tokens: Sequence[str]) -> int:
        """:meth:`lookup` for a prompt already cut into tokens."""
        shared_blocks = 0
        still_shared = True
        chain = list(self._chain(tokens))
        for digest in chain:
            if still_shared and digest in self._seen:
                shared_blocks += 1
            else:
                still_shared = False
        for digest in reversed(chain):  # the prompt's first block is the most recent use
            self._seen[digest] = None
            self._seen.move_to_end(digest)
        if self.capacity_blocks is not None:
            while len(self._seen) > self.capacity_blocks:
                self._seen.popitem(last=False)
        shared = shared_blocks * self.block
        cached = shared if shared >= self.min_tokens else 0
        self.requests += 1
        self.prompt_tokens += len(tokens)
        self.cached_tokens += cached
        return cached

    def _chain(self, tokens: Sequence[str]) -> Iterable[bytes]:
        """One digest per full block, each over the previous digest and the block."""
        previous = b""
        for start in range(0, len(tokens) - self.block + 1, self.block):
            block = "\x1e".join(tokens[start : start + self.block]).encode("utf-8")
            previous = hashlib.blake2b(previous + block, digest_size=16).digest()
            yield previous

    @property
    def share(self) -> float:
        """Cached over all prompt tokens looked up so far."""
        return cached_share(self.cached_tokens, self.prompt_tokens)

    def reset(self) -> None:
        """Forget every prompt and zero the totals."""
        self._seen.clear()
        self.requests = self.prompt_tokens = self.cached_tokens = 0
