"""Any OpenAI-compatible endpoint: OpenAI, vLLM, Ollama, llama.cpp server, LM Studio.

Two transports carry the same protocol; everything else (the request body,
reading the reply, sorting failures into the engine's error tree) is shared:

- ``http`` (default): a lean aiohttp client of ``POST /chat/completions``. It
  spends about 0.3 ms of CPU per request, which keeps a 2-core machine at the
  server's pace at concurrency 64 and beyond (bench/README.md).
- ``sdk``: the official ``AsyncOpenAI`` on its aiohttp client
  (``DefaultAioHttpClient``), for deployments that want the SDK's own request
  handling. It costs about 1 ms of CPU per request, which at concurrency 64 on
  two cores is the bottleneck, not the server.

Neither retries: the engine owns retries, rate limits and timeouts.
"""

from __future__ import annotations

import email.utils
import json
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlparse, urlunparse

from evoforge.errors import (
    ConfigError,
    QuotaExhausted,
    RequestRejected,
    TransientError,
    redact,
)
from evoforge.llm.base import Completion, Message, TokenLogprob, Usage, with_schema_hint

OPENAI_URL = "https://api.openai.com/v1"
TRANSPORTS = ("http", "sdk")
_TRANSIENT_STATUS = {408, 409, 429}


def resolve_endpoint(base_url: str | None, api_key: str | None, *, who: str) -> tuple[str, str]:
    """The base URL (argument, ``OPENAI_BASE_URL`` or OpenAI's) and key (argument or
    ``OPENAI_API_KEY``; a placeholder for local servers, which need none)."""
    url = (base_url or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL).rstrip("/")
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https"):
        raise ConfigError(f"{who}: base URL {redact(url)!r} must start with http(s)://")
    if "@" in parsed.netloc:
        # Credentials never travel in the URL (nor reach identities, manifests, logs):
        # the password is the API key when none is given.
        userinfo, _, host = parsed.netloc.rpartition("@")
        api_key = api_key or unquote(userinfo.partition(":")[2]) or None
        url = urlunparse(parsed._replace(netloc=host))
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key and url == OPENAI_URL:
        raise ConfigError(
            f"{who}: set OPENAI_API_KEY (or pass a base URL for a local server: "
            "openai:MODEL@http://127.0.0.1:8000/v1)"
        )
    return url, key or "no-key-needed"


