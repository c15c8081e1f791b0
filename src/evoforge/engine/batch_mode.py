"""How ``--batch`` changes a run's client: the backend wrapped in
:class:`~evoforge.engine.batch.BatchChatModel`, and a window wide enough that a whole
stage of a run is waiting at once (the calls of a batch are not sockets, so the
open-file limit does not apply)."""

from __future__ import annotations

from typing import Any

from evoforge.engine import batch_api
from evoforge.engine.client import LLMClient, RetryPolicy
from evoforge.errors import ConfigError

# Seeds in flight in batch mode: one full batch's worth per stage.
BATCH_WINDOW = 50_000  # batch_api.MAX_REQUESTS, fixed here (a test lowers that one)


def batch_model(chat_model: Any, options: Any, retry: RetryPolicy) -> Any:
    """``chat_model`` sending through the Batch API; a ``ConfigError`` (exit 2, one line)
    for a backend that has none."""
    from evoforge.engine.batch import BatchChatModel
    from evoforge.llm.openai_backend import OpenAIChatModel

    if not isinstance(chat_model, OpenAIChatModel):
        backend = chat_model.identity.get("backend", type(chat_model).__name__)
        raise ConfigError(
            f"--batch: the {backend} backend has no Batch API; use --llm openai:MODEL "
            "(or a server that implements /v1/files and /v1/batches), or drop --batch"
        )
    return BatchChatModel(
        chat_model,
        retry=retry,
        retry_mode=options.batch_retry,
        keep_files=options.keep_batch_files,
        poll=options.batch_poll,
        max_poll=max(60.0, options.batch_poll),
        max_requests=batch_api.MAX_REQUESTS,  # read now: a test lowers the limits
        max_bytes=batch_api.MAX_BYTES,
    )


def open_batch_window(client: LLMClient) -> None:
    """Let a stage's calls all wait at once: they are lines of a file, not sockets."""
    client.limits.concurrency = BATCH_WINDOW
    limiter = client.concurrency
    limiter.requested = limiter.maximum = limiter.limit = BATCH_WINDOW


RAY_NOTE = (
    "evoforge: --batch with --executor ray: the driver submits and polls the batches "
    "(the provider does the work); no Ray shards are started"
)


def driver_runs_batches() -> None:
    """``--batch --executor ray``: no executor. A batch run's calls are lines of a file
    that the provider works through, so shards would only split one stage's batch into
    several and each resume would need its own store; the driver (this process) runs the
    engine, submits every stage's batch and polls it, as a local ``--batch`` run does.
    Said once on stderr; Ray is not started."""
    import sys

    print(RAY_NOTE, file=sys.stderr)
