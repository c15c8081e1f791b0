"""What one request to the local model asks, and what must match for requests to batch.

:class:`_GenerationParams` reads and checks the sampling parameters (requests with equal
ones share one ``generate`` call); :class:`_Request` is a queued request with the future
its caller awaits. Stop strings, the seed and the schema hint for unguided schemas are
read here too; a bad value is a ``RequestRejected("invalid_params", ...)``.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from evoforge.errors import RequestRejected
from evoforge.llm.base import Completion, Message
from evoforge.llm.local.guided_json import _JsonScaffold

DEFAULT_MAX_TOKENS = 256
DEFAULT_REPETITION_PENALTY = 1.1
SCHEMA_INSTRUCTION = "Reply with only a JSON object that follows this JSON Schema: "


@dataclass(frozen=True)
class _GenerationParams:
    """What must be equal for requests to share one ``generate`` call."""

    temperature: float = 0.0
    max_new_tokens: int = DEFAULT_MAX_TOKENS
    top_p: float | None = None
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    top_logprobs: int = 0  # > 0: the reply's token logprobs, with this many alternatives

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _GenerationParams:
        def get(name: str, default: Any) -> Any:
            value = params.get(name)
            return default if value is None else value

        try:
            made = cls(
                temperature=float(get("temperature", 0.0)),
                max_new_tokens=int(get("max_tokens", DEFAULT_MAX_TOKENS)),
                top_p=None if params.get("top_p") is None else float(params["top_p"]),
                repetition_penalty=float(get("repetition_penalty", DEFAULT_REPETITION_PENALTY)),
                top_logprobs=min(20, max(1, int(get("top_logprobs", 1))))
                if params.get("logprobs")
                else 0,
            )
        except (TypeError, ValueError) as exc:
            raise RequestRejected("invalid_params", f"bad generation parameter: {exc}") from exc
        if made.temperature < 0 or made.max_new_tokens < 1 or made.repetition_penalty <= 0:
            raise RequestRejected(
                "invalid_params",
                "temperature must be >= 0, max_tokens >= 1 and repetition_penalty > 0",
            )
        if made.top_p is not None and not 0 < made.top_p <= 1:
            raise RequestRejected("invalid_params", "top_p must be in (0, 1]")
        return made


@dataclass
class _Request:
    messages: list[Message]
    params: _GenerationParams
    stop: tuple[str, ...]
    seed: int | None
    future: asyncio.Future[Completion] = field(repr=False)
    scaffold: _JsonScaffold | None = None  # set: the reply is guided JSON
    prompt: str | None = None  # set: raw text, sent without the chat template


def _fail(requests: list[_Request], exc: BaseException) -> None:
    for request in requests:
        if request.future.done():
            continue
        if isinstance(exc, Exception):
            request.future.set_exception(exc)
        else:
            request.future.cancel()


def _with_schema_instruction(messages: list[Message], schema: dict[str, Any]) -> list[Message]:
    instruction = SCHEMA_INSTRUCTION + json.dumps(schema, separators=(",", ":"))
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content', '')}\n\n{instruction}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    try:
        return int(seed)
    except (TypeError, ValueError) as exc:
        raise RequestRejected("invalid_params", f"seed must be an integer, got {seed!r}") from exc


def _stop_strings(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if s)


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)