class OpenAIChatModel:
    """``openai:MODEL`` or ``openai:MODEL@BASE_URL`` (+ ``--llm-arg transport=sdk``).

    The key comes from ``api_key`` or ``OPENAI_API_KEY``, the URL from
    ``base_url``, ``OPENAI_BASE_URL`` or OpenAI's own. Local servers that need no
    key get a placeholder. With a schema the request carries a ``json_schema``
    response format; a server that refuses it is asked without it from then on
    (the engine validates replies either way).

    Token logprobs are requested only when the caller's params ask
    (``logprobs=True, top_logprobs=N``, passed through as the API names them) and
    come back in ``Completion.logprobs``; a server that refuses them is asked
    without them from then on, and the completion has ``logprobs=None``.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        organization: str | None = None,
        transport: str = "http",
    ) -> None:
        if not model:
            raise ConfigError("openai: a model name is required, e.g. openai:gpt-4o-mini")
        if transport not in TRANSPORTS:
            raise ConfigError(f"openai: transport must be one of {', '.join(TRANSPORTS)}")
        self.model = model
        self.transport = transport
        self.base_url, self._api_key = resolve_endpoint(base_url, api_key, who="openai")
        self._organization = organization
        self._sdk: Any = None
        self._session: Any = None
        self._schema_supported = True
        self._logprobs_supported = True

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "openai", "model": self.model, "base_url": self.base_url}

    async def server_context_window(self) -> int | None:
        """The model's context window from the server's ``GET /models`` (vLLM's
        ``max_model_len``, others' ``context_length``), or None where it gives none; the
        engine's context check asks once per run (:mod:`evoforge.engine.context_window`)."""
        import aiohttp

        from evoforge.llm.models_table import window_from_models_list

        headers = {"Authorization": f"Bearer {self._api_key}"}
        timeout = aiohttp.ClientTimeout(total=10)
        try:
            async with (
                aiohttp.ClientSession(headers=headers, timeout=timeout) as session,
                session.get(f"{self.base_url}/models") as response,
            ):
                if response.status != 200:
                    return None
                body = await response.json(content_type=None)
        except Exception:  # optional metadata: a refusal, a timeout, a body not JSON
            return None
        return window_from_models_list(body, self.model)

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion:
        body = self.request_body(messages, schema, params)
        post = self._post_http if self.transport == "http" else self._post_sdk
        try:
            data = await post(body)
        except RequestRejected as error:
            if "response_format" in body and _mentions_response_format(str(error)):
                self._schema_supported = False
                return await self.complete(messages, schema=schema, **params)
            if body.get("logprobs") and "logprobs" in str(error).lower():
                self._logprobs_supported = False
                return await self.complete(messages, schema=schema, **params)
            raise
        return _completion_from(data, self.model)

    def request_body(
        self, messages: list[Message], schema: dict[str, Any] | None, params: dict[str, Any]
    ) -> dict[str, Any]:
        """The ``/chat/completions`` body for one call (the batch transport sends the same
        body as one line of its JSONL file)."""
        body: dict[str, Any] = {"model": self.model, "messages": messages, **params}
        if not self._logprobs_supported:
            body.pop("logprobs", None)
            body.pop("top_logprobs", None)
        if schema is not None and self._schema_supported:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": False},
            }
        elif schema is not None:
            body["messages"] = with_schema_hint(messages, schema)
        return body

    def auth_headers(self) -> dict[str, str]:
        """The headers every request carries: the key, and the organization if set."""
        headers = {"Authorization": f"Bearer {self._api_key}"}
        if self._organization:
            headers["OpenAI-Organization"] = self._organization
        return headers

    async def complete_text(self, prompt: str, **params: Any) -> Completion:
        """Raw-text completion, ``POST /completions`` (vLLM, llama.cpp server): the prompt
        is sent as is, no chat template applied (Magpie's pre-query prompt)."""
        body = {"model": self.model, "prompt": prompt, **params}
        body.pop("logprobs", None)  # /completions takes an int here; nothing asks for it
        body.pop("top_logprobs", None)
        post = self._post_http if self.transport == "http" else self._post_sdk
        return _text_completion_from(await post(body, "/completions"), self.model)

    async def chat_template(self) -> dict[str, str] | None:
        return None  # the server's template is not part of the OpenAI protocol

    async def _post_http(self, body: dict[str, Any], path: str = "/chat/completions") -> Any:
        import aiohttp

        if self._session is None:
            headers = {**self.auth_headers(), "Content-Type": "application/json"}
            # No pool limit here: the engine bounds the requests in flight.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(headers=headers, connector=connector)
        url = f"{self.base_url}{path}"
        try:
            async with self._session.post(url, data=json.dumps(body)) as response:
                raw = await response.read()
                status, headers = response.status, response.headers
        except aiohttp.ClientError as exc:
            raise TransientError(f"connection error: {type(exc).__name__}: {exc}") from None
        if status == 200:
            try:
                return json.loads(raw)
            except ValueError:
                raise TransientError(
                    f"HTTP 200 with a body that is not JSON: {raw[:120]!r}"
                ) from None
        raise _http_error(status, raw, headers)

    async def _post_sdk(self, body: dict[str, Any], path: str = "/chat/completions") -> Any:
        import openai

        if self._sdk is None:
            self._sdk = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=self.base_url,
                organization=self._organization,
                max_retries=0,
                timeout=None,  # the engine applies --timeout per attempt
                http_client=openai.DefaultAioHttpClient(),
            )
        try:
            # The SDK's public low-level call: the same auth, transport and error types
            # as chat.completions.create, without its per-request TypedDict transform
            # and pydantic parsing (another ~0.4 ms of CPU per request).
            return await self._sdk.post(path, body=body, cast_to=object)
        except openai.APIError as exc:
            raise classify_openai_error(exc) from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None


def completion_from(data: Any, model: str) -> Completion:
    """A ``chat.completion`` body as a :class:`Completion` (online or a batch output line)."""
    return _completion_from(data, model)


def _completion_from(data: Any, model: str) -> Completion:
    if not isinstance(data, dict) or not data.get("choices"):
        raise RequestRejected("empty_response", f"the server returned no choices: {data!r:.200}")
    choice = data["choices"][0]
    finish_reason = choice.get("finish_reason")
    if finish_reason == "content_filter":
        raise RequestRejected("content_filter", "the provider's content filter stopped it")
    usage = data.get("usage") or {}
    message = choice.get("message") or {}
    return Completion(
        text=message.get("content") or "",
        usage=Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            cached_tokens=_cached_tokens(usage),
        ),
        model=data.get("model") or model,
        finish_reason=finish_reason,
        logprobs=_logprobs_from(choice.get("logprobs")),
    )


