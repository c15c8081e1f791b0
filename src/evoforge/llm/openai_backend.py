"""Any OpenAI-compatible endpoint through the official SDK: OpenAI, vLLM, Ollama,
llama.cpp server, LM Studio.

The SDK runs on its aiohttp transport (``DefaultAioHttpClient``), which holds
up far better than the default httpx pool at high concurrency. SDK retries are
off: the engine owns retries. This module only speaks the protocol and sorts
failures into the engine's error tree.
"""

from __future__ import annotations

import email.utils
import os
import time
from typing import Any
from urllib.parse import urlparse

from evoforge.errors import ConfigError, QuotaExhausted, RequestRejected, TransientError
from evoforge.llm.base import Completion, Message, Usage, with_schema_hint

OPENAI_URL = "https://api.openai.com/v1"
_TRANSIENT_STATUS = {408, 409, 429}
_KNOWN_PARAMS = {
    "temperature",
    "max_tokens",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "top_logprobs",
    "n",
}


class OpenAIChatModel:
    """``openai:MODEL`` or ``openai:MODEL@BASE_URL``.

    The key comes from ``api_key`` or ``OPENAI_API_KEY``, the URL from
    ``base_url``, ``OPENAI_BASE_URL`` or OpenAI's own. Local servers that need no
    key get a placeholder. With a schema the request carries a ``json_schema``
    response format; a server that refuses it is asked without it from then on
    (the engine validates replies either way).
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        organization: str | None = None,
    ) -> None:
        if not model:
            raise ConfigError("openai: a model name is required, e.g. openai:gpt-4o-mini")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
        if urlparse(self.base_url).scheme not in ("http", "https"):
            raise ConfigError(f"openai: base URL {self.base_url!r} must start with http(s)://")
        key = api_key or os.environ.get("OPENAI_API_KEY")
        if not key and self.base_url == OPENAI_URL:
            raise ConfigError(
                "openai: set OPENAI_API_KEY (or pass a base URL for a local server: "
                "openai:MODEL@http://127.0.0.1:8000/v1)"
            )
        self._api_key = key or "no-key-needed"
        self._organization = organization
        self._client: Any = None
        self._schema_supported = True

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "openai", "model": self.model, "base_url": self.base_url}

    def _get_client(self) -> Any:
        if self._client is None:
            from openai import AsyncOpenAI, DefaultAioHttpClient

            self._client = AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                organization=self._organization,
                max_retries=0,
                timeout=None,  # the engine applies --timeout per attempt
                http_client=DefaultAioHttpClient(),
            )
        return self._client

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion:
        kwargs: dict[str, Any] = {k: v for k, v in params.items() if k in _KNOWN_PARAMS}
        extra = {k: v for k, v in params.items() if k not in _KNOWN_PARAMS}
        if extra:
            kwargs["extra_body"] = extra
        if schema is not None and self._schema_supported:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": False},
            }
        elif schema is not None:
            messages = with_schema_hint(messages, schema)
        try:
            response = await self._get_client().chat.completions.create(
                model=self.model, messages=messages, **kwargs
            )
        except Exception as exc:
            error = classify_openai_error(exc)
            if (
                isinstance(error, RequestRejected)
                and "response_format" in kwargs
                and _mentions_response_format(exc)
            ):
                self._schema_supported = False
                return await self.complete(messages, schema=schema, **params)
            raise error from exc
        if not response.choices:
            raise RequestRejected("empty_response", "the server returned no choices")
        choice = response.choices[0]
        if choice.finish_reason == "content_filter":
            raise RequestRejected("content_filter", "the provider's content filter stopped it")
        usage = response.usage
        return Completion(
            text=choice.message.content or "",
            usage=Usage(
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            ),
            model=response.model or self.model,
            finish_reason=choice.finish_reason,
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


def _mentions_response_format(exc: Exception) -> bool:
    text = str(getattr(exc, "message", "") or exc).lower()
    return "response_format" in text or "json_schema" in text


def retry_after_seconds(headers: Any) -> float | None:
    """``retry-after-ms`` (OpenAI's) or ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value:
        try:
            return max(0.0, float(value) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def classify_openai_error(exc: Exception) -> Exception:
    """Map an OpenAI SDK exception onto the engine's error tree."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return TransientError("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return TransientError(f"connection error: {exc}")
    if not isinstance(exc, openai.APIStatusError):
        return exc
    status = exc.status_code
    code = str(getattr(exc, "code", "") or "")
    body = exc.body if isinstance(exc.body, dict) else {}
    message = str(body.get("message") or getattr(exc, "message", "") or exc)
    if code == "insufficient_quota" or "insufficient_quota" in message:
        return QuotaExhausted(message, status=status)
    if status in _TRANSIENT_STATUS or status >= 500:
        return TransientError(
            f"HTTP {status}: {message}",
            status=status,
            retry_after=retry_after_seconds(exc.response.headers),
        )
    if code == "context_length_exceeded" or "maximum context length" in message.lower():
        return RequestRejected("context_length_exceeded", message, status=status)
    return RequestRejected(f"http_{status}", f"HTTP {status}: {message}", status=status)
