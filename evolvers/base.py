"""What every evolver shares: the step contract, the rounds loop, chains, op choice, mixes.

An evolver takes a record and returns the evolved record or a rejection with a
reason; it never raises for a bad rewrite. ``EvolutionRounds`` runs one evolver
for M rounds the way Evol-Instruct does (Xu et al., 2023, arXiv 2304.12244,
"Elimination Evolving"): a failed evolution keeps the previous version, which
is evolved again next round. ``Chain`` feeds one stage's records to the next (e.g. Evol-Instruct,
then Evol-Quality on the answers).

Ops belong to a family, run by one evolver: ``evol_instruct`` (``EvolInstruct``),
``evol_quality`` (``EvolQuality``) and ``rewrite`` (``QuestionRewrite``). Each
family's built-in op names are an ``OpNames``; ``parse_weights`` also accepts the
ops a plugin registers for that family (``evoforge.registry``, kind ``evolver``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from evoforge.engine.runner import RecordContext, Rejection, Result, Task
from evoforge.errors import ConfigError, RequestRejected
from evoforge.records import Record
from evoforge.registry import registry


class Evolver(Protocol):
    """One evolution step. ``round_`` is 1-based; randomness comes from ``ctx.rng(round_)``."""

    name: str

    async def evolve(
        self, record: Record, ctx: RecordContext, round_: int
    ) -> Record | Rejection: ...


@dataclass
class EvolutionRounds:
    """Run ``evolver`` for ``rounds`` rounds on each record (a Task for the engine).

    Each round evolves the latest accepted version; a rejected evolution is
    recorded (with its round) and the previous version goes into the next round
    unchanged. With ``keep_all_rounds`` every accepted version is written (the
    input as round 0, then one record per successful round: at most
    ``rounds + 1`` per seed); otherwise only the final version is. ``evoforge
    evolve`` keeps every round by default, as the paper trains on the union of all
    rounds (``--final-only`` writes only the last version).
    """

    evolver: Evolver
    rounds: int = 4
    keep_all_rounds: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ConfigError("rounds must be 0 or more")

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        result = Result()
        current = record
        if self.keep_all_rounds:
            result.records.append(current)
        for round_ in range(1, self.rounds + 1):
            try:
                outcome = await self.evolver.evolve(current, ctx, round_)
            except RequestRejected as exc:  # one failed call costs a round, not the seed
                outcome = Rejection(
                    f"{current.id}/r{round_}", exc.reason, f"{exc} (round {round_})"
                )
            if isinstance(outcome, Rejection):
                result.rejections.append(outcome)
                continue
            current = outcome
            if self.keep_all_rounds:
                result.records.append(current)
        if not self.keep_all_rounds:
            result.records.append(current)
        return result


@dataclass
class Chain:
    """Stages applied in order: every record a stage accepts goes through the next."""

    stages: Sequence[Task] = field(default_factory=list)

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        result = Result()
        batch = [record]
        for stage in self.stages:
            produced: list[Record] = []
            for item in batch:
                stage_result = await stage(item, _context_for(ctx, item))
                produced.extend(stage_result.records)
                result.rejections.extend(stage_result.rejections)
            batch = produced
        result.records = batch
        return result


def _context_for(ctx: RecordContext, record: Record) -> RecordContext:
    """Each record gets randomness of its own, derived from its own id."""
    if record.id == ctx.record_id:
        return ctx
    return RecordContext(ctx.client, ctx.run_seed, record.id, ctx.seq)


class OpNames(tuple):
    """The built-in op names of one evolver family (a tuple), with the family's name.

    ``parse_weights`` accepts, besides these, every op a plugin registered for the
    family (an ``evolver`` entry whose object has ``family`` equal to ``family``)."""

    family: str

    def __new__(cls, family: str, names: Sequence[str]) -> OpNames:
        self = super().__new__(cls, names)
        self.family = family
        return self


def family_ops(family: str) -> dict[str, Any]:
    """The ops plugins (or ``register``) added to ``family``, by name; built-ins left out."""
    found = {}
    evolvers = registry("evolver")
    for name in evolvers:
        if evolvers.origins[name] == "evoforge":
            continue
        op = evolvers.lookup(name)
        if getattr(op, "family", None) == family:
            found[name] = op
    return found


def family_op(family: str, name: str) -> Any | None:
    """The op ``name`` a plugin registered for ``family``, or ``None``."""
    evolvers = registry("evolver")
    if name not in evolvers or evolvers.origins[name] == "evoforge":
        return None
    op = evolvers.lookup(name)
    return op if getattr(op, "family", None) == family else None


def parse_weights(
    spec: str | None, names: Sequence[str], *, flag: str = "--ops"
) -> dict[str, float]:
    """``"constraints=2,breadth=1"`` -> weights for ``names`` (unnamed ops get 0).

    ``None`` or ``""`` gives uniform weights. Unknown names are errors with a hint.
    When ``names`` is an ``OpNames``, a plugin op of its family named in ``spec`` is
    added after the built-ins (it has no weight unless named).
    """
    if not spec:
        return {name: 1.0 for name in names}
    family = getattr(names, "family", None)
    weights = {name: 0.0 for name in names}
    for part in spec.split(","):
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in weights and family is not None and family_op(family, name) is not None:
            weights[name] = 0.0
        if name not in weights:
            import difflib

            known = [*names, *(family_ops(family) if family is not None else ())]
            hint = difflib.get_close_matches(name, known, n=1)
            suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{flag}: unknown op {name!r}{suggestion}; ops: {', '.join(known)}")
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise ConfigError(f"{flag}: {part!r}: the weight must be a number") from None
        if weight < 0 or not math.isfinite(weight):
            raise ConfigError(f"{flag}: {part!r}: the weight must be 0 or more")
        weights[name] = weight
    if not any(weights.values()):
        raise ConfigError(f"{flag}: at least one op needs a weight above 0")
    return weights


def choose_op(rng: random.Random, weights: dict[str, float]) -> str:
    """One op drawn from ``weights`` with the record's own RNG (reproducible per record)."""
    names = [name for name, weight in weights.items() if weight > 0]
    return rng.choices(names, weights=[weights[name] for name in names], k=1)[0]


