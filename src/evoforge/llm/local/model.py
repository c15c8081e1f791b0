"""The in-process chat model: :class:`LocalChatModel`, a micro-batching server.

A 135M model on a CPU is bound by per-step overhead, not by arithmetic, so decoding
eight sequences at once costs little more than decoding one. Concurrent
:meth:`LocalChatModel.complete` calls are queued; one worker takes up to
``max_batch`` queued requests that share generation parameters and serves them with a
single left-padded ``model.generate`` call, off the event loop. Guided JSON replies
(:mod:`evoforge.llm.local.guided_json`) are decoded in the same call.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from evoforge.errors import ConfigError, RequestRejected
from evoforge.llm.base import Completion, Message, TokenLogprob, Usage
from evoforge.llm.local.guided_decoding import _ScaffoldCursor, _ScaffoldProcessor, _TokenClasses
from evoforge.llm.local.guided_json import GUIDANCE_VERSION, _JsonScaffold
from evoforge.llm.local.request import (
    _cut_at_stop,
    _fail,
    _GenerationParams,
    _Request,
    _seed,
    _stop_strings,
    _with_schema_instruction,
)
from evoforge.llm.local.weights import MODEL_NAME, load_local_model

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


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

    async def complete_text(self, prompt: str, **params: Any) -> Completion:
        """Continue ``prompt`` as raw text, no chat template applied (Magpie's pre-query
        prompt); the same parameters as :meth:`complete`, batched the same way."""
        request = _Request(
            messages=[], params=_GenerationParams.from_params(params),
            stop=_stop_strings(params.get("stop")), seed=_seed(params.get("seed")),
            future=asyncio.get_running_loop().create_future(), prompt=prompt,
        )  # fmt: skip
        self._pending.append(request)
        worker = self._worker
        if worker is None or worker.done() or worker.get_loop() is not request.future.get_loop():
            self._worker = asyncio.create_task(self._serve())
        return await request.future

    async def chat_template(self) -> dict[str, str] | None:
        """The embedded model's own chat template (loads the model on first use)."""
        if self._tokenizer is None:
            await asyncio.to_thread(self._load)
        tokenizer = self._tokenizer
        assert tokenizer is not None
        if not tokenizer.chat_template:
            return None
        return {"template": str(tokenizer.chat_template), "bos_token": tokenizer.bos_token or "",
                "eos_token": tokenizer.eos_token or ""}  # fmt: skip

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
            text = request.prompt
            if text is None:
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
