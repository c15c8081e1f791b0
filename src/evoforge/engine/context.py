"""What a step may use for one record: the model (through the engine), its RNG, its counts.

Randomness derives from (run seed, record id, round), never from global state, so a
record's output does not depend on which records ran before it or on a resume.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from typing import Any

from evoforge.engine.client import LLMClient
from evoforge.io.outputs import StepCounts
from evoforge.llm.base import Completion
from evoforge.prompting import PromptTemplate


def derive_rng(run_seed: int, record_id: str, round_: int = 0) -> random.Random:
    """Per-record randomness from (run seed, record id, round): no global RNG state."""
    digest = hashlib.sha256(f"{run_seed}\x1f{record_id}\x1f{round_}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class RecordContext:
    """What a task may use for one record: the model (through the engine) and its RNG."""

    def __init__(self, client: LLMClient, run_seed: int, record_id: str, seq: int = 0) -> None:
        self.client = client
        self.run_seed = run_seed
        self.record_id = record_id
        self.seq = seq  # the seed's position in the input (0-based), for planners
        # What the steps inside the task counted for this seed; journaled with its result.
        self.counts = StepCounts()

    def rng(self, round_: int = 0) -> random.Random:
        return derive_rng(self.run_seed, self.record_id, round_)

    def count(
        self, step: str, *, seen: int = 0, kept: int = 0, rejected: Iterable[str] = ()
    ) -> None:
        """A step inside the task reports its outcomes: ``seen`` records in, ``kept`` out,
        one reason per rejection. They reach the manifest's ``steps``, resume or not."""
        self.counts.count(step, seen=seen, kept=kept, rejected=rejected)

    def step(self, op: str, template: PromptTemplate | None = None, round_: int = 0) -> dict:
        """A lineage entry: op name, round, prompt id + hash, model."""
        entry: dict[str, Any] = {"op": op, "round": round_, "model": self.client.model_name}
        if template is not None:
            entry.update(template.ref)
        return entry

    async def ask(
        self,
        template: PromptTemplate,
        *,
        op: str,
        round_: int = 0,
        params: dict[str, Any] | None = None,
        schema: dict[str, Any] | None = None,
        validate: bool = True,
        **values: Any,
    ) -> Completion:
        """Render ``template`` with ``values`` (as data) and ask the model.

        ``schema`` replaces the template's ``output_schema`` (one that depends on the
        values, e.g. an array as long as a list); ``validate`` goes to
        :meth:`LLMClient.complete`."""
        messages = template.render(**values)
        call_params = dict(params or {})
        if "seed" not in call_params and "seed" not in self.client.params:
            # Reproducible sampling where the backend supports a seed.
            call_params["seed"] = self.rng(round_).randrange(2**31)
        return await self.client.complete(
            messages,
            op=op,
            schema=template.output_schema if schema is None else schema,
            tag=template.content_hash,
            params=call_params,
            validate=validate,
        )
