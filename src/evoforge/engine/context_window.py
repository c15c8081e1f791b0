"""Context limits before any spend: a prompt that cannot fit is rejected, not sent.

Before a request goes out (after a cache miss, before the rate limiters and the wire),
:meth:`ContextLimit.check` compares the prompt's estimated tokens plus the request's
``max_tokens`` with the model's context window. Over it, the request is rejected with
the reason ``too_long``::

    prompt ≈40003 tokens + 512 output > window 8192; not sent (gpt-4, from models.yaml)

The window, resolved once per run, comes from the first of:

1. ``--context-window N`` (:attr:`evoforge.options.EngineOptions.context_window`);
2. the server's ``GET /models`` entry for the model, where it gives one (vLLM's
   ``max_model_len``; ``context_length``, ``context_window`` or ``max_context_length``
   elsewhere), asked through the backend's ``server_context_window()``;
3. the table of known models, ``evoforge/llm/models.yaml``
   (:mod:`evoforge.llm.models_table`).

A model in none of them is not checked (logged once on the ``evoforge`` logger).

The estimate: the tokenizer in ``--context-tokenizer DIR`` where given (any backend: the
model's own tokenizer folder makes it exact); else the embedded model's tokenizer for the
local backend (its chat template applied, so exact); otherwise ceil(UTF-8 bytes / 3)
per message plus :data:`MESSAGE_OVERHEAD` tokens for the chat template's role markers.
Three bytes per token over-counts ordinary English (about four) and stays close for code
and for languages with multi-byte characters; tiktoken is not used because it downloads its
files on first use. A provider's own 400 ``context_length_exceeded`` stays a
``context_length_exceeded`` rejection (the estimate can be under the truth).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

from evoforge.errors import RequestRejected
from evoforge.llm.base import ChatModel, Message
from evoforge.llm.models_table import lookup

logger = logging.getLogger("evoforge.context")

BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD = 4  # tokens a chat template adds around one message
REASON = "too_long"

Counter = Callable[[list[Message]], int]


def estimate_tokens(messages: list[Message]) -> int:
    """Prompt tokens by the offline rule: ceil(UTF-8 bytes / 3) of each message's text,
    plus :data:`MESSAGE_OVERHEAD` per message."""
    return sum(
        math.ceil(len(str(m.get("content") or "").encode("utf-8")) / BYTES_PER_TOKEN)
        + MESSAGE_OVERHEAD
        for m in messages
    )


def model_name_of_spec(spec: str) -> str:
    """The model name an ``--llm`` spec names, for the table (``openai:gpt-4o@URL`` ->
    ``gpt-4o``; ``local`` -> the embedded SmolLM2); "" when it names none."""
    backend, _, rest = spec.partition(":")
    if backend.strip() == "local":
        return "SmolLM2-135M-Instruct"
    if backend.strip() == "openai":
        return rest.partition("@")[0].strip()
    return ""


def local_token_counter() -> Counter | None:
    """Exact prompt tokens for the embedded model: its tokenizer with its chat template,
    loaded offline; None when it cannot be loaded (no ``local`` extra)."""
    try:
        return folder_token_counter(None)
    except Exception:  # a missing extra or model: the byte rule applies
        return None


def folder_token_counter(folder: str | None) -> Counter:
    """Prompt tokens by the tokenizer (with its chat template) in ``folder``
    (``--context-tokenizer``; ``None``: the embedded model's), loaded offline. A folder
    that holds none is a ``ConfigError`` naming it."""
    from evoforge.io.tokens import load_chat_tokenizer

    tokenizer = load_chat_tokenizer(folder, flag="--context-tokenizer")

    def count(messages: list[Message]) -> int:
        if len(messages) == 1 and messages[0].get("role") not in ("system", "user", "assistant"):
            return len(tokenizer(messages[0]["content"], add_special_tokens=False)["input_ids"])
        # As the local backend renders a request: the template's text, then its tokens.
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


class ContextLimit:
    """The context check of one run's client (see the module's doc).

    ``window``: ``--context-window``, or None to ask the server, then the table.
    ``name``: the model name to look up in the table (default: the model's identity;
    a dry run passes the real model's name, its counting model has none).
    ``tokenizer``: makes the exact counter (e.g. :func:`local_token_counter`), called
    the first time a prompt is long enough to need it; None, or a None from it, for
    the byte rule.
    """

    def __init__(
        self,
        model: ChatModel,
        *,
        window: int | None = None,
        name: str | None = None,
        tokenizer: Callable[[], Counter | None] | None = None,
    ) -> None:
        self.model = model
        self.name = name or model.identity.get("model", "")
        self._tokenizer = tokenizer
        self.counter: Counter | None = None
        self.window = window
        self.source = "--context-window" if window is not None else ""
        self._resolved = window is not None
        self._lock: asyncio.Lock | None = None

    async def resolve(self) -> int | None:
        """The window (resolved on the first call, then kept); None when unknown."""
        if self._resolved:
            return self.window
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if not self._resolved:
                self.window, self.source = await self._find()
                self._resolved = True
                if self.window is None:
                    logger.info(
                        "model %r: context window unknown (no --context-window, none from "
                        "the server, not in models.yaml); prompts are not checked",
                        self.name,
                    )
        return self.window

    async def _find(self) -> tuple[int | None, str]:
        ask = getattr(self.model, "server_context_window", None)
        if ask is not None:
            try:
                found = await ask()
            except Exception:  # metadata is optional: any failure falls back to the table
                found = None
            if found:
                return int(found), "the server's /models"
        facts = lookup(self.name) if self.name else None
        if facts is not None and facts.context_window is not None:
            return facts.context_window, f"models.yaml: {facts.name}"
        return None, ""

    def estimate(self, messages: list[Message], budget: int) -> int:
        """Prompt tokens of ``messages``. With a tokenizer, a prompt whose UTF-8 bytes
        fit in ``budget`` is not tokenized: a token is at least one byte."""
        if self._tokenizer is None and self.counter is None:
            return estimate_tokens(messages)
        size = sum(len(str(m.get("content") or "").encode("utf-8")) for m in messages)
        size += MESSAGE_OVERHEAD * len(messages)
        if size <= budget:
            return size  # an upper bound that fits: no need to tokenize
        if self.counter is None:
            make, self._tokenizer = self._tokenizer, None
            self.counter = make() if make is not None else None
            if self.counter is None:  # no tokenizer after all: the byte rule from now on
                return estimate_tokens(messages)
        return self.counter(messages)

    async def check(self, messages: list[Message], params: dict[str, Any]) -> None:
        """Raise ``RequestRejected("too_long")`` when the prompt cannot fit; else nothing."""
        window = await self.resolve()
        if window is None:
            return
        output = int(params.get("max_tokens") or params.get("max_completion_tokens") or 0)
        prompt = self.estimate(messages, window - output)
        if prompt + output > window:
            raise RequestRejected(
                REASON,
                f"prompt ≈{prompt} tokens + {output} output > window {window}; not sent "
                f"({self.name}, from {self.source})",
            )
