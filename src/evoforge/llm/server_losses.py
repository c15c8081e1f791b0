"""Answer losses from an OpenAI-compatible server that returns prompt logprobs (vLLM).

``POST {base_url}/completions`` with ``echo: true, logprobs: 0, max_tokens: 1``
returns, for the prompt's own tokens, ``logprobs.token_logprobs`` and
``logprobs.text_offset`` (vLLM; the legacy OpenAI completions API did the same).
The answer's tokens are those whose offset is at or past the answer's first
character; their mean negative logprob is the loss. The conditioned prompt is
``INSTRUCTION\\n\\n`` (the server applies no chat template to a completion prompt);
the unconditioned one is the answer alone, whose first token has no logprob, so
that token is left out of both losses.

A server that answers without prompt logprobs (OpenAI's chat models, Ollama, most
hosted APIs) cannot give prompt losses: :class:`ServerLossModel` then raises a
one-line :class:`~evoforge.errors.ConfigError` saying so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from evoforge.errors import ConfigError
from evoforge.llm.loss_base import PairLoss

__all__ = ["ServerLossModel"]


class ServerLossModel:
    """Losses from ``/v1/completions`` echo logprobs; ``transport`` is for tests
    (an ``httpx`` transport)."""

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        batch_size: int = 8,
        api_key: str | None = None,
        transport: Any = None,
        timeout: float = 120.0,
    ) -> None:
        import httpx

        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or "").rstrip("/")
        if not self.base_url:
            raise ConfigError(f"--scorer-model openai:{model}: give the server, openai:{model}@URL")
        self.batch_size = batch_size
        self.identity = f"openai:{model}@{self.base_url}"
        self.forward_passes = 0
        key = api_key or os.environ.get("OPENAI_API_KEY") or "none"
        self._client = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {key}"},
            transport=transport,
            timeout=timeout,
        )

    def _echo(self, prompts: list[str]) -> list[dict[str, Any]]:
        import httpx

        body = {
            "model": self.model,
            "prompt": prompts,
            "echo": True,
            "logprobs": 0,
            "max_tokens": 1,
            "temperature": 0,
        }
        try:
            response = self._client.post("/completions", json=body)
        except httpx.HTTPError as exc:
            raise ConfigError(f"scorer server {self.base_url}: {exc}") from exc
        self.forward_passes += 1
        if response.status_code >= 400:
            raise ConfigError(
                f"scorer server {self.base_url} cannot give prompt losses: /completions "
                f"answered HTTP {response.status_code}"
            )
        choices = sorted(response.json().get("choices") or [], key=lambda c: c.get("index", 0))
        found = []
        for choice in choices:
            logprobs = choice.get("logprobs") or {}
            if not logprobs.get("token_logprobs") or not logprobs.get("text_offset"):
                raise ConfigError(
                    f"scorer server {self.base_url} cannot give prompt losses: its "
                    "completions carry no echoed prompt logprobs (use vLLM, or a local model)"
                )
            found.append(logprobs)
        if len(found) != len(prompts):
            raise ConfigError(f"scorer server {self.base_url}: {len(found)} choices for "
                              f"{len(prompts)} prompts")  # fmt: skip
        return found

    @staticmethod
    def _answer_logprobs(logprobs: dict[str, Any], start: int, limit: int) -> list[float | None]:
        values = []
        for offset, value in zip(logprobs["text_offset"], logprobs["token_logprobs"], strict=False):
            if offset >= start:
                values.append(value)
        return values[:limit]

    def pair_losses(
        self, pairs: Sequence[tuple[str, str]], *, max_answer_tokens: int = 512
    ) -> list[PairLoss | None]:
        results: list[PairLoss | None] = [None] * len(pairs)
        scored = [i for i, (_, answer) in enumerate(pairs) if answer.strip()]
        for at in range(0, len(scored), self.batch_size):
            batch = scored[at : at + self.batch_size]
            prompts = [f"{pairs[i][0]}\n\n{pairs[i][1]}" for i in batch]
            prompts += [pairs[i][1] for i in batch]
            echoed = self._echo(prompts)
            for n, i in enumerate(batch):
                instruction = pairs[i][0]
                cond = self._answer_logprobs(echoed[n], len(instruction) + 2, max_answer_tokens)
                plain = self._answer_logprobs(echoed[len(batch) + n], 0, max_answer_tokens)
                count = min(len(cond), len(plain))
                # The answer's first token has no logprob unconditioned: both skip it.
                c = [v for v in cond[1:count] if v is not None]
                u = [v for v in plain[1:count] if v is not None]
                if c and u:
                    results[i] = PairLoss(-sum(c) / len(c), -sum(u) / len(u), count)
        return results

    def greedy(
        self, prompts: Sequence[str], *, max_new_tokens: int = 16, chat: bool = True
    ) -> list[str]:
        """Greedy completions of the raw prompts (``/completions`` applies no chat
        template, whatever ``chat`` says)."""
        import httpx

        texts: list[str] = []
        for at in range(0, len(prompts), self.batch_size):
            batch = list(prompts[at : at + self.batch_size])
            body = {"model": self.model, "prompt": batch, "max_tokens": max_new_tokens,
                    "temperature": 0}  # fmt: skip
            try:
                response = self._client.post("/completions", json=body)
            except httpx.HTTPError as exc:
                raise ConfigError(f"scorer server {self.base_url}: {exc}") from exc
            self.forward_passes += 1
            if response.status_code >= 400:
                raise ConfigError(f"scorer server {self.base_url}: /completions answered "
                                  f"HTTP {response.status_code}")  # fmt: skip
            choices = sorted(response.json().get("choices") or [], key=lambda c: c.get("index", 0))
            texts.extend(str(c.get("text") or "") for c in choices)
        return texts