def exact_mix(n: int, weights: dict[str, float], seed: int = 0) -> dict[str, int]:
    """Split ``n`` across ``weights`` with the largest-remainder method.

    The counts add up to exactly ``n`` (never more, as ``ceil`` would give), and
    no count is off its exact share by one or more. Equal remainders are broken
    by a seeded shuffle, not by name, so no op is always the one favoured.
    """
    total = sum(weights.values())
    if n < 0 or total <= 0:
        raise ConfigError("a mix needs n >= 0 and at least one positive weight")
    shares = {name: n * weight / total for name, weight in weights.items()}
    counts = {name: math.floor(share) for name, share in shares.items()}
    left = n - sum(counts.values())
    tie_order = list(shares)
    random.Random(seed).shuffle(tie_order)
    rank = {name: i for i, name in enumerate(tie_order)}
    by_remainder = sorted(shares, key=lambda name: (-(shares[name] - counts[name]), rank[name]))
    for name in by_remainder[:left]:
        counts[name] += 1
    return counts


class MixPlan:
    """Which op the seed at position ``i`` of ``n`` gets, so that the counts are exact.

    The counts are ``exact_mix(n, weights, seed)``; positions are spread over the ops by
    a seeded affine permutation of ``range(n)``, so the plan needs no memory per
    seed, is reproducible, and does not follow input order.
    """

    def __init__(self, n: int, weights: dict[str, float], seed: int = 0) -> None:
        self.n = n
        self.counts = exact_mix(n, weights, seed)
        rng = random.Random(seed)
        self._a = 1
        if n > 1:
            self._a = rng.randrange(1, n)
            while math.gcd(self._a, n) != 1:
                self._a = rng.randrange(1, n)
        self._b = rng.randrange(n) if n else 0
        self._bounds: list[tuple[int, str]] = []
        upper = 0
        for name, count in self.counts.items():
            if count:
                upper += count
                self._bounds.append((upper, name))

    def op_for(self, i: int) -> str | None:
        """The op of position ``i``; ``None`` past ``n`` (the plan never gives more).

        Positions count every input row, bad rows included: a bad row keeps its
        slot (and is rejected as ``bad_seed``), so counts can only fall short."""
        if not 0 <= i < self.n:
            return None
        slot = (self._a * i + self._b) % self.n
        for upper, name in self._bounds:
            if slot < upper:
                return name
        raise AssertionError("unreachable")  # pragma: no cover
