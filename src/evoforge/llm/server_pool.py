"""``openai:MODEL@URL1,URL2,...``: one model served by several OpenAI-compatible servers.

The usual deployment is one vLLM (or SGLang) server per GPU, all serving the same
model. :class:`ServerPool` is a ChatModel over them:

- each request goes to the server with the fewest requests in flight; a tie goes
  to the next server in round-robin order, so an idle pool still spreads;
- a server that fails (connection refused or reset, HTTP 5xx, a reply that is not
  JSON) is ejected for ``cooldown`` seconds (default 30): no request is routed to it
  until then, after which it is tried again. A 429 does not eject: the server is up,
  and the engine's concurrency backs off for it. When every server is ejected the
  request goes to the one whose cool-down ends first;
- the failure itself still reaches the engine, which retries it as any transient
  error; the retry is routed to a healthy server. The pool never retries: policy
  stays in :mod:`evoforge.engine`;
- the identity (and so the response cache key and the run's fingerprint) names
  the backend and model but no server: every server gives the same answer to the
  same request, a cached answer serves whichever server would have been asked,
  and a resume may use another set of servers;
- :meth:`server_report` gives per-server counts (requests, ok, failures,
  ejections, whether ejected now); the runner writes them to the manifest as
  ``servers``.

Backend arguments (``--llm-arg``) reach every server's
:class:`~evoforge.llm.openai_backend.OpenAIChatModel` (``transport``, ``api_key``,
...) except ``cooldown``, which is the pool's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evoforge.errors import ConfigError, RequestRejected, TransientError, redact
from evoforge.llm.base import Completion, Message
from evoforge.llm.openai_backend import OpenAIChatModel

DEFAULT_COOLDOWN = 30.0  # seconds a failing server gets no requests


@dataclass
class ServerState:
    """What the pool knows of one server."""

    url: str
    in_flight: int = 0
    requests: int = 0
    ok: int = 0
    failures: int = 0
    ejections: int = 0
    ejected_until: float = 0.0
    last_error: str = ""

    def report(self, now: float) -> dict[str, Any]:
        return {
            "url": self.url,
            "requests": self.requests,
            "ok": self.ok,
            "failures": self.failures,
            "ejections": self.ejections,
            "ejected": self.ejected_until > now,
            "last_error": self.last_error,
        }


class ServerPool:
    """A ChatModel that spreads one model's requests over several servers (see module)."""

    def __init__(
        self,
        model: str,
        base_urls: list[str],
        *,
        cooldown: float = DEFAULT_COOLDOWN,
        clock: Callable[[], float] = time.monotonic,
        **server_args: Any,
    ) -> None:
        urls = [url.strip() for url in base_urls]
        if len(urls) < 2 or not all(urls):
            raise ConfigError(
                f"--llm openai:{model}@{','.join(base_urls)}: expected two or more "
                "comma-separated base URLs, e.g. openai:MODEL@http://h1:8000/v1,http://h2:8000/v1"
            )
        try:
            cooldown = float(cooldown)
        except (TypeError, ValueError):
            raise ConfigError(f"--llm-arg cooldown={cooldown!r}: expected seconds") from None
        if cooldown < 0:
            raise ConfigError("--llm-arg cooldown must be 0 or more seconds")
        self.model = model.strip()
        self.cooldown = cooldown
        self._clock = clock
        self._servers = [OpenAIChatModel(self.model, base_url=url, **server_args) for url in urls]
        if len({s.base_url for s in self._servers}) < len(self._servers):
            raise ConfigError(f"--llm openai:{model}@...: a base URL is listed twice")
        self._state = [ServerState(redact(server.base_url)) for server in self._servers]
        self._next = 0  # where the round-robin tie-break starts

    @property
    def identity(self) -> dict[str, str]:
        # No server in it: the cache key and the fingerprint do not depend on which one.
        return {"backend": "openai", "model": self.model, "servers": "pool"}

    def pick(self) -> int:
        """The index of the server the next request goes to (see module)."""
        now = self._clock()
        states = self._state
        count = len(states)
        healthy = [i for i in range(count) if states[i].ejected_until <= now]
        if not healthy:
            return min(range(count), key=lambda i: states[i].ejected_until)
        least = min(states[i].in_flight for i in healthy)
        start = self._next
        for step in range(count):
            index = (start + step) % count
            state = states[index]
            if state.in_flight == least and state.ejected_until <= now:
                self._next = (index + 1) % count
                return index
        raise AssertionError("unreachable")  # pragma: no cover

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion:
        index = self.pick()
        state = self._state[index]
        state.in_flight += 1
        state.requests += 1
        try:
            completion = await self._servers[index].complete(messages, schema=schema, **params)
        except TransientError as error:
            state.failures += 1
            state.last_error = redact(str(error))[:200]
            if not error.is_rate_limit:
                self._eject(state)
            raise
        except RequestRejected:
            state.ok += 1  # the server answered; the request was at fault
            raise
        except asyncio.CancelledError:
            raise  # a timeout or a stop: the engine decides; not the server's failure
        else:
            state.ok += 1
            return completion
        finally:
            state.in_flight -= 1

    def _eject(self, state: ServerState) -> None:
        now = self._clock()
        if state.ejected_until <= now:
            state.ejections += 1
        state.ejected_until = now + self.cooldown

    def server_report(self) -> list[dict[str, Any]]:
        """Per server: url, requests, ok, failures, ejections, ejected (now), last_error."""
        now = self._clock()
        return [state.report(now) for state in self._state]

    async def aclose(self) -> None:
        for server in self._servers:
            await server.aclose()
