"""``--executor ray[:ADDRESS]``: a run's seeds in shards, each shard a Ray task.

The driver (the process that runs the command) does what a local run does before and
after the seeds are worked: it reads the seeds, rejects repeated ids and bad rows,
skips seeds its journal already has, and at the end writes ``OUT``, the rejects and
the manifest from its journal, in input order (:mod:`evoforge.engine.final_write`).
Between the two, instead of its own asyncio scheduler, it:

1. writes the seeds still to do into ``SHARDS`` input files (``OUT.shards/``, beside
   the output), round-robin, each seed with its position in the input (a task with a
   ``group_key(seed)`` has the seeds of one group dealt into one shard);
2. runs one Ray task per shard (:func:`run_shard`). A shard is the same engine as a
   local run (:class:`ShardRun`, a :class:`~evoforge.engine.runner.Run`) over its
   seeds, with its own journal ``shard-K.journal.db``; when its worker dies, Ray runs
   the task again, which resumes from that journal and so pays only for the calls
   that were in flight. At its end a shard writes its journal's rows to its part
   file ``part-K.jsonl``;
3. merges the part files into its own journal (the order comes from the positions),
   adds the shards' call counts to its usage, and deletes the shard files.

Only the driver takes the run folder's lock; shards write only their own files.

The response cache: when the cache folder is on a local filesystem, every shard
opens the run's one cache (SQLite in WAL mode is safe for several processes of one
machine). When it is on a network filesystem (NFS, CIFS, a FUSE mount, ...), where
SQLite's locks cannot be trusted, each shard writes its own cache in ``OUT.shards/``
and the driver merges them into the run's cache at the end. ``EVOFORGE_SHARD_CACHE=
per-shard`` (or ``shared``) forces the choice.

A shard's budget (``--max-calls``, ``--max-tokens``) is the run's divided by the
number of shards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import pickle
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.engine.runner import Run, RunSummary, SeedItem, _item_id
from evoforge.errors import ConfigError, InputError, RunStopped

INSTALL_HINT = "--executor ray needs Ray: pip install 'evoforge[ray]'"
# Filesystems on which SQLite's locking is not safe (the run folder's cache goes per-shard).
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "ceph", "glusterfs", "lustre", "gpfs",
     "beegfs", "afs", "davfs", "sshfs", "virtiofs"}
)  # fmt: skip
SHARD_RETRIES = 3  # how often Ray re-runs a shard whose worker died


def parse_executor(spec: str) -> tuple[str, str | None]:
    """``local`` -> ("local", None); ``ray`` -> ("ray", None); ``ray:ADDR`` -> ("ray", ADDR)."""
    name, _, address = spec.strip().partition(":")
    if name not in ("local", "ray") or (name == "local" and address):
        raise ConfigError(f"--executor {spec!r}: use local, ray or ray:ADDRESS")
    return name, address.strip() or None


def import_ray() -> Any:
    """``ray``, or a ConfigError (exit 2) saying how to install it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def connect(address: str | None) -> Any:
    """Ray, connected to ``address``, ``RAY_ADDRESS``, or else a new local cluster."""
    ray = import_ray()
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS") or None
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if address is None:
            kwargs["object_store_memory"] = 256 * 1024**2  # seeds travel as files, not here
        ray.init(address=address, **kwargs)
    return ray


def on_network_fs(path: Path) -> bool:
    """Whether ``path`` lies on a network filesystem (the longest mount point in
    ``/proc/mounts`` that contains it); False where that cannot be read."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return False
    target = str(path.resolve())
    best, fstype = "", ""
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = parts[1]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) > len(best):
            best, fstype = point, parts[2]
    return fstype in NETWORK_FILESYSTEMS or fstype.startswith("fuse.")


@dataclass
class ShardSpec:
    """What a shard task needs: its files, and how to build the run's engine."""

    index: int
    folder: str
    command: str
    kind: str
    config: dict[str, Any]
    seed: int
    settings: dict[str, Any]
    build_client: Callable[[Any], Any]  # (cache_dir or None) -> LLMClient
    cache_dir: str | None  # a per-shard cache folder; None: the run's cache


class ShardRun(Run):
    """A local run over one shard's ``(position, seed)`` pairs: the positions are the
    seeds' places in the whole input (a record's ``ctx.seq``; the merge's order), and
    the final write is the shard's part file instead of outputs."""

    def _numbered(self, items: Iterable[Any]) -> Iterable[tuple[int, SeedItem]]:
        return items

    def _finalize(self, started: float, wall_s: float) -> RunSummary:
        part = self.paths["out"].with_name(self.paths["out"].name.replace("shard-", "part-"))
        self._journal.flush()
        export_rows(self.paths["journal"], part)
        stop = self._stop
        return RunSummary(
            status="complete" if stop is None else "stopped",
            stop_reason=stop.reason if stop else None,
            message=str(stop) if stop else "",
            accepted=0, rejected=0, rejected_by_reason={}, skipped_done=0,
            out=part, rejects=part, manifest=part, wall_s=wall_s,
            usage=self.client.usage_report(),
        )  # fmt: skip


