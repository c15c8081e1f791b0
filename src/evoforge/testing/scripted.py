"""An in-process ChatModel whose replies a test writes, for operator tests.

    model = ScriptedChatModel(lambda messages, n: "Equal" if "judge" in messages[-1]["content"]
                              else "a rewritten instruction")

The reply function gets the messages and the 1-based call number and returns
the reply text, a :class:`~evoforge.llm.base.Completion`, or raises one of the
engine's errors (``TransientError``, ``RequestRejected``, ...). Every call is
recorded in ``calls`` (unless ``record=False``; ``call_count`` always counts).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from evoforge.llm.base import Completion, Message, Usage
from evoforge.prompting import rag_prompt

__all__ = ["Reply", "ScriptedChatModel", "rag_prompt"]  # rag_prompt: for scripted RAG models

Reply = str | Completion


class ScriptedChatModel:
    def __init__(
        self,
        reply: Callable[[list[Message], int], Reply] | list[Reply] | str,
        *,
        name: str = "scripted",
        delay: float = 0.0,
        record: bool = True,
    ) -> None:
        if isinstance(reply, str):
            text = reply
            self._reply: Callable[[list[Message], int], Reply] = lambda _m, _n: text
        elif isinstance(reply, list):
            replies = list(reply)
            self._reply = lambda _m, n: replies[min(n, len(replies)) - 1]
        else:
            self._reply = reply
        self.name = name
        self.delay = delay
        self.record = record  # False for long runs: keeps only the count
        self.calls: list[dict[str, Any]] = []
        self.call_count = 0

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "scripted", "model": self.name}

    async def complete(
        self, messages: list[Message], *, schema: dict[str, Any] | None = None, **params: Any
    ) -> Completion:
        self.call_count += 1
        if self.record:
            self.calls.append({"messages": messages, "schema": schema, "params": params})
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self._reply(messages, self.call_count)
        if isinstance(reply, Completion):
            return reply
        prompt_words = sum(len(m["content"].split()) for m in messages)
        return Completion(
            text=reply,
            usage=Usage(prompt_tokens=prompt_words, completion_tokens=len(reply.split())),
            model=self.name,
            finish_reason="stop",
        )

    async def aclose(self) -> None:
        return None
