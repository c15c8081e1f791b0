"""The OpenAI Batch API, spoken over HTTP as the official SDK speaks it.

- ``POST /files`` (multipart: ``purpose=batch`` and the JSONL ``file``) uploads the
  requests, one ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
  "body"}`` a line;
- ``POST /batches`` (``input_file_id``, ``endpoint``, ``completion_window: 24h``)
  creates the batch; ``GET /batches/{id}`` reads its ``status``: ``validating``,
  ``in_progress``, ``finalizing``, then one of ``completed``, ``expired``, ``failed``,
  ``cancelled`` (``cancelling`` on the way there);
- ``GET /files/{id}/content`` downloads the output and error files (JSONL, one line
  per request, each with its ``custom_id``); ``DELETE /files/{id}`` removes a file;
- ``GET /batches?limit=100`` lists recent batches (a resumed run finds a batch it
  created but did not get to record).

Any server that implements these paths works (OpenAI, Azure's v1 API, a proxy, the
fake server in :mod:`evoforge.testing.fake_batches`). Failures are sorted into the
engine's error tree by :func:`evoforge.llm.openai_backend.classify_status`; transient
ones are retried by the run's retry policy.
"""

from __future__ import annotations

import io
import json
import random
from typing import Any

from evoforge.engine.client import RetryPolicy, with_retries
from evoforge.engine.clock import Clock
from evoforge.errors import TransientError

# The API's limits per batch (OpenAI: 50,000 requests and 200 MB per input file).
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
ENDPOINT = "/v1/chat/completions"
TERMINAL = frozenset({"completed", "expired", "failed", "cancelled"})


def request_line(custom_id: str, body: dict[str, Any]) -> bytes:
    """One line of a batch input file."""
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def split_lines(
    lines: list[tuple[str, bytes]], max_requests: int = MAX_REQUESTS, max_bytes: int = MAX_BYTES
) -> list[list[tuple[str, bytes]]]:
    """``(custom_id, line)`` pairs cut into files within both limits, in order."""
    chunks: list[list[tuple[str, bytes]]] = []
    current: list[tuple[str, bytes]] = []
    size = 0
    for item in lines:
        if current and (len(current) >= max_requests or size + len(item[1]) > max_bytes):
            chunks.append(current)
            current, size = [], 0
        current.append(item)
        size += len(item[1])
    if current:
        chunks.append(current)
    return chunks


def read_jsonl(raw: bytes) -> list[dict[str, Any]]:
    """An output or error file's lines (blank or unreadable lines are skipped)."""
    rows = []
    for line in raw.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class BatchAPI:
    """The five calls of the protocol on one aiohttp session, retried by ``retry``."""

    def __init__(
        self, base_url: str, headers: dict[str, str], retry: RetryPolicy | None = None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = headers
        self._retry = retry or RetryPolicy()
        self._jitter = random.Random(0)
        self._clock = Clock()
        self._session: Any = None

    async def upload(self, data: bytes, filename: str) -> dict[str, Any]:
        import aiohttp

        def form() -> Any:
            fields = aiohttp.FormData()
            fields.add_field("purpose", "batch")
            fields.add_field(  # a file object: aiohttp deprecates plain bytes here
                "file", io.BytesIO(data), filename=filename, content_type="application/jsonl"
            )
            return fields

        return await self._call("POST", "/files", form=form)

    async def create(self, input_file_id: str, metadata: dict[str, str]) -> dict[str, Any]:
        body = {
            "input_file_id": input_file_id,
            "endpoint": ENDPOINT,
            "completion_window": "24h",
            "metadata": metadata,
        }
        return await self._call("POST", "/batches", body=body)

    async def retrieve(self, batch_id: str) -> dict[str, Any]:
        return await self._call("GET", f"/batches/{batch_id}")

    async def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        page = await self._call("GET", f"/batches?limit={limit}")
        data = page.get("data") if isinstance(page, dict) else None
        return [b for b in data or [] if isinstance(b, dict)]

    async def content(self, file_id: str) -> bytes:
        return await self._call("GET", f"/files/{file_id}/content", raw=True)

    async def delete(self, file_id: str) -> None:
        await self._call("DELETE", f"/files/{file_id}")

    async def _call(
        self,
        method: str,
        path: str,
        *,
        body: dict[str, Any] | None = None,
        form: Any = None,
        raw: bool = False,
    ) -> Any:
        return await with_retries(
            lambda: self._once(method, path, body, form, raw),
            self._retry,
            self._clock,
            self._jitter,
            lambda: None,
        )

    async def _once(self, method: str, path: str, body: Any, form: Any, raw: bool) -> Any:
        import aiohttp

        from evoforge.llm.openai_backend import classify_status, error_fields

        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers)
        kwargs: dict[str, Any] = {}
        if form is not None:
            kwargs["data"] = form()  # a FormData is read once: a retry builds it again
        elif body is not None:
            kwargs["json"] = body
        try:
            async with self._session.request(method, self.base_url + path, **kwargs) as response:
                data = await response.read()
                status, headers = response.status, response.headers
        except aiohttp.ClientError as exc:
            raise TransientError(f"connection error: {type(exc).__name__}: {exc}") from None
        if status >= 300:
            code, message = error_fields(data, status)
            raise classify_status(status, code=code, message=message, headers=headers)
        if raw:
            return data
        try:
            return json.loads(data)
        except ValueError:
            raise TransientError(f"{method} {path}: a reply that is not JSON") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
