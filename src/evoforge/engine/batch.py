"""``--batch``: a ChatModel that sends its calls through the OpenAI Batch API.

It sits under the engine, in place of the backend: the cache, budgets, accounting and
every step above see an ordinary model whose calls take long. Calls are collected
while they keep coming; once the run has gone quiet for ``window`` seconds (every seed
waits on a reply) they go out as one batch, cut at the API's limits. A multi-stage
command therefore runs stage by stage: the seed questions of every sample are one
batch, their rewrites the next, the critics the one after.

- ``custom_id`` is the hash of the request body, so a re-run asks for the same ids.
- The store (``OUT.batches.db`` beside the journal) records each input file and batch
  id before and after it is created, and every reply once downloaded: a run killed
  while polling resumes polling the same batch (a batch created but not yet recorded
  is found again by its input file) and never submits a second one.
- Items that expired, were cancelled or failed with a transient error are retried
  online (``--batch-retry online``, the default) or in a new batch (``batch``; after
  ``BATCH_ROUNDS`` batches the rest go online). A request the server refused (a 400)
  becomes the record's rejection, as online.
- Input and output files are deleted once read, unless ``keep_files``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evoforge.engine.batch_api import (
    MAX_BYTES,
    MAX_REQUESTS,
    TERMINAL,
    BatchAPI,
    read_jsonl,
    request_line,
    split_lines,
)
from evoforge.engine.client import RetryPolicy
from evoforge.errors import RequestRejected, RunStopped, TransientError
from evoforge.llm.base import Completion, Message
from evoforge.llm.openai_backend import OpenAIChatModel, classify_status, completion_from

RETRY_MODES = ("online", "batch")
BATCH_ROUNDS = 3  # batches an item may go through before it is sent online
_RETRY = object()  # an item to send again (expired, cancelled, transient failure)


def custom_id(body: dict[str, Any]) -> str:
    blob = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "ev-" + hashlib.sha256(blob.encode()).hexdigest()[:40]


def store_path(journal: Path) -> Path:
    """``OUT.batches.db`` for the journal ``OUT.journal.db``."""
    name = journal.name
    stem = name[: -len(".journal.db")] if name.endswith(".journal.db") else journal.stem
    return journal.with_name(f"{stem}.batches.db")


class BatchStore:
    """Submissions (input file, batch id, state) and downloaded replies, in SQLite."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS batches (
                local INTEGER PRIMARY KEY, input_file_id TEXT, batch_id TEXT,
                status TEXT, output_file_id TEXT, error_file_id TEXT,
                requests INTEGER, finished INTEGER DEFAULT 0, cleaned INTEGER DEFAULT 0,
                created REAL);
            CREATE TABLE IF NOT EXISTS items (custom_id TEXT, local INTEGER);
            CREATE INDEX IF NOT EXISTS items_by_id ON items (custom_id);
            CREATE TABLE IF NOT EXISTS results (custom_id TEXT PRIMARY KEY, body TEXT);
            """
        )

    def new_submission(self, ids: list[str]) -> int:
        with self.conn:
            self.conn.execute("BEGIN")
            cur = self.conn.execute(
                "INSERT INTO batches (requests, status, created) VALUES (?, 'uploading', ?)",
                (len(ids), time.time()),
            )
            local = int(cur.lastrowid or 0)
            self.conn.executemany("INSERT INTO items VALUES (?, ?)", [(cid, local) for cid in ids])
        return local

    def update(self, local: int, **values: Any) -> None:
        names = ", ".join(f"{name} = ?" for name in values)
        self.conn.execute(f"UPDATE batches SET {names} WHERE local = ?", (*values.values(), local))

    def live(self) -> list[dict[str, Any]]:
        cur = self.conn.execute("SELECT * FROM batches WHERE finished = 0 ORDER BY local")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def unclean(self) -> list[dict[str, Any]]:
        cur = self.conn.execute(
            "SELECT local, input_file_id, output_file_id, error_file_id FROM batches "
            "WHERE finished = 1 AND cleaned = 0"
        )
        return [dict(zip(("local", "input", "output", "error"), r, strict=True)) for r in cur]

    def live_batch_of(self, cid: str) -> int | None:
        row = self.conn.execute(
            "SELECT b.local FROM items i JOIN batches b ON b.local = i.local "
            "WHERE i.custom_id = ? AND b.finished = 0 LIMIT 1",
            (cid,),
        ).fetchone()
        return None if row is None else int(row[0])

    def items_of(self, local: int) -> list[str]:
        rows = self.conn.execute("SELECT custom_id FROM items WHERE local = ?", (local,))
        return [r[0] for r in rows]

    def put_results(self, rows: list[tuple[str, str]]) -> None:
        with self.conn:
            self.conn.execute("BEGIN")
            self.conn.executemany("INSERT OR REPLACE INTO results VALUES (?, ?)", rows)

    def result(self, cid: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT body FROM results WHERE custom_id = ?", (cid,)).fetchone()
        return None if row is None else json.loads(row[0])

    def batch_ids(self) -> list[str]:
        rows = self.conn.execute(
            "SELECT batch_id FROM batches WHERE batch_id IS NOT NULL ORDER BY local"
        )
        return [r[0] for r in rows]

    def close(self) -> None:
        self.conn.close()


class BatchChatModel:
    """An :class:`OpenAIChatModel` whose calls go out as Batch API jobs."""

    def __init__(
        self,
        inner: OpenAIChatModel,
        *,
        retry: RetryPolicy | None = None,
        retry_mode: str = "online",
        keep_files: bool = False,
        poll: float = 10.0,
        max_poll: float = 60.0,
        window: float = 0.2,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
    ) -> None:
        if retry_mode not in RETRY_MODES:
            raise ValueError(f"retry_mode must be one of {RETRY_MODES}")
        self.inner = inner
        self.api = BatchAPI(inner.base_url, inner.auth_headers(), retry)
        self.retry_mode = retry_mode
        self.keep_files = keep_files
        self.poll, self.max_poll, self.window = poll, max_poll, window
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.store = BatchStore(":memory:")
        self.batch_state = "collecting"
        self.on_state: Callable[[], None] | None = None
        self.counts = {"requests": 0, "retried_online": 0, "retried_batch": 0, "from_store": 0}
        self._waiting: dict[str, list[asyncio.Future[Any]]] = {}
        self._queue: dict[str, bytes] = {}
        self._collector: asyncio.Task[None] | None = None
        self._pollers: dict[int, asyncio.Task[None]] = {}
        self._rounds: dict[str, int] = {}
        self._online: set[str] = set()
        self._seeds: Any = None  # the runner's seed tasks in flight
        self._waiters: dict[asyncio.Future[Any], Any] = {}  # unresolved -> its task
        self._attached: str | None = None

    @property
    def identity(self) -> dict[str, str]:
        return self.inner.identity  # the same cache keys as online

    def attach(self, journal: Path, *, overwrite: bool = False, seeds: Any = None) -> None:
        """Keep the store beside the run's journal (the runner calls this), so a re-run
        of the same command resumes the batches this one submitted. ``seeds``: the run's
        seed tasks in flight; once each of them waits on a reply, a stage is complete."""
        self._seeds = seeds
        path = store_path(Path(journal))
        if self._attached == str(path):
            return
        if overwrite:
            for tail in ("", "-wal", "-shm"):
                Path(f"{path}{tail}").unlink(missing_ok=True)
        self.store.close()
        self.store = BatchStore(path)
        self._attached = str(path)
        for row in self.store.live():
            self._ensure_poller(row["local"])
        if self.store.unclean() and not self.keep_files:
            asyncio.get_running_loop().create_task(self._clean_all())

    async def complete(
        self, messages: list[Message], *, schema: dict[str, Any] | None = None, **params: Any
    ) -> Completion:
        body = self.inner.request_body(messages, schema, params)
        cid = custom_id(body)
        self.counts["requests"] += 1
        while True:
            if cid in self._online:
                return await self.inner.complete(messages, schema=schema, **params)
            reply = self.store.result(cid)
            if reply is None:
                reply = await self._wait(cid, body)
            else:
                self.counts["from_store"] += 1
            if reply is not _RETRY:
                return self._completion(cid, reply)
            if self.retry_mode == "online" or self._rounds.get(cid, 0) >= BATCH_ROUNDS:
                self.counts["retried_online"] += 1
                self._online.add(cid)  # the engine's own retries of it stay online too
                return await self.inner.complete(messages, schema=schema, **params)
            self.counts["retried_batch"] += 1

    def _completion(self, cid: str, reply: dict[str, Any]) -> Completion:
        status = int(reply.get("status_code") or 0)
        body = reply.get("body")
        if status == 200:
            return completion_from(body, self.inner.model)
        error = body.get("error") if isinstance(body, dict) else None
        error = error if isinstance(error, dict) else {}
        raise classify_status(
            status or 500,
            code=str(error.get("code") or ""),
            message=str(error.get("message") or f"batch item {cid}: HTTP {status}"),
            headers=None,
        )

    async def _wait(self, cid: str, body: dict[str, Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        first = cid not in self._waiting
        self._waiting.setdefault(cid, []).append(future)
        self._waiters[future] = asyncio.current_task()
        if first:
            local = self.store.live_batch_of(cid)
            if local is not None:
                self._ensure_poller(local)  # submitted by an earlier run: poll it
            else:
                self._queue[cid] = request_line(cid, body)
                if self._collector is None or self._collector.done():
                    self._collector = asyncio.create_task(self._collect())
        return await future

    def _resolve(self, cid: str, value: Any) -> None:
        for future in self._waiting.pop(cid, []):
            self._waiters.pop(future, None)
            if future.done():
                continue
            if isinstance(value, BaseException):
                future.set_exception(_fresh(value))  # one instance per caller
            else:
                future.set_result(value)

    def _set_state(self, state: str) -> None:
        self.batch_state = state
        if self.on_state is not None:
            self.on_state()

    def _stage_complete(self) -> bool:
        """Every seed task of the run waits on a reply: nothing more will come."""
        if self._seeds is None:
            return False
        waiting = {task for task in self._waiters.values() if task is not None}
        return len(waiting) >= len(self._seeds) > 0

    async def _collect(self) -> None:
        """Submit what is queued, stage after stage, until nothing is (calls queued while
        a batch uploads go in the next one)."""
        while self._queue:
            await self._stage_end()
            queued, self._queue = self._queue, {}
            for chunk in split_lines(list(queued.items()), self.max_requests, self.max_bytes):
                try:
                    await self._submit(chunk)
                except Exception as exc:  # never leave a caller waiting: each gets the failure
                    failure = _submit_failure(exc)
                    for cid, _line in chunk:
                        self._resolve(cid, failure)

    async def _stage_end(self) -> None:
        """Wait until the stage is complete -- every seed waits on a reply -- or, where
        that cannot be told (calls made from helper tasks), until the calls stopped
        coming for ``window`` seconds of an idle event loop; or until a batch is full."""
        tick, quiet = min(self.window, 0.02), 0.0
        while len(self._queue) < self.max_requests:
            await asyncio.sleep(0)
            if self._stage_complete():
                break
            size, started = len(self._queue), time.monotonic()
            await asyncio.sleep(tick)
            lag = time.monotonic() - started - tick  # a busy loop is not a quiet one
            quiet = quiet + tick if len(self._queue) == size and lag < tick else 0.0
            if quiet >= self.window:
                break

    async def _submit(self, chunk: list[tuple[str, bytes]]) -> None:
        ids = [cid for cid, _ in chunk]
        for cid in ids:
            self._rounds[cid] = self._rounds.get(cid, 0) + 1
        local = self.store.new_submission(ids)
        self._set_state(f"uploading {len(ids)} requests")
        uploaded = await self.api.upload(
            b"".join(line for _, line in chunk), f"evoforge-{local}.jsonl"
        )
        self.store.update(local, input_file_id=uploaded["id"], status="uploaded")
        batch = await self.api.create(uploaded["id"], {"evoforge_submission": str(local)})
        self.store.update(local, batch_id=batch["id"], status=batch.get("status") or "validating")
        self._ensure_poller(local)

    def _ensure_poller(self, local: int) -> None:
        task = self._pollers.get(local)
        if task is None or task.done():
            self._pollers[local] = asyncio.get_running_loop().create_task(self._follow(local))

    async def _follow(self, local: int) -> None:
        try:
            await self._poll(local)
        except Exception as exc:  # never leave a caller waiting: each gets the failure
            failure = _submit_failure(exc)
            for cid in self.store.items_of(local):
                self._resolve(cid, failure)

    async def _poll(self, local: int) -> None:
        row = next((r for r in self.store.live() if r["local"] == local), None)
        if row is None:
            return
        if row["batch_id"] is None:
            row = await self._recover(row)
            if row is None:
                for cid in self.store.items_of(local):
                    self._resolve(cid, _RETRY)
                return
        wait = self.poll
        while True:
            batch = await self.api.retrieve(row["batch_id"])
            status = str(batch.get("status") or "")
            counts = batch.get("request_counts") or {}
            self._set_state(
                f"batch {row['batch_id'][-8:]} {status} "
                f"{counts.get('completed', 0)}/{counts.get('total', row['requests'])}"
            )
            self.store.update(local, status=status)
            if status in TERMINAL:
                break
            await asyncio.sleep(wait)
            wait = min(self.max_poll, wait * 1.5)
        await self._collect_results(local, batch)

    async def _recover(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """A submission killed between upload and recording its batch id: find its batch
        by input file; without one, the file never became a batch (its items go again)."""
        if row["input_file_id"] is not None:
            for batch in await self.api.recent():
                if batch.get("input_file_id") == row["input_file_id"]:
                    self.store.update(row["local"], batch_id=batch["id"])
                    return {**row, "batch_id": batch["id"]}
        self.store.update(row["local"], finished=1, status="never_created")
        return None

    async def _collect_results(self, local: int, batch: dict[str, Any]) -> None:
        output_id, error_id = batch.get("output_file_id"), batch.get("error_file_id")
        rows = []
        for file_id in (output_id, error_id):
            if file_id:
                rows += read_jsonl(await self.api.content(file_id))
        answered: dict[str, Any] = {}
        keep: list[tuple[str, str]] = []
        for row in rows:
            cid, reply = row.get("custom_id"), row.get("response")
            if not isinstance(cid, str):
                continue
            status = int(reply.get("status_code") or 0) if isinstance(reply, dict) else 0
            if status == 200 or (status and _final_status(status)):
                answered[cid] = reply
                keep.append((cid, json.dumps(reply, ensure_ascii=False)))
        self.store.put_results(keep)
        self.store.update(
            local, finished=1, status=batch.get("status"), output_file_id=output_id,
            error_file_id=error_id,
        )  # fmt: skip
        for cid in self.store.items_of(local):
            self._resolve(cid, answered.get(cid, _RETRY))
        if not self.keep_files:
            await self._clean_all()

    async def _clean_all(self) -> None:
        for row in self.store.unclean():
            for file_id in (row["input"], row["output"], row["error"]):
                if file_id:
                    # already gone, or the server keeps it: nothing to lose
                    with contextlib.suppress(TransientError, RequestRejected):
                        await self.api.delete(file_id)
            self.store.update(row["local"], cleaned=1)

    def batch_summary(self) -> dict[str, Any]:
        """For the manifest: the batch ids and what went how."""
        return {"ids": self.store.batch_ids(), **self.counts, "retry": self.retry_mode}

    async def aclose(self) -> None:
        for task in self._pollers.values():
            task.cancel()
        if self._collector is not None:
            self._collector.cancel()
        await asyncio.gather(
            *self._pollers.values(), *([self._collector] if self._collector else []),
            return_exceptions=True,
        )  # fmt: skip
        await self.api.aclose()
        await self.inner.aclose()
        self.store.close()


def _fresh(exc: BaseException) -> BaseException:
    """A copy of ``exc`` for one more caller: an instance raised in many tasks would
    grow one traceback without end."""
    import copy

    try:
        return copy.copy(exc).with_traceback(None)
    except Exception:  # an exception type that cannot be copied
        return RequestRejected("batch_error", f"{type(exc).__name__}: {exc}")


def _final_status(status: int) -> bool:
    """A per-item HTTP status that a retry would not change (a 400, 404, 422 ...)."""
    return status < 500 and status not in (408, 409, 429)


def _submit_failure(exc: Exception) -> Any:
    """What the items of a batch that could not be submitted or followed get: a transient
    failure retries them (online or in the next batch), anything else is their error."""
    if isinstance(exc, TransientError):
        return _RETRY
    if isinstance(exc, RequestRejected) and exc.status == 404:
        return RunStopped(
            "batch_unsupported",
            f"the server has no Batch API ({exc}); run without --batch",
        )
    if isinstance(exc, RequestRejected | RunStopped):
        return exc
    return RequestRejected("batch_error", f"{type(exc).__name__}: {str(exc)[:300]}")