def _cached_tokens(usage: dict[str, Any]) -> int:
    """``usage.prompt_tokens_details.cached_tokens``: prompt tokens the provider's prefix
    cache served (OpenAI, DeepSeek, vLLM and SGLang report it); 0 when absent."""
    details = usage.get("prompt_tokens_details")
    if not isinstance(details, dict):
        return 0
    try:
        return int(details.get("cached_tokens") or 0)
    except (TypeError, ValueError):
        return 0


def _text_completion_from(data: Any, model: str) -> Completion:
    """A ``/completions`` reply (``choices[0].text``) as a Completion."""
    if not isinstance(data, dict) or not data.get("choices"):
        raise RequestRejected("empty_response", f"the server returned no choices: {data!r:.200}")
    choice = data["choices"][0]
    usage = data.get("usage") or {}
    return Completion(
        text=str(choice.get("text") or ""),
        usage=Usage(
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        ),
        model=data.get("model") or model,
        finish_reason=choice.get("finish_reason"),
    )


def _logprobs_from(block: Any) -> tuple[TokenLogprob, ...] | None:
    """``choices[0].logprobs.content`` as ``TokenLogprob``s; ``None`` when absent."""
    content = block.get("content") if isinstance(block, dict) else None
    if not isinstance(content, list):
        return None
    tokens = []
    for entry in content:
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            return None
        logprob = float(entry.get("logprob") or 0.0)
        top = {
            alt["token"]: float(alt.get("logprob") or 0.0)
            for alt in entry.get("top_logprobs") or []
            if isinstance(alt, dict) and isinstance(alt.get("token"), str)
        }
        top.setdefault(entry["token"], logprob)
        tokens.append(TokenLogprob(entry["token"], logprob, top))
    return tuple(tokens)


def _mentions_response_format(text: str) -> bool:
    text = text.lower()
    return "response_format" in text or "json_schema" in text


def _http_error(status: int, raw: bytes, headers: Mapping[str, str]) -> Exception:
    code, message = error_fields(raw, status)
    return classify_status(status, code=code, message=message, headers=headers)


def error_fields(raw: bytes, status: int) -> tuple[str, str]:
    """(code, message) of an OpenAI-style error body; the raw text (or ``HTTP <status>``)
    when it has no ``error`` object. Chat and embedding errors are read by this one."""
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, str):
        error = {"message": error}
    if not isinstance(error, dict):
        return "", raw[:200].decode("utf-8", "replace") or f"HTTP {status}"
    return str(error.get("code") or error.get("type") or ""), str(
        error.get("message") or f"HTTP {status}"
    )


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
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
        try:
            parsed = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, parsed.timestamp() - time.time())


def classify_status(
    status: int, *, code: str, message: str, headers: Mapping[str, str] | None
) -> Exception:
    """The engine's reading of an HTTP error from an OpenAI-compatible server."""
    if code == "insufficient_quota" or "insufficient_quota" in message:
        return QuotaExhausted(message, status=status)
    if status in _TRANSIENT_STATUS or status >= 500:
        return TransientError(
            f"HTTP {status}: {message}", status=status, retry_after=retry_after_seconds(headers)
        )
    if code == "context_length_exceeded" or "maximum context length" in message.lower():
        return RequestRejected("context_length_exceeded", message, status=status)
    return RequestRejected(f"http_{status}", f"HTTP {status}: {message}", status=status)


def classify_openai_error(exc: Exception) -> Exception:
    """Map an OpenAI SDK exception (e.g. raised inside a LangChain model) onto the tree."""
    import openai

    if isinstance(exc, openai.APITimeoutError):
        return TransientError("request timed out")
    if isinstance(exc, openai.APIConnectionError):
        return TransientError(f"connection error: {exc}")
    if not isinstance(exc, openai.APIStatusError):
        return exc
    error = exc.body if isinstance(exc.body, dict) else {}
    return classify_status(
        exc.status_code,
        code=str(getattr(exc, "code", "") or error.get("code") or ""),
        message=str(error.get("message") or exc.message),
        headers=exc.response.headers,
    )
