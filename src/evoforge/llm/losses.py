"""What a causal LM does with a text: losses over answer tokens and greedy completions.

Model-signal selection (IFD, Instruction Mining's perplexity, memorisation probing)
needs more than a chat reply: the mean cross-entropy of an answer's tokens with and
without its instruction, and short greedy completions. A :class:`LossModel` gives
both, knowing nothing about records:

- :class:`LocalLossModel` runs any local causal LM folder (``transformers``), or the
  embedded SmolLM2 (:func:`evoforge.llm.local.load_local_model`) by default, in
  right-padded batches. Only the answer positions go through the output layer, so a
  batch of 8 needs no ``batch x length x vocabulary`` logits tensor.
- :class:`~evoforge.llm.server_losses.ServerLossModel` asks an OpenAI-compatible
  ``/v1/completions`` endpoint that echoes prompt logprobs (vLLM).

:func:`load_loss_model` picks one from a spec: ``None`` or ``"local"`` (embedded),
a folder, or ``openai:MODEL@URL``. A backend that cannot give prompt losses raises
:class:`~evoforge.errors.ConfigError` with one line saying so.

Each model counts its ``forward_passes``: a re-run served from the score cache makes
none, and the tests check exactly that.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError
from evoforge.llm.loss_base import LossModel, PairLoss

__all__ = [
    "DEFAULT_MAX_ANSWER_TOKENS",
    "LocalLossModel",
    "LossModel",
    "PairLoss",
    "load_loss_model",
]

DEFAULT_MAX_ANSWER_TOKENS = 512
_MAX_PROMPT_TOKENS = 1024
_HEAD_CHUNK = 512  # answer positions per output-layer product


def load_loss_model(spec: str | None = None, *, batch_size: int = 8, **kwargs: Any) -> LossModel:
    """The loss model ``spec`` names: ``None``/``"local"`` the embedded model, a folder
    holding a causal LM, or ``openai:MODEL@BASE_URL`` (a server that returns prompt
    logprobs)."""
    if spec is None or spec in ("", "local"):
        return LocalLossModel(None, batch_size=batch_size, **kwargs)
    scheme, _, rest = spec.partition(":")
    if scheme == "openai" and rest:
        from evoforge.llm.server_losses import ServerLossModel

        model, _, base_url = rest.partition("@")
        return ServerLossModel(model, base_url or None, batch_size=batch_size)
    if Path(spec).expanduser().is_dir():
        return LocalLossModel(spec, batch_size=batch_size, **kwargs)
    raise ConfigError(
        f"--scorer-model {spec!r}: not a folder holding a causal LM; use a folder, "
        "'local' (the embedded model) or openai:MODEL@BASE_URL"
    )


def folder_identity(path: Path) -> str:
    """``NAME@HASH``: the folder's name and a hash of its config and weight files' names
    and sizes, so that replacing the weights changes every cache key."""
    digest = hashlib.sha256()
    for item in sorted(path.iterdir()):
        if item.is_file() and item.suffix in (".json", ".safetensors", ".bin", ".model"):
            digest.update(f"{item.name}:{item.stat().st_size}".encode())
            if item.name == "config.json":
                digest.update(item.read_bytes())
    return f"{path.name}@{digest.hexdigest()[:12]}"


class LocalLossModel:
    """A causal LM run in-process on the CPU (``transformers``), loaded on first use.

    ``path`` is a model folder (``from_pretrained``); ``None`` is the embedded SmolLM2.
    The conditioned text is the instruction in the tokenizer's chat template with the
    assistant turn opened, then the answer; the unconditioned text is the answer after
    the tokenizer's BOS token (EOS where it has none), so both predict exactly the same
    answer tokens, truncated to the same ``max_answer_tokens``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        batch_size: int = 8,
        num_threads: int | None = None,
    ) -> None:
        self.path = Path(path).expanduser().resolve() if path is not None else None
        self.batch_size = max(1, int(batch_size))
        self.num_threads = num_threads
        self.forward_passes = 0
        self._model: Any = None
        self._tokenizer: Any = None
        if self.path is None:
            from evoforge.llm.local.weights import MODEL_NAME

            self.identity = MODEL_NAME
        else:
            if not (self.path / "config.json").is_file():
                raise ConfigError(f"--scorer-model {self.path}: no config.json, not a model folder")
            self.identity = folder_identity(self.path)

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            import torch

            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            if self.path is None:
                from evoforge.llm.local.weights import load_local_model

                self._model, self._tokenizer = load_local_model()
            else:
                self._model, self._tokenizer = _load_folder(self.path)
        return self._model, self._tokenizer

    # -- losses --------------------------------------------------------------------
    def _prompt_ids(self, instruction: str) -> list[int]:
        tokenizer = self._tokenizer
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": instruction}],
                tokenize=False,
                add_generation_prompt=True,
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(instruction + "\n\n", add_special_tokens=False)["input_ids"]
        return ids[-_MAX_PROMPT_TOKENS:]  # the tail keeps the opened assistant turn

    def _start_id(self) -> int:
        tokenizer = self._tokenizer
        start = tokenizer.bos_token_id
        return int(start if start is not None else tokenizer.eos_token_id)

    def pair_losses(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
    ) -> list[PairLoss | None]:
        self._load()
        tokenizer = self._tokenizer
        sequences: list[tuple[list[int], int]] = []  # (ids, first answer position)
        lengths: list[int] = []
        for instruction, answer in pairs:
            answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
            answer_ids = answer_ids[:max_answer_tokens]
            lengths.append(len(answer_ids))
            if not answer_ids:
                continue
            prompt = self._prompt_ids(instruction)
            sequences.append((prompt + answer_ids, len(prompt)))
            sequences.append(([self._start_id(), *answer_ids], 1))
        losses = self.sequence_losses(sequences)
        results: list[PairLoss | None] = []
        at = 0
        for length in lengths:
            if length == 0:
                results.append(None)
                continue
            results.append(PairLoss(losses[at], losses[at + 1], length))
            at += 2
        return results

    def sequence_losses(self, sequences: Sequence[tuple[list[int], int]]) -> list[float]:
        """Mean cross-entropy of each sequence's tokens from its answer start on, in
        batches of ``batch_size`` (longest first, so padding stays small)."""
        import torch

        model, tokenizer = self._load()
        order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0]))
        out = [0.0] * len(sequences)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        for start in range(0, len(order), self.batch_size):
            batch = [sequences[i] for i in order[start : start + self.batch_size]]
            width = max(len(ids) for ids, _ in batch)
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, (ids, _) in enumerate(batch):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                mask[row, : len(ids)] = 1
            with torch.inference_mode():
                hidden, head = _hidden_and_head(model, input_ids, mask)
                self.forward_passes += 1
                for row, (ids, first) in enumerate(batch):
                    positions = torch.arange(first - 1, len(ids) - 1)
                    targets = input_ids[row, first : len(ids)]
                    total = 0.0
                    for at in range(0, len(positions), _HEAD_CHUNK):
                        states = hidden[row, positions[at : at + _HEAD_CHUNK]]
                        logits = head(states).float() if head is not None else states.float()
                        total += float(
                            torch.nn.functional.cross_entropy(
                                logits, targets[at : at + _HEAD_CHUNK], reduction="sum"
                            )
                        )
                    out[order[start + row]] = total / max(1, len(positions))
        return out

    # -- greedy completions ----------------------------------------------------------
    def greedy(
        self, prompts: Sequence[str], *, max_new_tokens: int = 16, chat: bool = True
    ) -> list[str]:
        """Greedy continuations; ``chat``: each prompt as the user turn of the chat
        template (an instruct model answers there, and stops at once on raw text)."""
        import torch

        model, tokenizer = self._load()
        results: list[str] = []
        side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        try:
            for start in range(0, len(prompts), self.batch_size):
                batch = [
                    self._as_chat(p) if chat else p
                    for p in prompts[start : start + self.batch_size]
                ]
                encoded = tokenizer(
                    batch, return_tensors="pt", padding=True, add_special_tokens=not chat
                )
                with torch.inference_mode():
                    generated = model.generate(
                        **encoded,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                self.forward_passes += 1
                new = generated[:, encoded["input_ids"].shape[1] :]
                results.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
        finally:
            tokenizer.padding_side = side
        return results

    def _as_chat(self, prompt: str) -> str:
        tokenizer = self._tokenizer
        if not getattr(tokenizer, "chat_template", None):
            return prompt
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def describe(self) -> dict[str, Any]:
        return {"model": self.identity, "path": str(self.path) if self.path else "embedded"}


def _hidden_and_head(model: Any, input_ids: Any, mask: Any) -> tuple[Any, Any]:
    """The last hidden states and the output layer, so only answer positions meet the
    vocabulary; a model without a separable decoder gives its full logits (head None)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is not None and head is not None and not _softcaps(model):
        output = decoder(input_ids=input_ids, attention_mask=mask)
        return output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0], head
    return model(input_ids=input_ids, attention_mask=mask).logits, None


def _softcaps(model: Any) -> bool:
    """Models that transform logits after the head (Gemma-2's soft-capping) take the
    full forward pass."""
    return getattr(model.config, "final_logit_softcapping", None) is not None


def _load_folder(path: Path) -> tuple[Any, Any]:
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - the local extra
        from evoforge.errors import MissingDependency

        raise MissingDependency("transformers", "local") from exc
    from evoforge.quiet import quiet_loading

    try:
        with quiet_loading():
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--scorer-model {path}: cannot load a causal LM ({first})") from exc
    model.eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def settings_key(**settings: Any) -> str:
    """A short stable hash of scoring settings, for cache keys."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