def export_rows(journal: Path, part: Path) -> None:
    """A journal's rows (id, position, final, payload) as JSON lines, written atomically."""
    conn = sqlite3.connect(journal)
    try:
        rows = conn.execute("SELECT seed_id, seq, final, payload FROM seeds ORDER BY seq")
        tmp = part.with_name(part.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for seed_id, seq, final, payload in rows:
                fh.write(json.dumps([seed_id, seq, final], ensure_ascii=False))
                fh.write("\t" + payload + "\n")
    finally:
        conn.close()
    os.replace(tmp, part)


def read_part(part: Path) -> Iterator[tuple[str, int, bool, dict[str, Any]]]:
    with open(part, encoding="utf-8") as fh:
        for line in fh:
            head, _, payload = line.rstrip("\n").partition("\t")
            seed_id, seq, final = json.loads(head)
            yield seed_id, seq, bool(final), json.loads(payload)


def _read_pairs(path: Path) -> Iterator[tuple[int, SeedItem]]:
    with open(path, "rb") as fh:
        while True:
            try:
                yield pickle.load(fh)
            except EOFError:
                return


def run_shard(spec: ShardSpec, task: Any) -> dict[str, Any]:
    """One shard, in a Ray worker: the engine over its seeds, resuming its journal."""
    folder = Path(spec.folder)
    name = f"shard-{spec.index:05d}"
    (folder / f"{name}.pid").write_text(str(os.getpid()))
    client = spec.build_client(spec.cache_dir)

    async def go() -> RunSummary:
        run = ShardRun(
            command=spec.command, task=task, kind=spec.kind, client=client,
            out=folder / f"{name}.jsonl", config=spec.config, seed=spec.seed,
            settings=spec.settings,
        )  # fmt: skip
        try:
            return await run.execute(_read_pairs(folder / f"input-{spec.index:05d}.pkl"))
        finally:
            await client.aclose()
            if client.cache is not None:
                client.cache.close()

    summary = asyncio.run(go())
    return {
        "status": summary.status,
        "stop_reason": summary.stop_reason,
        "message": summary.message,
        "usage": summary.usage,
        "calls": client.calls_sent,
        "tokens": client.tokens_used,
    }


class RayExecutor:
    """Runs a :class:`Run`'s seeds as Ray tasks (see the module's doc)."""

    def __init__(
        self,
        address: str | None,
        build_client: Callable[[Any], Any],
        *,
        cache_dir: Path | None,
        shards: int | None = None,
        max_calls: int | None = None,
        max_tokens: int | None = None,
    ) -> None:
        self.ray = connect(address)
        self.build_client = build_client
        self.cache_dir = cache_dir
        cpus = int(self.ray.cluster_resources().get("CPU", 1))
        self.shards = shards or max(2, 2 * cpus)

    def per_shard_cache(self) -> bool:
        forced = os.environ.get("EVOFORGE_SHARD_CACHE", "").strip()
        if forced in ("per-shard", "shared"):
            return forced == "per-shard"
        return self.cache_dir is not None and on_network_fs(self.cache_dir.parent)

    async def schedule(self, run: Run, items: Iterable[SeedItem]) -> None:
        folder = shards_folder(run.paths["out"])
        if run.overwrite:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        self._merge(run, folder)  # what shards of an interrupted run finished
        filled = await self._write_inputs(run, items, folder)
        if filled and run._stop is None:
            await self._run_shards(run, folder, filled)
        self._merge(run, folder)
        if self.per_shard_cache() and run.client.cache is not None:
            merge_caches(run.client.cache.path, sorted(folder.glob("cache-*/llm-cache.db")))
        if run._stop is None:
            shutil.rmtree(folder, ignore_errors=True)

    async def _write_inputs(self, run: Run, items: Iterable[SeedItem], folder: Path) -> int:
        """Deal the seeds still to do into the shards' input files; the number of shards
        that got any."""
        for stale in folder.glob("input-*.pkl"):
            stale.unlink()
        journal = run._journal
        groups = 0
        # A task may group its seeds (rag: the samples over one chunk; run._numbered
        # puts a group's seeds next to each other): a group goes to one shard, so its
        # calls share the shard's per-chunk memo (one node-filter call per chunk) and
        # run close together. Groups go round-robin; a seed without a key is a group
        # of its own.
        group_key = getattr(run.task, "group_key", None)
        shard, last_key = -1, None
        with contextlib.ExitStack() as stack:
            files = [
                stack.enter_context(open(folder / f"input-{k:05d}.pkl", "wb"))
                for k in range(self.shards)
            ]
            for seq, item in run._numbered(items):
                if run._stop is not None:
                    break
                seed_id = _item_id(item)
                if not journal.first_sighting(seed_id):
                    run._reject_duplicate(seq, item)
                elif journal.is_done(seed_id):
                    run.counts["skipped_done"] += 1
                elif isinstance(item, InputError):
                    await run._process(seq, item)  # a bad row: no call, the driver rejects it
                else:
                    key = None if group_key is None else group_key(item)
                    if key is None or key != last_key:
                        shard = (shard + 1) % self.shards
                        groups += 1
                    last_key = key
                    pickle.dump((seq, item), files[shard])
        journal.flush()
        return min(self.shards, groups)

    async def _run_shards(self, run: Run, folder: Path, filled: int) -> None:
        ray = self.ray
        per_shard = self.per_shard_cache()
        used = filled  # the first ``filled`` shards got seeds
        limits = run.client.limits
        build = _budgeted(self.build_client, limits.max_calls, limits.max_tokens, used)
        task_ref = ray.put(run.task)
        remote = ray.remote(run_shard).options(max_retries=SHARD_RETRIES, num_cpus=1)
        refs = []
        for index in range(used):
            spec = ShardSpec(
                index=index, folder=str(folder), command=run.command, kind=run.kind,
                config=run.config, seed=run.seed, settings=run.settings, build_client=build,
                cache_dir=str(folder / f"cache-{index:05d}") if per_shard else None,
            )  # fmt: skip
            refs.append(remote.remote(spec, task_ref))
        try:
            results = await asyncio.gather(*refs)
        except asyncio.CancelledError:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            raise
        for result in results:
            _add_usage(run.client, result)
            if result["status"] != "complete" and run._stop is None:
                run._stop = RunStopped(result["stop_reason"] or "error", result["message"])

    def _merge(self, run: Run, folder: Path) -> None:
        """Every shard's finished rows into the driver's journal: from its part file, or
        (a shard that did not reach its end) its journal; then its files go."""
        journal = run._journal
        for shard_journal in sorted(folder.glob("shard-*.journal.db")):
            part = folder / shard_journal.name.replace("shard-", "part-").replace(
                ".journal.db", ".jsonl"
            )
            if not part.exists():
                export_rows(shard_journal, part)
            for seed_id, seq, final, row in read_part(part):
                if journal.is_done(seed_id):
                    continue
                journal.add(
                    seq, seed_id, row["records"], row["rejections"], final=final,
                    steps=row.get("steps"),
                )  # fmt: skip
            journal.flush()
            for leftover in folder.glob(shard_journal.name.replace(".journal.db", ".*")):
                leftover.unlink(missing_ok=True)
            part.unlink(missing_ok=True)


def shards_folder(out: Path) -> Path:
    """``OUT.shards/`` beside the output: the shards' inputs, journals and part files."""
    from evoforge.io.layout import output_stem

    return out.with_name(f"{output_stem(out)}.shards")


def _budgeted(
    build: Callable[[Any], Any], max_calls: int | None, max_tokens: int | None, shards: int
) -> Callable[[Any], Any]:
    if max_calls is None and max_tokens is None:
        return build
    return _BudgetedBuild(build, max_calls, max_tokens, shards)


@dataclass
class _BudgetedBuild:
    """Builds a shard's client with its share of the run's budget."""

    build: Callable[[Any], Any]
    max_calls: int | None
    max_tokens: int | None
    shards: int

    def __call__(self, cache_dir: Any) -> Any:
        client = self.build(cache_dir)
        if self.max_calls is not None:
            client.limits.max_calls = math.ceil(self.max_calls / self.shards)
        if self.max_tokens is not None:
            client.limits.max_tokens = math.ceil(self.max_tokens / self.shards)
        return client


def _add_usage(client: Any, result: dict[str, Any]) -> None:
    for op, stats in result["usage"].items():
        mine = client.stats[op]
        for name, value in stats.items():
            setattr(mine, name, getattr(mine, name) + value)
    client.calls_sent += result["calls"]
    client.tokens_used += result["tokens"]


def merge_caches(target: Path, sources: list[Path]) -> None:
    """Copy the per-shard caches' entries into the run's cache (``INSERT OR IGNORE``)."""
    if not sources:
        return
    conn = sqlite3.connect(target, timeout=30)
    try:
        for source in sources:
            conn.execute("ATTACH DATABASE ? AS shard", (str(source),))
            with conn:
                conn.execute("INSERT OR IGNORE INTO responses SELECT * FROM shard.responses")
            conn.execute("DETACH DATABASE shard")
    except sqlite3.Error as exc:
        print(f"evoforge: warning: could not merge the shards' caches: {exc}", file=sys.stderr)
    finally:
        conn.close()
