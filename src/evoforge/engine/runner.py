"""The streaming scheduler: seeds in, records and rejections out, never losing work.

Each seed flows through its task (an ``async (record, ctx) -> Result``
function) as its own asyncio task; at most ``max_tasks`` exist at once and the
client bounds the requests in flight, so memory does not grow with the input.
Finished seeds go to the journal as they finish, group-committed: pending rows
and cache entries are committed together right before the next request goes
out (and by a background flusher when none does), so a ``kill -9`` costs at most
the requests that were in flight. A re-run of the same command skips them, and
the output files are replaced atomically at the end, from the journal, in input
order.

The files beside ``OUT`` are named in :mod:`evoforge.io.layout`; the final write
is :mod:`evoforge.engine.final_write`, signals are :mod:`evoforge.engine.signals`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time
import traceback
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoforge.engine.client import LLMClient
from evoforge.engine.context import RecordContext, derive_rng
from evoforge.engine.efficiency import efficiency_block
from evoforge.engine.final_write import Selector, derivable, seed_counts, write_journal
from evoforge.engine.order import grouped
from evoforge.engine.signals import DEFAULT_DRAIN_SECONDS, install_stop_handlers
from evoforge.engine.store import Journal
from evoforge.errors import EvoforgeError, InputError, RequestRejected, RunStopped, redact
from evoforge.io.disk import failed_write
from evoforge.io.layout import output_paths
from evoforge.io.outputs import OutputWriter, update_manifest, write_manifest
from evoforge.io.writers import format_for
from evoforge.llm.prices import cost_block
from evoforge.records import Record, schema_error
from evoforge.steps import Rejection, Result

# Moved; still importable from here.
__all__ = [
    "DEFAULT_DRAIN_SECONDS", "RecordContext", "Rejection", "Result", "Run", "RunSummary",
    "Selector", "SeedItem", "Task", "derive_rng", "output_paths", "update_manifest",
]  # fmt: skip

# Rejections caused by the environment rather than the record: a re-run retries them.
RETRY_ON_RESUME = frozenset(
    {"retries_exhausted", "http_401", "http_403", "http_404", "backend_error", "internal_error"}
)


Task = Callable[[Record, RecordContext], Awaitable[Result]]


SeedItem = Record | InputError


@dataclass
class RunSummary:
    status: str  # "complete" or "stopped"
    stop_reason: str | None
    message: str
    accepted: int
    rejected: int
    rejected_by_reason: dict[str, int]
    skipped_done: int
    out: Path
    rejects: Path
    manifest: Path
    wall_s: float
    usage: dict[str, dict[str, int]]
    extra: dict[str, Any] = field(default_factory=dict)  # what a driver adds (coverage, ...)
    steps: dict[str, Any] = field(default_factory=dict)  # per step: in, kept, rejected

    @property
    def exit_code(self) -> int:
        """0 complete; 130 interrupted; 4 out of quota; 3 any other early stop, or a
        complete exact-N run (``rag``, ``in2``) that fell short of its count."""
        if self.status == "complete":
            return 3 if self.extra.get("shortfall") else 0
        return STOP_EXIT_CODES.get(self.stop_reason or "", 3)

    def to_dataset(self, to: str | None = None) -> Any:
        """The accepted records as a ``datasets.Dataset``; ``to="messages"`` (or
        ``"alpaca"``, ``"sharegpt"``) as that export's rows (see :mod:`evoforge.io.datasets`)."""
        from evoforge.io.datasets import to_dataset

        return to_dataset(self.out, to=to)

    def to_pandas(self) -> Any:
        """``.kept``, ``.rejected``, ``.funnel()``, ``.by_reason()`` as DataFrames
        (:mod:`evoforge.io.run_frames`)."""
        from evoforge.io.run_frames import RunFrames

        return RunFrames(self.out)

    def _repr_mimebundle_(self, **_: Any) -> dict[str, str]:  # a table in a notebook
        from evoforge.notebook import summary_bundle

        return summary_bundle(self)


# The exit code of a stopped run, by stop reason; every other reason exits 3.
STOP_EXIT_CODES = {"interrupted": 130, "insufficient_quota": 4}
# Stops that the server ordered: every seed still waiting is cancelled, none is sent.
SERVER_STOPS = frozenset({"insufficient_quota", "retry_after_too_long"})


