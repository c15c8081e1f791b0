"""Engine plumbing every command shares: the client from the options, a run of a task
over seeds, the manifest's settings, and sources given as paths or as rows in memory."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from evoforge.engine.client import Limits, LLMClient, RetryPolicy
from evoforge.engine.context_window import (
    ContextLimit,
    folder_token_counter,
    local_token_counter,
    model_name_of_spec,
)
from evoforge.engine.runner import Run, RunSummary, SeedItem, Task
from evoforge.engine.store import ResponseCache
from evoforge.io.lock import holds_run_lock
from evoforge.llm.base import ChatModel
from evoforge.llm.spec import is_local, load_chat_model
from evoforge.options import EngineOptions
from evoforge.progress import ProgressBar

# A path, or records in memory: a ``datasets.Dataset``, a ``pandas.DataFrame`` (see
# evoforge.io.frames) or an iterable of dicts.
Source = str | os.PathLike[str] | Iterable[dict[str, Any]]


def default_cache_dir() -> Path:
    env = os.environ.get("EVOFORGE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("evoforge"))


def _resolve_model(options: EngineOptions, model: Any) -> ChatModel:
    if model is None:
        return load_chat_model(options.llm, options.llm_args)
    if isinstance(model, ChatModel):
        return model
    from evoforge.llm.langchain_backend import LangChainChatModel

    return LangChainChatModel(model)


def build_client(options: EngineOptions, model: Any = None) -> LLMClient:
    """The engine client for ``options``: every limit, retry setting and the cache come
    from them (the engine's own dataclass defaults are never relied on here)."""
    chat_model = _resolve_model(options, model)
    context = context_limit(options, chat_model)
    params: dict[str, Any] = {"max_tokens": options.max_output_tokens or 512}
    if options.temperature is not None:
        params["temperature"] = options.temperature
    cache = None
    if options.prices:  # issue 19: a bad --prices file is exit 2 before any call
        from evoforge.llm.prices import load_prices_file

        load_prices_file(options.prices)
    if options.batch:  # issue 19: the calls go out as Batch API jobs (engine/batch.py)
        from evoforge.engine.batch_mode import batch_model

        chat_model = batch_model(chat_model, options, retry_policy(options))
    if options.cache:
        cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
        cache = ResponseCache(cache_dir / "llm-cache.db")
    client = LLMClient(
        chat_model,
        limits=Limits(
            concurrency=options.concurrency,
            rpm=options.rpm,
            tpm=options.tpm,
            max_calls=options.max_calls,
            max_tokens=options.max_tokens,
        ),
        retry=retry_policy(options, timeout=not is_local(chat_model) and not options.batch),
        cache=cache,
        params=params,
        jitter_seed=options.seed,
        context=context,
    )
    if options.batch:
        from evoforge.engine.batch_mode import open_batch_window

        open_batch_window(client)
    return client


def context_limit(options: EngineOptions, model: ChatModel) -> ContextLimit:
    """The run's context check (issue 15): ``--context-window``, else the server's, else
    models.yaml's; the embedded model's tokenizer counts for the local backend. A dry
    run's counting model is checked against the window of the model ``--llm`` names."""
    window = options.context_window
    if model.identity.get("backend") == "counting":
        return ContextLimit(model, window=window, name=model_name_of_spec(options.llm))
    if options.context_tokenizer:  # loaded now: a folder that holds none is exit 2 at once
        counter = folder_token_counter(options.context_tokenizer)
        return ContextLimit(model, window=window, tokenizer=lambda: counter)
    tokenizer = local_token_counter if is_local(model) else None
    return ContextLimit(model, window=window, tokenizer=tokenizer)


def retry_policy(options: EngineOptions, *, timeout: bool = True) -> RetryPolicy:
    """The run's retry policy: attempts, backoff, the longest Retry-After to honour and
    (for a remote model, ``timeout``) the per-attempt timeout."""
    return RetryPolicy(
        max_attempts=options.max_attempts,
        backoff_base=options.backoff_base,
        max_retry_after=options.max_retry_wait,
        request_timeout=options.timeout if timeout else None,
    )


def load_run_embedder(spec: str, options: EngineOptions) -> Any:
    """The ``--embedder`` of a run that has engine options: an HTTP one (``openai:...``)
    retries by the run's policy, as its chat calls do; the others take no policy."""
    from evoforge.embeddings import load_embedder

    if spec.partition(":")[0].strip() == "openai":
        return load_embedder(spec, retry=retry_policy(options))
    return load_embedder(spec)


def make_executor(options: EngineOptions, model: Any, client: LLMClient) -> Any:
    """``None`` for ``--executor local``; for ``ray[:ADDRESS]`` the executor that runs
    the seeds in shards, each building its engine as :func:`build_client` does."""
    if options.executor == "local":
        return None
    from evoforge.engine.ray_executor import RayExecutor, parse_executor

    _, address = parse_executor(options.executor)
    if options.batch:  # issue 19: the provider does the work; the driver submits and polls
        from evoforge.engine.batch_mode import driver_runs_batches

        return driver_runs_batches()
    cache = client.cache.path.parent if client.cache is not None else None
    return RayExecutor(address, functools.partial(shard_client, options, model), cache_dir=cache)


def shard_client(options: EngineOptions, model: Any, cache_dir: str | None) -> LLMClient:
    """A shard's engine client: the run's options, with the cache in ``cache_dir``."""
    return build_client(replace(options, cache_dir=cache_dir, quiet=True), model)


async def close_client(client: LLMClient) -> None:
    await client.aclose()
    if client.cache is not None:
        client.cache.close()


@holds_run_lock
async def run_task_async(
    *,
    command: str,
    task: Task,
    kind: str,
    items: Iterable[SeedItem],
    out: str | Path,
    options: EngineOptions,
    config: dict[str, Any],
    model: Any = None,
    total: int | None = None,
    select: Any = None,
) -> RunSummary:
    """Run ``task`` over ``items`` with the engine's policies; write OUT, rejects, manifest.
    ``select``: a factory of the final write's selector (``pam --balance``), or None.
    The run holds OUT's lock throughout (:class:`~evoforge.io.lock.RunLock`)."""
    client = build_client(options, model)
    engine_config = {
        "model": client.model.identity,
        "params": client.params,
        **config,
    }
    try:
        progress = ProgressBar(command, total, enabled=None if not options.quiet else False)
        with progress:
            run = Run(
                command=command,
                task=task,
                kind=kind,
                client=client,
                out=out,
                config=engine_config,
                seed=options.seed,
                overwrite=options.overwrite,
                progress=progress.update if progress.enabled else None,
                settings=engine_settings(options),
                select=select,
                executor=make_executor(options, model, client),
            )
            return await run.execute(items)
    finally:
        await close_client(client)


_SECRET_WORDS = ("key", "token", "secret", "password")


def engine_settings(options: EngineOptions) -> dict[str, Any]:
    """The settings for the manifest, with anything that looks like a credential masked."""
    settings = asdict(options)
    settings.pop("quiet")
    if settings.get("executor") == "local":
        settings.pop("executor")  # manifests of local runs stay as they were
    if not options.batch:  # issue 19: a run without --batch keeps its manifest as it was
        for name in ("batch", "keep_batch_files", "batch_retry", "batch_poll"):
            settings.pop(name)
    settings.pop("wait")  # how this run started, not what it made
    if settings.get("prices") is None:  # issue 19: manifests without --prices stay as they were
        settings.pop("prices")
    settings["llm_args"] = {
        name: "***" if any(word in name.lower() for word in _SECRET_WORDS) else value
        for name, value in settings["llm_args"].items()
    }
    return settings


def prompt_hashes(template_ids: Iterable[str]) -> dict[str, str]:
    """The content hash of each built-in prompt a run uses, for its manifest."""
    from evoforge.prompting import builtin_template

    return {tid: builtin_template(tid).content_hash for tid in template_ids}


def source_path(source: Source, out: str | Path) -> str | os.PathLike[str]:
    """``source`` if it is a path; else its rows written to ``OUT.input.jsonl`` beside the
    output (the same rows give the same file, so a re-run resumes like one from a file)."""
    from evoforge.io.datasets import is_path, rows_to_jsonl

    if is_path(source):
        return source  # type: ignore[return-value]
    out = Path(out)
    return rows_to_jsonl(source, out.with_name(f"{out.stem}.input.jsonl"))


def source_paths(sources: Any, out: str | Path) -> list[Any]:
    """Document or corpus paths, or rows in memory (dicts with a text field): see
    :func:`source_path`."""
    from evoforge.io.datasets import is_path

    if is_path(sources):
        return [sources]
    from evoforge.io.frames import is_frame

    if hasattr(sources, "column_names") or is_frame(sources):  # a Dataset or a DataFrame
        return [source_path(sources, out)]
    items = list(sources)
    if items and all(isinstance(item, dict) for item in items):
        return [source_path(items, out)]
    return items
