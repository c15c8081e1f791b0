"""Any LangChain ``BaseChatModel`` as an evoforge ChatModel.

From the CLI: ``--llm langchain:package.module:ClassName --llm-arg key=value``;
from Python: ``LangChainChatModel(ChatAnthropic(...))``. Sampling parameters
belong to the LangChain model's own constructor; per call only ``stop`` is
passed through.
"""

from __future__ import annotations

from typing import Any

from evoforge.errors import RequestRejected, TransientError
from evoforge.llm.base import Completion, Message, Usage, with_schema_hint

_TRANSIENT_NAMES = ("timeout", "connection", "ratelimit", "serviceunavailable", "overloaded")


class LangChainChatModel:
    def __init__(self, chat_model: Any) -> None:
        from langchain_core.language_models import BaseChatModel

        if not isinstance(chat_model, BaseChatModel):
            raise TypeError(f"expected a LangChain BaseChatModel, got {type(chat_model).__name__}")
        self.chat_model = chat_model

    @property
    def identity(self) -> dict[str, str]:
        cls = type(self.chat_model)
        model = (
            getattr(self.chat_model, "model_name", None)
            or getattr(self.chat_model, "model", None)
            or cls.__name__
        )
        identity = {
            "backend": "langchain",
            "class": f"{cls.__module__}.{cls.__qualname__}",
            "model": str(model),
        }
        base_url = getattr(self.chat_model, "openai_api_base", None) or getattr(
            self.chat_model, "base_url", None
        )
        if base_url:
            identity["base_url"] = str(base_url)
        return identity

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion:
        from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

        if schema is not None:
            messages = with_schema_hint(messages, schema)
        kinds = {"system": SystemMessage, "user": HumanMessage, "assistant": AIMessage}
        converted = [kinds[m["role"]](content=m["content"]) for m in messages]
        kwargs = {"stop": params["stop"]} if params.get("stop") else {}
        try:
            result = await self.chat_model.ainvoke(converted, **kwargs)
        except Exception as exc:
            raise classify_langchain_error(exc) from exc
        usage = getattr(result, "usage_metadata", None) or {}
        metadata = getattr(result, "response_metadata", None) or {}
        return Completion(
            text=_text_of(result.content),
            usage=Usage(
                prompt_tokens=int(usage.get("input_tokens", 0)),
                completion_tokens=int(usage.get("output_tokens", 0)),
            ),
            model=str(metadata.get("model_name") or self.identity["model"]),
            finish_reason=metadata.get("finish_reason"),
        )

    async def aclose(self) -> None:
        return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
    return "".join(parts)


def classify_langchain_error(exc: Exception) -> Exception:
    """Provider SDK errors surface through LangChain unchanged; sort them by status."""
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a core dependency
        openai = None
    if openai is not None and isinstance(exc, openai.APIError):
        from evoforge.llm.openai_backend import classify_openai_error

        return classify_openai_error(exc)
    status = getattr(exc, "status_code", None) or getattr(
        getattr(exc, "response", None), "status_code", None
    )
    if isinstance(status, int):
        if status in (408, 409, 429) or status >= 500:
            return TransientError(f"HTTP {status}: {exc}", status=status)
        return RequestRejected(f"http_{status}", f"HTTP {status}: {exc}", status=status)
    name = type(exc).__name__.lower()
    if isinstance(exc, TimeoutError | ConnectionError) or any(n in name for n in _TRANSIENT_NAMES):
        return TransientError(f"{type(exc).__name__}: {exc}")
    return RequestRejected("backend_error", f"{type(exc).__name__}: {exc}")