def fingerprint(config: dict[str, Any]) -> str:
    blob = json.dumps(config, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class Run:
    """One command's run over a stream of seeds.

    ``config`` describes everything that shapes the output (model identity,
    params, prompt hashes, seed, operator settings); it is stored in the
    manifest, and its hash guards the journal against resuming a different run.
    ``settings`` (concurrency, limits, budgets) go to the manifest only, so a
    resume may change them.
    """

    def __init__(
        self,
        *,
        command: str,
        task: Task,
        kind: str,
        client: LLMClient,
        out: str | Path,
        config: dict[str, Any],
        seed: int = 0,
        overwrite: bool = False,
        max_tasks: int | None = None,
        progress: Callable[[dict[str, int]], None] | None = None,
        settings: dict[str, Any] | None = None,
        out_format: str | None = None,
        select: Callable[[], Selector] | None = None,
        executor: Any = None,
    ) -> None:
        self.command = command
        # None: this process's asyncio scheduler; else its ``schedule(run, items)`` works
        # the seeds (engine/ray_executor.py: shards as Ray tasks)
        self.executor = executor
        self.task = task
        self.kind = kind
        self.client = client
        self.paths = output_paths(Path(out))
        self.out_format = format_for(self.paths["out"], out_format)
        self.select = select
        self.extra_manifest: dict[str, Any] = {}  # set by a driver, e.g. corpus coverage
        self.config = config
        self.seed = seed
        self.overwrite = overwrite
        concurrency = client.limits.concurrency
        self.max_tasks = max_tasks or max(2 * concurrency, concurrency + 8)
        self.progress = progress
        self.settings = settings or {}  # engine settings: in the manifest, not the fingerprint
        self.counts: Counter[str] = Counter()
        self._stop: RunStopped | None = None
        self._pending: set[asyncio.Task[None]] = set()

    async def execute(self, items: Iterable[SeedItem]) -> RunSummary:
        started = time.time()
        t0 = time.perf_counter()
        self.paths["out"].parent.mkdir(parents=True, exist_ok=True)
        journal = Journal(
            self.paths["journal"],
            fingerprint({"command": self.command, **self.config}),
            overwrite=self.overwrite,
        )
        if journal.moved_aside is not None:
            print(
                f"evoforge: warning: {self.paths['journal']} could not be read "
                f"({journal.unreadable_because}); moved aside to {journal.moved_aside} and "
                "starting a new journal (finished calls come back from the response cache, "
                "if it is on).",
                file=sys.stderr,
            )
        self._journal = journal
        limiter = self.client.concurrency
        if limiter.maximum < limiter.requested:
            print(
                f"evoforge: note: concurrency {limiter.requested} lowered to "
                f"{limiter.maximum}: the open-file limit (ulimit -n) allows no more sockets",
                file=sys.stderr,
            )
        self._dirty = asyncio.Event()
        self.client.before_send = self._before_send
        flusher = asyncio.create_task(self._flush_loop())
        pending: set[asyncio.Task[None]] = set()
        self._pending = pending
        attach = getattr(self.client.model, "attach", None)  # --batch: store beside journal
        if attach is not None:
            attach(self.paths["journal"], overwrite=self.overwrite, seeds=pending)
            self.client.model.on_state = self._report
        restore = install_stop_handlers(pending, self._interrupt)
        try:
            try:
                if self.executor is None:
                    await self._schedule(items, pending)
                else:
                    await self.executor.schedule(self, items)
            finally:
                self.client.before_send = None
                restore()
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
                flusher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await flusher
                self._flush()
        except BaseException:
            # A run that stops with an error (bad input, a stop) still closes its journal:
            # Python 3.13 warns of an unclosed database, an error under the test suite.
            with contextlib.suppress(Exception):
                journal.close()
            raise
        try:
            summary = self._finalize(started, time.perf_counter() - t0)
        finally:
            journal.close()
            if self.client.cache is not None:
                self.client.cache.flush()
        return summary

    async def _schedule(self, items: Iterable[SeedItem], pending: set[asyncio.Task[None]]) -> None:
        # A semaphore, not asyncio.wait(FIRST_COMPLETED): that re-registers a callback on
        # every pending task per completion, O(max_tasks) CPU for each record.
        slots = asyncio.Semaphore(self.max_tasks)
        fatal: list[BaseException] = []

        def finished(task: asyncio.Task[None]) -> None:
            pending.discard(task)
            slots.release()
            exc = None if task.cancelled() else task.exception()
            if isinstance(exc, RunStopped):
                self._note_stop(exc)
            elif exc is not None:
                fatal.append(exc)
                if self._stop is None:
                    self._stop = RunStopped("error", str(exc))

        for seq, item in self._numbered(items):
            if self._stop is not None:
                break
            if not self._journal.first_sighting(_item_id(item)):
                self._reject_duplicate(seq, item)
                continue
            if self._journal.is_done(_item_id(item)):
                self.counts["skipped_done"] += 1
                self._report()
                continue
            await slots.acquire()
            if self._stop is not None:
                slots.release()
                break
            task = asyncio.create_task(self._process(seq, item))
            pending.add(task)
            task.add_done_callback(finished)
        if pending:
            await asyncio.wait(set(pending))
        if fatal:
            raise fatal[0]

    def _numbered(self, items: Iterable[Any]) -> Iterable[tuple[int, SeedItem]]:
        """Each seed with its position in the input (a shard's come numbered), in the
        order they run: a task with a ``group_key(seed)`` runs the seeds of one group
        one after another (see :func:`grouped`)."""
        group_key = getattr(self.task, "group_key", None)
        return enumerate(items) if group_key is None else grouped(enumerate(items), group_key)

    def _reject_duplicate(self, seq: int, item: SeedItem) -> None:
        """A seed id met again: the first one is processed, this one is rejected (and
        journaled under its own key, so a resume does not redo or repeat it)."""
        seed_id = _item_id(item)
        key = f"{seed_id}#duplicate-{seq}"
        if self._journal.is_done(key):
            self.counts["skipped_done"] += 1
            return
        record = item.to_json() if isinstance(item, Record) else None
        rejection = Rejection(
            seed_id, "duplicate_id", f"seed id {seed_id!r} appears again (input item {seq + 1})"
            "; the first one is kept", record,
        )  # fmt: skip
        self._journal.add(seq, key, [], [rejection.to_json()], final=True)
        self.counts["rejected"] += 1
        self._dirty.set()

    async def _process(self, seq: int, item: SeedItem) -> None:
        if isinstance(item, InputError):
            records: list[dict[str, Any]] = []
            problems = [Rejection(_item_id(item), "bad_seed", str(item))]
            counts = None  # the final write derives them from the row
        else:
            records, problems, counts = await self._run_seed(item, seq)
        rejections = [r.to_json() for r in problems]
        for rejection in rejections:  # a server's error message may quote a URL or key
            rejection["detail"] = redact(rejection["detail"])
        final = not any(r.reason in RETRY_ON_RESUME for r in problems)
        self._journal.add(seq, _item_id(item), records, rejections, final=final, steps=counts)
        self.counts["seeds_done"] += 1
        self.counts["accepted"] += len(records)
        self.counts["rejected"] += len(rejections)
        self._dirty.set()
        self._report()

    async def _run_seed(
        self, seed: Record, seq: int
    ) -> tuple[list[dict[str, Any]], list[Rejection], dict[str, Any]]:
        """The task on one seed, each record it made checked against its kind's schema;
        with what the task and the check counted."""
        ctx = RecordContext(self.client, self.seed, seed.id, seq)
        result = await self._run_task(seed, ctx)
        records, rejections = [], list(result.rejections)
        for record in result.records:
            data = record.to_json()
            problem = schema_error(data, self.kind)
            if problem is None:
                records.append(data)
            else:
                rejections.append(Rejection(record.id, "schema_invalid", problem, data))
        task_reasons = [r.reason for r in result.rejections]
        if not ctx.counts and derivable(task_reasons):
            return records, rejections, None  # the final write derives them from the row
        counts = seed_counts(
            self.command, made=len(result.records), task_reasons=task_reasons,
            schema_reasons=["schema_invalid"] * (len(result.records) - len(records)),
        )  # fmt: skip
        counts.add(ctx.counts.to_json())  # what the steps inside the task counted
        return records, rejections, counts.to_json()

    async def _run_task(self, record: Record, ctx: RecordContext) -> Result:
        try:
            return await self.task(record, ctx)
        except RequestRejected as exc:
            return Result.reject(record, exc.reason, str(exc))
        except RunStopped as exc:
            self._note_stop(exc)  # now, before another task's request goes out
            raise
        except (EvoforgeError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug in a task must not take the other records down
            where = traceback.extract_tb(exc.__traceback__)[-1]
            detail = redact(
                f"{type(exc).__name__}: {exc} ({Path(where.filename).name}:{where.lineno})"
            )
            print(f"evoforge: internal error on {record.id}: {detail}", file=sys.stderr)
            return Result.reject(record, "internal_error", detail)

    def _note_stop(self, stop: RunStopped) -> None:
        if self._stop is None:
            self._stop = stop
        if stop.reason in SERVER_STOPS:
            for task in self._pending:
                if task is not asyncio.current_task():
                    task.cancel()

    def _before_send(self) -> None:
        # The server said stop (no quota, come back in an hour): no request goes out,
        # not even from seeds that were already waiting for a slot.
        if self._stop is not None and self._stop.reason in SERVER_STOPS:
            raise RunStopped(self._stop.reason, str(self._stop))
        self._flush()

    def _report(self) -> None:
        if self.progress is not None:
            stats = dict(self.counts)
            stats["calls"] = self.client.calls_sent
            stats["tokens"] = self.client.tokens_used
            if hasattr(self.client.model, "batch_state"):
                stats["batch"] = self.client.model.batch_state  # the bar shows it
            self.progress(stats)

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            self._flush()
            await asyncio.sleep(0.01)  # let finished records gather into one commit

    def _flush(self) -> None:
        self._journal.flush()
        if self.client.cache is not None:
            with failed_write(self.client.cache.path):  # a full disk: exit 3, not a reject
                self.client.cache.flush()

    def _interrupt(self) -> bool:
        """A stop signal: the run stops as interrupted; True when it already had been."""
        if self._stop is not None and self._stop.reason == "interrupted":
            return True
        if self._stop is None:
            self._stop = RunStopped(
                "interrupted", "interrupted; finished seeds are saved in the journal"
            )
        return False

    def _finalize(self, started: float, wall_s: float) -> RunSummary:
        paths = self.paths
        selector = self.select() if self.select is not None else None
        with OutputWriter(paths["out"], fmt=self.out_format, paced=True) as output:
            written = write_journal(
                self._journal.rows(), output, task_step=self.command, selector=selector
            )
        accepted, rejected = written.accepted, written.rejected
        stop = self._stop
        status = "complete" if stop is None else "stopped"
        message = (
            f"{accepted} records, {rejected} rejected"
            if stop is None
            else f"stopped ({stop.reason}): {stop}. {accepted} records kept; "
            "re-run the same command to resume."
        )
        summary = RunSummary(
            status=status,
            stop_reason=stop.reason if stop else None,
            message=message,
            accepted=accepted,
            rejected=rejected,
            rejected_by_reason=written.rejected_by_reason,
            skipped_done=self.counts["skipped_done"],
            out=paths["out"],
            rejects=paths["rejects"],
            manifest=paths["manifest"],
            wall_s=round(wall_s, 3),
            usage=self.client.usage_report(),
            steps=written.steps,
        )
        manifest = {
            "evoforge_version": _version(),
            "command": self.command,
            "argv": sys.argv,
            "status": status,
            "stop_reason": summary.stop_reason,
            # The only field that differs between two identical runs.
            "timing": {
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                "wall_s": summary.wall_s,
            },
            "seed": self.seed,
            "kind": self.kind,
            "model": self.client.model.identity,
            **_servers(self.client.model),
            **_batches(self.client.model),
            "config": self.config,
            "engine": self.settings,
            "counts": {
                "accepted": accepted,
                "rejected": rejected,
                "rejected_by_reason": summary.rejected_by_reason,
                "resumed_seeds": summary.skipped_done,
            },
            "usage": summary.usage,
            "cost": cost_block(self.client.model.identity, summary.usage, accepted, self.settings),
            "efficiency": efficiency_block(summary.usage, accepted),
            "files": {name: str(path) for name, path in paths.items()},
            "format": self.out_format,
            **self.extra_manifest,
            "steps": summary.steps,
        }
        write_manifest(paths["manifest"], manifest)
        return summary


def _servers(model: Any) -> dict[str, Any]:
    """A server pool's per-server counts (``openai:MODEL@URL1,URL2``), as ``servers``."""
    report = getattr(model, "server_report", None)
    return {"servers": report()} if report is not None else {}


def _batches(model: Any) -> dict[str, Any]:
    """``--batch``: the batch ids and how the calls went, as ``batch`` (issue 19)."""
    report = getattr(model, "batch_summary", None)
    return {"batch": report()} if report is not None else {}


def _item_id(item: SeedItem) -> str:
    if isinstance(item, InputError):
        return f"{Path(item.path or 'input').name}:line-{item.line}"
    return item.id


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evoforge")
    except PackageNotFoundError:
        return "unknown"
