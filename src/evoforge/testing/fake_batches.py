"""The Batch API of the fake server: ``/v1/files`` and ``/v1/batches``.

:class:`FakeBatches` hangs off a :class:`~evoforge.testing.fake_openai.FakeOpenAI` as
``server.batches`` and serves:

* ``POST /v1/files`` (multipart, ``purpose=batch``), ``GET /v1/files/{id}``,
  ``GET /v1/files/{id}/content``, ``DELETE /v1/files/{id}``;
* ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches`` (newest first),
  ``POST /v1/batches/{id}/cancel``.

A batch moves one state per status poll: ``validating`` -> ``in_progress`` ->
``finalizing`` -> ``completed``, and its requests are answered when it finishes, by
the server's own chat pipeline (scripted queue, responder, default reply), so a
batch gets the replies the same requests would get online. What happens is set on
the attributes (all may change while the server runs):

* ``hold``: stay ``in_progress`` while True (a test kills its client meanwhile);
* ``outcome``: ``completed`` (default), ``expired``, ``cancelled`` (the first
  ``done_before_end`` requests are answered, the rest go to the error file with
  ``batch_expired`` / ``batch_cancelled``) or ``failed`` (validation fails, no files);
* ``outcomes``: a list consumed one per batch created, overriding ``outcome``;
* ``error_every``: every k-th request (1-based) gets ``error_status`` in the error file
  (a partial error file).

A malformed input file (bad JSON, a duplicate ``custom_id``, a wrong ``url``) fails
validation as OpenAI's does. Counters: ``batches_created``, ``files_uploaded``,
``files_deleted``, ``batch_requests``; ``files`` holds what is still stored.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode
_ORDER = ("validating", "in_progress", "finalizing")
_END_CODES = {"expired": "batch_expired", "cancelled": "batch_cancelled"}


@dataclass
class _File:
    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
        }


class FakeBatches:
    """Files and batches for one fake server (see the module docstring)."""

    def __init__(self, server: Any, request_cls: Any) -> None:
        self.server = server
        self._request_cls = request_cls
        self.hold = False
        self.outcome = "completed"
        self.outcomes: list[str] = []
        self.done_before_end = 0
        self.error_every: int | None = None
        self.error_status = 500
        self.files: dict[str, _File] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.batches_created = 0
        self.files_uploaded = 0
        self.files_deleted = 0
        self.batch_requests = 0
        self._ids = 0
        self._outcome_of: dict[str, str] = {}

    def add_routes(self, app: web.Application) -> None:
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/files", self._upload)
            app.router.add_get(prefix + "/files/{id}", self._file_info)
            app.router.add_get(prefix + "/files/{id}/content", self._file_content)
            app.router.add_delete(prefix + "/files/{id}", self._file_delete)
            app.router.add_post(prefix + "/batches", self._create)
            app.router.add_get(prefix + "/batches", self._list)
            app.router.add_get(prefix + "/batches/{id}", self._retrieve)
            app.router.add_post(prefix + "/batches/{id}/cancel", self._cancel)

    def _next_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-fake{self._ids:06d}"

    # ------------------------------------------------------------------ files

    async def _upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        purpose, upload = form.get("purpose"), form.get("file")
        if purpose != "batch" or not hasattr(upload, "file"):
            return _error(400, "expected multipart fields purpose=batch and file")
        item = _File(
            self._next_id("file"), upload.filename or "input.jsonl", "batch", upload.file.read()
        )
        self.files[item.id] = item
        self.files_uploaded += 1
        return _ok(item.info())

    async def _file_info(self, request: web.Request) -> web.Response:
        item = self.files.get(request.match_info["id"])
        return _ok(item.info()) if item else _error(404, "No such File object")

    async def _file_content(self, request: web.Request) -> web.Response:
        item = self.files.get(request.match_info["id"])
        if item is None:
            return _error(404, "No such File object")
        return web.Response(body=item.data, content_type="application/octet-stream")

    async def _file_delete(self, request: web.Request) -> web.Response:
        item = self.files.pop(request.match_info["id"], None)
        if item is None:
            return _error(404, "No such File object")
        self.files_deleted += 1
        return _ok({"id": item.id, "object": "file", "deleted": True})

    # ------------------------------------------------------------------ batches

    async def _create(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error(400, "Request body is not valid JSON.")
        file_id = body.get("input_file_id") if isinstance(body, dict) else None
        if file_id not in self.files:
            return _error(400, f"input_file_id {file_id!r} does not exist")
        if body.get("endpoint") != "/v1/chat/completions":
            return _error(400, "endpoint must be /v1/chat/completions")
        if body.get("completion_window") != "24h":
            return _error(400, "completion_window must be 24h")
        now = int(time.time())
        batch = {
            "id": self._next_id("batch"),
            "object": "batch",
            "endpoint": body["endpoint"],
            "errors": None,
            "input_file_id": file_id,
            "completion_window": "24h",
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": None,
            "expires_at": now + 86400,
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": body.get("metadata"),
        }
        self.batches[batch["id"]] = batch
        self.batches_created += 1
        self._outcome_of[batch["id"]] = self.outcomes.pop(0) if self.outcomes else self.outcome
        return _ok(batch)

    async def _list(self, request: web.Request) -> web.Response:
        limit = int(request.query.get("limit", "20"))
        data = list(reversed(self.batches.values()))
        after = request.query.get("after")
        if after in self.batches:
            data = data[[b["id"] for b in data].index(after) + 1 :]
        page = data[:limit]
        last = page[-1]["id"] if page else None
        return _ok(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": last,
                "has_more": len(data) > limit,
            }
        )

    async def _retrieve(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such Batch object")
        await self._advance(batch)
        return _ok(batch)

    async def _cancel(self, request: web.Request) -> web.Response:
        batch = self.batches.get(request.match_info["id"])
        if batch is None:
            return _error(404, "No such Batch object")
        if batch["status"] in _ORDER:
            batch["status"] = "cancelling"
            batch["cancelling_at"] = int(time.time())
            self._outcome_of[batch["id"]] = "cancelled"
        return _ok(batch)

    async def _advance(self, batch: dict[str, Any]) -> None:
        """One step of the state machine per poll."""
        status, now = batch["status"], int(time.time())
        outcome = self._outcome_of[batch["id"]]
        if status == "validating":
            lines, problem = self._validate(batch)
            if problem is not None or outcome == "failed":
                batch.update(
                    status="failed",
                    failed_at=now,
                    errors={
                        "object": "list",
                        "data": [
                            problem
                            or {"code": "invalid_request", "message": "failed", "line": None}
                        ],
                    },
                )
                return
            batch["request_counts"]["total"] = len(lines)
            batch.update(status="in_progress", in_progress_at=now)
        elif status == "in_progress" and not self.hold:
            batch.update(status="finalizing", finalizing_at=now)
        elif status in ("finalizing", "cancelling"):
            await self._finish(batch, outcome)

    def _validate(self, batch: dict[str, Any]) -> tuple[list[dict[str, Any]], Any]:
        lines: list[dict[str, Any]] = []
        seen: set[str] = set()
        raw = self.files[batch["input_file_id"]].data
        for number, text in enumerate(raw.splitlines(), 1):
            try:
                line = json.loads(text)
            except ValueError:
                return [], {"code": "invalid_json_line", "message": "not JSON", "line": number}
            cid = line.get("custom_id") if isinstance(line, dict) else None
            if not isinstance(cid, str) or cid in seen:
                return [], {"code": "duplicate_custom_id", "message": str(cid), "line": number}
            if line.get("url") != batch["endpoint"] or line.get("method") != "POST":
                return [], {"code": "invalid_url", "message": "url/method", "line": number}
            seen.add(cid)
            lines.append(line)
        if not lines:
            return [], {"code": "empty_file", "message": "the input file is empty", "line": None}
        return lines, None

    async def _finish(self, batch: dict[str, Any], outcome: str) -> None:
        lines, _ = self._validate(batch)
        end = _END_CODES.get(outcome)
        answered = len(lines) if end is None else min(self.done_before_end, len(lines))
        output, errors = [], []
        for number, line in enumerate(lines, 1):
            row_id = f"batch_req_{batch['id']}_{number}"
            if number > answered:
                errors.append(
                    {
                        "id": row_id,
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": end, "message": f"the batch {outcome}"},
                    }
                )
                continue
            status, body = await self._answer(line)
            if self.error_every and number % self.error_every == 0:
                status, body = (
                    self.error_status,
                    {
                        "error": {
                            "message": "fake item failure",
                            "type": "server_error",
                            "code": None,
                        }
                    },
                )
            row = {
                "id": row_id,
                "custom_id": line["custom_id"],
                "error": None,
                "response": {"status_code": status, "request_id": row_id, "body": body},
            }
            (output if status == 200 else errors).append(row)
        for rows, key in ((output, "output_file_id"), (errors, "error_file_id")):
            if rows:
                item = _File(
                    self._next_id("file"),
                    f"{batch['id']}_{key}.jsonl",
                    "batch_output",
                    b"".join(_DUMPS(r).encode() + b"\n" for r in rows),
                )
                self.files[item.id] = item
                batch[key] = item.id
        counts = batch["request_counts"]
        counts.update(completed=len(output), failed=len(errors))
        final = outcome if end is not None else "completed"
        batch.update(status=final, **{f"{final}_at": int(time.time())})

    async def _answer(self, line: dict[str, Any]) -> tuple[int, Any]:
        """The reply the same request would get online."""
        server = self.server
        self.batch_requests += 1
        fake = self._request_cls(self.batch_requests, line["url"], line.get("body"), {})
        reply = await server._resolve(fake, server._queue.popleft() if server._queue else None)
        if isinstance(reply, dict):
            return 200, reply
        if reply.body is not None:
            return reply.status, reply.body
        if reply.status != 200 or reply.disconnect:
            status = reply.status if reply.status != 200 else 500
            return status, {"error": reply.error or {"message": "dropped", "code": None}}
        return 200, json.loads(server._completion_body(fake, reply))


def _ok(payload: dict[str, Any]) -> web.Response:
    return web.Response(body=_DUMPS(payload).encode(), content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}
    }
    return web.Response(body=_DUMPS(body).encode(), status=status, content_type="application/json")
