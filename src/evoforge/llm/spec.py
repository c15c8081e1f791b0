"""``--llm SPEC`` -> a ChatModel.

    local                                  the embedded SmolLM2-135M-Instruct (default)
    openai:MODEL                           OpenAI, key from OPENAI_API_KEY
    openai:MODEL@BASE_URL                  any OpenAI-compatible server (vLLM, Ollama, ...)
    openai:MODEL@URL1,URL2,...             one model on several servers (llm/server_pool.py)
    langchain:package.module:ClassName     any LangChain BaseChatModel; --llm-arg key=value

Backends register here by name; there is no chain of string checks.
"""

from __future__ import annotations

import difflib
import importlib
import json
from collections.abc import Callable
from typing import Any

from evoforge.errors import ConfigError
from evoforge.llm.base import ChatModel
from evoforge.options import DEFAULT_LLM

DEFAULT_SPEC = DEFAULT_LLM  # written once, in evoforge.options


def _local(rest: str, args: dict[str, Any]) -> ChatModel:
    if rest:
        raise ConfigError(f"--llm local takes no model name (got {rest!r})")
    from evoforge.llm.local import LocalChatModel

    return LocalChatModel(**args)


def _openai(rest: str, args: dict[str, Any]) -> ChatModel:
    from evoforge.llm.openai_backend import OpenAIChatModel

    model, _, base_url = rest.partition("@")
    if "," in base_url:  # several servers of one model: requests spread over them
        from evoforge.llm.server_pool import ServerPool

        return ServerPool(model, base_url.split(","), **args)
    return OpenAIChatModel(model.strip(), base_url=base_url.strip() or None, **args)


def _langchain(rest: str, args: dict[str, Any]) -> ChatModel:
    from evoforge.llm.langchain_backend import LangChainChatModel

    module_name, _, class_name = rest.rpartition(":")
    if not module_name or not class_name:
        raise ConfigError(
            f"--llm langchain:{rest}: expected langchain:package.module:ClassName, "
            "e.g. langchain:langchain_openai:ChatOpenAI"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        hint = module_name.split(".")[0].replace("_", "-")
        raise ConfigError(
            f"--llm: cannot import {module_name} ({exc}). Install the package that provides "
            f"it, e.g. pip install {hint}"
        ) from exc
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ConfigError(f"--llm: module {module_name} has no class {class_name}")
    try:
        return LangChainChatModel(cls(**args))
    except TypeError as exc:
        raise ConfigError(f"--llm {class_name}: {exc}") from exc
    except Exception as exc:  # pydantic validation errors of the LangChain model
        raise ConfigError(f"--llm {class_name}: cannot build it: {exc}") from exc


BACKENDS: dict[str, Callable[[str, dict[str, Any]], ChatModel]] = {
    "local": _local,
    "openai": _openai,
    "langchain": _langchain,
}


def parse_llm_args(pairs: list[str] | None) -> dict[str, Any]:
    """``["temperature=0.2", "stop=[\\"x\\"]"]`` -> values parsed as JSON when they are JSON."""
    args: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--llm-arg {pair!r}: expected key=value")
        try:
            args[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            args[key.strip()] = raw
    return args


def load_chat_model(spec: str = DEFAULT_SPEC, args: dict[str, Any] | None = None) -> ChatModel:
    """Build the ChatModel a ``--llm`` spec names."""
    name, _, rest = spec.partition(":")
    factory = BACKENDS.get(name.strip())
    if factory is None:
        hint = difflib.get_close_matches(name, list(BACKENDS), n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"--llm {spec!r}: unknown backend {name!r}; use one of "
            f"{', '.join(BACKENDS)}.{suggestion}"
        )
    return factory(rest.strip(), dict(args or {}))


def is_local(model: ChatModel) -> bool:
    return model.identity.get("backend") == "local"
