"""The one contract every backend speaks.

A backend turns chat messages into a :class:`Completion` and classifies its own
failures into :mod:`evoforge.errors` (``TransientError``, ``RequestRejected``,
``QuotaExhausted``). It never retries, caches or rate-limits: that policy lives
once, in :mod:`evoforge.engine`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Of prompt_tokens, those the provider's prefix cache served (billed at a discount).
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.prompt_tokens + other.prompt_tokens,
            self.completion_tokens + other.completion_tokens,
            self.cached_tokens + other.cached_tokens,
        )


@dataclass(frozen=True)
class TokenLogprob:
    """One output token with its log probability and the most likely alternatives
    at its position (``top``: token -> logprob, the token itself included)."""

    token: str
    logprob: float
    top: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TokenLogprob:
        top = {str(k): float(v) for k, v in (data.get("top") or {}).items()}
        return cls(str(data["token"]), float(data["logprob"]), top)


@dataclass(frozen=True)
class Completion:
    """What a model said. ``parsed`` is filled by the engine when a schema was asked for.

    ``logprobs`` holds one :class:`TokenLogprob` per output token when the request
    asked for them (params ``logprobs=True, top_logprobs=N``, the OpenAI names) and
    the backend could give them; otherwise ``None``.
    """

    text: str
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    finish_reason: str | None = None
    parsed: Any = None
    logprobs: tuple[TokenLogprob, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("parsed")
        if not self.usage.cached_tokens:
            data["usage"].pop("cached_tokens")  # entries as they were before it existed
        if self.logprobs is None:
            data.pop("logprobs")
        else:
            data["logprobs"] = [asdict(entry) for entry in self.logprobs]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Completion:
        usage = Usage(**data.get("usage", {}))
        logprobs = data.get("logprobs")
        return cls(
            text=data["text"],
            usage=usage,
            model=data.get("model", ""),
            finish_reason=data.get("finish_reason"),
            logprobs=None
            if logprobs is None
            else tuple(TokenLogprob.from_json(entry) for entry in logprobs),
        )


@runtime_checkable
class ChatModel(Protocol):
    """Async chat completion.

    ``identity`` names the backend, model and endpoint; it is part of every cache
    key, so two endpoints serving the same model name never share answers.
    ``schema`` is a JSON Schema the reply should follow: backends that can send it
    as a response format do; others ignore it (the engine validates either way).
    """

    @property
    def identity(self) -> dict[str, str]: ...

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class TextCompletionModel(Protocol):
    """A backend that also completes raw text, no chat template applied (OpenAI-compatible
    ``/v1/completions``: vLLM, llama.cpp server; the embedded model). ``chat_template``
    gives the model's own chat template, ``{"template", "bos_token", "eos_token"}``, or
    ``None`` when the backend cannot know it (a remote server)."""

    async def complete_text(self, prompt: str, **params: Any) -> Completion: ...

    async def chat_template(self) -> dict[str, str] | None: ...


def with_schema_hint(messages: list[Message], schema: dict[str, Any]) -> list[Message]:
    """For backends without a response-format option: state the schema in the system turn."""
    import json

    hint = "Reply with only a JSON object that follows this JSON Schema:\n" + json.dumps(
        schema, ensure_ascii=False
    )
    if messages and messages[0]["role"] == "system":
        first = {"role": "system", "content": f"{messages[0]['content']}\n\n{hint}"}
        return [first, *messages[1:]]
    return [{"role": "system", "content": hint}, *messages]
