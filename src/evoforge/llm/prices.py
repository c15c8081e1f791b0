"""USD prices per model, and what a run's tokens cost online and at the batch price.

The prices live in ``models.yaml`` beside the context windows (issue 19, part 4): an
entry's ``prices`` holds ``input_per_mtok``, ``output_per_mtok`` (USD per 1M tokens),
``cached_input_per_mtok`` (a prompt token the provider's prefix cache served; null
where it has no separate price), ``batch_discount`` (the share off for Batch API calls:
0.5 is half price; null where the provider has no batch price), the ``date`` the price
was read and its ``source``. The packaged prices were transcribed from the providers'
pricing pages, not fetched: prices change, so check them and give ``--prices FILE``
(the same shape, over the table) or ``run --price IN,OUT`` (one model).

A model is found as :func:`evoforge.llm.models_table.lookup` finds it (exact name, then
the longest entry it starts with, then without an ``org/`` prefix). A model with no
price gets none: its cost is null and says ``no price for MODEL (give --prices or
--price)``, never a guess. The embedded local model and scripted models cost 0.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, did_you_mean
from evoforge.llm.models_table import ModelFacts, load_table, lookup

FIELDS = (
    "input_per_mtok",
    "output_per_mtok",
    "cached_input_per_mtok",
    "batch_discount",
    "date",
    "source",
)
ENTRY_KEYS = ("prices", "context_window", "date", "source")  # a prices file's model entry
FREE_BACKENDS = {
    "local": "the embedded local model: no per-token price (cost 0)",
    "scripted": "a scripted model: no per-token price (cost 0)",
}
OVERRIDE_SOURCE = "--price"


@dataclass(frozen=True)
class Price:
    """One model's list prices, USD per 1M tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    batch_discount: float | None = 0.5
    date: str = ""
    source: str = ""

    def usd(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """The online price of these tokens; ``cached_tokens`` (part of the prompt tokens)
        at the cached-input price where the provider has one."""
        cached = max(0, min(cached_tokens, prompt_tokens))
        cached_rate = self.cached_input_per_mtok
        if cached_rate is None:
            cached_rate = self.input_per_mtok
        total = (
            (prompt_tokens - cached) * self.input_per_mtok
            + cached * cached_rate
            + completion_tokens * self.output_per_mtok
        )
        return total / 1e6

    def batch_usd(self, online_usd: float) -> float | None:
        """``online_usd`` at the batch price; None where the provider has no batch price."""
        if self.batch_discount is None:
            return None
        return online_usd * (1.0 - self.batch_discount)

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


@dataclass(frozen=True)
class Pricing:
    """What a run is priced at: the model, its price (None: unknown, or free), and where
    the price came from, in words (``source``)."""

    model: str | None
    price: Price | None
    source: str
    free: bool = False

    def usd(self, prompt: int, completion: int, cached: int = 0) -> float | None:
        if self.free:
            return 0.0
        return None if self.price is None else self.price.usd(prompt, completion, cached)

    def batch_usd(self, online_usd: float | None) -> float | None:
        if self.free:
            return 0.0
        if self.price is None or online_usd is None:
            return None
        return self.price.batch_usd(online_usd)


def parse_override(pair: tuple[float, float]) -> Price:
    """``run --price IN,OUT`` as a price: the Batch API's usual half price for batch."""
    return Price(pair[0], pair[1], source=OVERRIDE_SOURCE)


# --- reading ----------------------------------------------------------------------------


def parse_price(entry: Any, where: str, *, strict: bool = False) -> Price:
    """One ``prices`` mapping, checked field by field; ``where`` names it in errors (a
    ``ConfigError`` saying which field and what it should be). ``strict``: ``date`` and
    ``source`` are required (the packaged table)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping of {', '.join(FIELDS)}")
    for key in entry:
        if key not in FIELDS:
            raise ConfigError(f"{where}.{key}: unknown price field{did_you_mean(key, FIELDS)}")
    values: dict[str, Any] = {}
    for name in ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok"):
        value = entry.get(name)
        if name not in entry and name != "cached_input_per_mtok":
            raise ConfigError(f"{where}.{name}: missing (USD per 1M tokens)")
        if value is None and name == "cached_input_per_mtok":
            continue
        if not _number(value) or value < 0:
            raise ConfigError(f"{where}.{name}: expected a number >= 0 (USD per 1M tokens)")
        values[name] = float(value)
    discount = entry.get("batch_discount", 0.5)
    if discount is not None and (not _number(discount) or not 0 <= discount < 1):
        raise ConfigError(
            f"{where}.batch_discount: expected a share off in [0, 1) (0.5: half price) or null"
        )
    values["batch_discount"] = None if discount is None else float(discount)
    for name in ("date", "source"):
        value = entry.get(name)
        if value is None and not strict:
            continue
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{where}.{name}: expected a non-empty string")
        values[name] = value
    return Price(**values)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@functools.lru_cache(maxsize=1)
def packaged_prices() -> dict[str, ModelFacts]:
    """The entries of the packaged ``models.yaml`` that have prices, their ``raw``
    ``prices`` parsed into a :class:`Price` (``raw["price"]``)."""
    table: dict[str, ModelFacts] = {}
    for key, facts in load_table().items():
        if "prices" in facts.raw:
            where = f"models.yaml: models.{facts.name}.prices"
            price = parse_price(facts.raw["prices"], where, strict=True)
            table[key] = ModelFacts(facts.name, facts.context_window, price.date,
                                    price.source, {"price": price})  # fmt: skip
    return table


def load_prices_file(path: str | os.PathLike[str]) -> dict[str, ModelFacts]:
    """A ``--prices`` file (YAML or JSON, ``models: NAME: prices: {...}`` as in
    ``models.yaml``); a bad one is a ``ConfigError`` naming the file, line and field."""
    file = Path(path)
    try:
        stat = file.stat()
    except OSError as exc:
        raise ConfigError(f"--prices {path}: cannot read it ({exc.strerror or exc})") from None
    return _load_prices_file(str(file), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load_prices_file(path: str, _mtime: int, _size: int) -> dict[str, ModelFacts]:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--prices {path}: cannot read it ({exc})") from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{line}: not valid YAML or JSON: {problem}") from None

    def at(*keys: str) -> str:
        return f"{path}:{_line_of(root, keys)}"

    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise ConfigError(f"{at('models')}: models: expected a mapping of model name -> "
                          "{prices: {input_per_mtok, output_per_mtok, ...}}")  # fmt: skip
    table: dict[str, ModelFacts] = {}
    for name, entry in models.items():
        name = str(name)
        if not isinstance(entry, dict):
            raise ConfigError(f"{at('models', name)}: models.{name}: expected a mapping")
        for key in entry:
            if key not in ENTRY_KEYS:
                raise ConfigError(f"{at('models', name, str(key))}: models.{name}.{key}: "
                                  f"unknown key{did_you_mean(str(key), ENTRY_KEYS)}")  # fmt: skip
        if "prices" not in entry:
            continue  # a copy of models.yaml: an entry without prices
        prices = entry["prices"]
        try:
            price = parse_price(prices, f"models.{name}.prices")
        except ConfigError as exc:
            field = str(exc).split(":", 1)[0].rsplit(".", 1)[-1]
            keys = ("models", name, "prices", field) if isinstance(prices, dict) else ()
            raise ConfigError(f"{at(*keys) if keys else at('models', name)}: {exc}") from None
        if not price.source:
            price = Price(**{**price.to_json(), "source": f"--prices {path}"})
        table[name.lower()] = ModelFacts(name, None, price.date, price.source, {"price": price})
    return table


def _line_of(root: Any, keys: tuple[str, ...]) -> int:
    """The line (1-based) of the deepest of ``keys`` found under a composed YAML node."""
    node, line = root, (root.start_mark.line + 1 if root is not None else 1)
    for key in keys:
        if node is None or not hasattr(node, "value") or not isinstance(node.value, list):
            break
        found = None
        for pair in node.value:
            if isinstance(pair, tuple) and str(pair[0].value) == key:
                found = pair
        if found is None:
            break
        line, node = found[0].start_mark.line + 1, found[1]
    return line


# --- resolving ----------------------------------------------------------------------------


def model_of(identity: dict[str, Any]) -> tuple[str, str | None]:
    """(backend, model name) from a chat model's ``identity``."""
    return str(identity.get("backend") or ""), identity.get("model")


def pricing(
    backend: str,
    model: str | None,
    *,
    prices_file: str | os.PathLike[str] | None = None,
    override: tuple[float, float] | None = None,
) -> Pricing:
    """The price a run of ``model`` on ``backend`` pays: ``override`` (``--price``); else
    0 on the local and scripted backends; else ``prices_file`` (``--prices``), else
    ``models.yaml``; anything else is ``no price for MODEL``."""
    if override is not None:
        return Pricing(model, parse_override(override), f"{OVERRIDE_SOURCE} (given)")
    if backend in FREE_BACKENDS:
        return Pricing(model, None, FREE_BACKENDS[backend], free=True)
    if model:
        if prices_file:
            facts = lookup(model, load_prices_file(prices_file))
            if facts is not None:
                return Pricing(model, facts.raw["price"], _said(facts, f"--prices {prices_file}"))
        facts = lookup(model, packaged_prices())
        if facts is not None:
            return Pricing(model, facts.raw["price"], _said(facts, "models.yaml"))
    return Pricing(model, None, f"no price for {model or backend} (give --prices or --price)")


def _said(facts: ModelFacts, where: str) -> str:
    price: Price = facts.raw["price"]
    parts = [f"{where}: {facts.name}"]
    if price.date:
        parts.append(f"as of {price.date}")
    if price.source and not price.source.startswith("--prices"):
        parts.append(price.source)
    return ", ".join(parts)


def cost_block(
    identity: dict[str, Any], usage: dict[str, dict[str, int]], accepted: int,
    settings: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    """The manifest's ``cost`` (see COMMON contract / docs/cost.md): the run's tokens at
    the online and at the batch price, per accepted record, and which one it paid."""
    backend, model = model_of(identity)
    try:
        priced = pricing(backend, model, prices_file=settings.get("prices"))
    except ConfigError as exc:  # the file changed under a finished run: say so, lose nothing
        priced = Pricing(model, None, f"no price for {model}: {exc}")
    prompt = sum(int(op.get("prompt_tokens", 0)) for op in usage.values())
    completion = sum(int(op.get("completion_tokens", 0)) for op in usage.values())
    cached = sum(int(op.get("cached_tokens", 0) or 0) for op in usage.values())
    online = priced.usd(prompt, completion, cached)
    batch = priced.batch_usd(online)
    return {
        "model": model,
        "price_source": priced.source,
        "price": priced.price.to_json() if priced.price is not None else None,
        "usd_online": _round(online),
        "usd_batch": _round(batch),
        "usd_per_accepted_online": _per(online, accepted),
        "usd_per_accepted_batch": _per(batch, accepted),
        "priced_at": "batch" if settings.get("batch") else "online",
    }


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.9g}")


def _per(value: float | None, accepted: int) -> float | None:
    return None if value is None or accepted <= 0 else _round(value / accepted)


def format_usd(value: float | None) -> str:
    """``$12.3456``, ``$0.0123``; a smaller amount keeps 3 significant digits
    (``$0.0000131``); ``-`` for none."""
    if value is None:
        return "-"
    if value == 0 or value >= 0.01:
        return f"${value:,.4f}"
    return f"${value:.{2 - math.floor(math.log10(value))}f}"


__all__ = [
    "Price",
    "Pricing",
    "cost_block",
    "format_usd",
    "load_prices_file",
    "packaged_prices",
    "parse_price",
    "pricing",
]
