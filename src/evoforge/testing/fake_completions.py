"""Raw-text completions on the fake server: ``POST /v1/completions``.

:class:`FakeCompletions` hangs off a :class:`~evoforge.testing.fake_openai.FakeOpenAI`
as ``server.text_completions``. A request's ``prompt`` (a string) gets back
``choices[0].text``, decided by ``responder`` (``(FakeRequest) -> str | Reply | None``,
sync or async; a :class:`~evoforge.testing.fake_openai.Reply` with a status other than
200 answers that error), else the default ``"COMPLETION: " + prompt[-60:]``. The
server's ``latency`` applies. Counters: ``hits``; ``requests`` holds every request
(unless the server's ``record`` is off). Chat completions are not affected.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from typing import Any

from aiohttp import web

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def _error(status: int, message: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return web.Response(body=_DUMPS(body).encode(), status=status, content_type="application/json")


class FakeCompletions:
    """``/v1/completions`` for one fake server (see the module docstring)."""

    def __init__(self, server: Any, request_cls: type) -> None:
        self.server = server
        self.request_cls = request_cls
        self.responder: Any = None
        self.hits = 0
        self.requests: list[Any] = []

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/completions", self.handle)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "Request body is not valid JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            return _error(400, "'prompt' must be a string.")
        fake = self.request_cls(self.hits, request.path, body, request.headers)
        if self.server.record:
            self.requests.append(fake)
        result = self.responder(fake) if self.responder is not None else None
        if inspect.isawaitable(result):
            result = await result
        if self.server.latency > 0:
            await asyncio.sleep(self.server.latency)
        if result is not None and not isinstance(result, str):  # a Reply
            if getattr(result, "status", 200) != 200:
                message = (getattr(result, "error", None) or {}).get("message", "error")
                return _error(int(result.status), str(message))
            result = result.content
        text = result if isinstance(result, str) else "COMPLETION: " + body["prompt"][-60:]
        prompt_tokens = max(1, len(body["prompt"]) // 4)
        completion_tokens = max(1, len(text.split()))
        reply = {
            "id": f"cmpl-fake-{self.hits}", "object": "text_completion",
            "created": int(time.time()), "model": body.get("model") or "fake-model",
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }  # fmt: skip
        return web.Response(body=_DUMPS(reply).encode(), content_type="application/json")
