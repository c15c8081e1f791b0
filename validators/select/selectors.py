"""Selection: whole-set selectors over scored records; no model.

Each selector returns ``(selected, dropped)``: the selected records in input order,
and a :class:`~evoforge.engine.runner.Rejection` with a reason code for every other one:

- :func:`select_deita` -- DEITA's Repr filter: ``too_similar`` (with the selected
  record it lost to and the cosine), ``over_budget``, ``unscored``;
- :func:`select_alpagasus` -- keep score >= 4.5: ``low_score``, ``unscored``;
- :func:`select_kcenter` -- LTD, k-means then greedy k-center: ``not_selected``;
- :func:`select_random` -- the baseline: ``not_selected``.

:func:`select` dispatches by name through :data:`SELECTORS`. The scores come from
:mod:`.scorers`.
"""

from __future__ import annotations

import difflib
import inspect
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evoforge.embeddings import Embedder
from evoforge.engine.runner import Rejection
from evoforge.errors import ConfigError, did_you_mean
from evoforge.options import KCENTER_MODES
from evoforge.records import Record
from evoforge.registry import registry
from evoforge.validators.select.texts import RecordLike, _as_record, text_of

__all__ = [
    "KCENTER_MODES",
    "SELECTORS",
    "greedy_kcenter",
    "kmeans",
    "select",
    "select_alpagasus",
    "select_deita",
    "select_kcenter",
    "select_random",
]


def _check_budget(budget: int) -> int:
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 0:
        raise ConfigError(f"selection budget must be an integer >= 0 (got {budget!r})")
    return budget


def _drop(record: Record, reason: str, detail: str) -> Rejection:
    return Rejection(record.id, reason, detail, record.to_json())


def _meta_score(record: Record, key: str) -> float | None:
    block = record.meta.get(key)
    score = block.get("score") if isinstance(block, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        return None
    return float(score)


def _split(
    records: list[Record], chosen: set[int], dropped: dict[int, Rejection]
) -> tuple[list[Record], list[Rejection]]:
    """Selected records and rejections, both in input order."""
    selected = [r for i, r in enumerate(records) if i in chosen]
    return selected, [dropped[i] for i in sorted(dropped)]


def _embed(records: list[Record], embedder: Embedder, fields: Sequence[str] | None):
    if not records:
        return np.zeros((0, 1), dtype=np.float32)
    vectors = np.asarray(embedder.embed([text_of(r, fields) for r in records]), np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def select_deita(
    records: Sequence[RecordLike],
    budget: int,
    tau: float = 0.9,
    embedder: Embedder | None = None,
    *,
    fields: Sequence[str] | None = None,
) -> tuple[list[Record], list[Rejection]]:
    """DEITA's score-first, diversity-aware selection (the "Repr filter").

    Sort by ``meta.deita.score`` descending (ties: lowest id), walk the list and add
    a record only when its cosine similarity to *every* record selected so far is
    <= ``tau`` (the paper's algorithm; distilabel's DeitaFiltering compares against
    the whole pool instead); stop at ``budget``. ``tau >= 1`` skips the embedding and
    gives exactly the top ``budget`` by score. Paper: tau = 0.9, budgets 6K / 10K.
    Dropped: ``too_similar`` (naming the closest selected record and the cosine),
    ``over_budget``, ``unscored`` (no ``meta.deita.score``).
    """
    budget = _check_budget(budget)
    items = [_as_record(r) for r in records]
    dropped: dict[int, Rejection] = {}
    scored = []
    for i, record in enumerate(items):
        score = _meta_score(record, "deita")
        if score is None:
            dropped[i] = _drop(record, "unscored", "no meta.deita.score; run DeitaScorer first")
        else:
            scored.append((-score, record.id, i))
    scored.sort()
    check = tau < 1.0
    if check and embedder is None:
        raise ConfigError("select_deita: tau < 1 needs an embedder (e.g. load_embedder())")
    vectors = _embed(items, embedder, fields) if check and scored else None
    chosen: list[int] = []
    # The selected vectors, filled row by row: each candidate meets them in one product.
    kept = np.empty((min(budget, len(scored)), vectors.shape[1] if vectors is not None else 0))
    for _, _, i in scored:
        record = items[i]
        if len(chosen) >= budget:
            dropped[i] = _drop(record, "over_budget", f"budget {budget} already filled")
            continue
        if check and chosen:
            assert vectors is not None
            sims = kept[: len(chosen)] @ vectors[i]
            best = int(np.argmax(sims))
            if sims[best] > tau:
                closest = items[chosen[best]].id
                dropped[i] = Rejection.of(
                    record,
                    "too_similar",
                    f"too similar to {closest} (cosine {sims[best]:.4f} > tau {tau})",
                    lost_to=closest,
                )
                continue
        if vectors is not None:
            kept[len(chosen)] = vectors[i]
        chosen.append(i)
    return _split(items, set(chosen), dropped)


def select_alpagasus(
    records: Sequence[RecordLike], min_score: float = 4.5, *, budget: int | None = None
) -> tuple[list[Record], list[Rejection]]:
    """AlpaGasus (Chen et al., 2023): keep ``meta.alpagasus.score >= min_score`` (4.5 in
    the paper: Alpaca 52K -> ~9K). Dropped: ``low_score`` (with the score),
    ``unscored``. With ``budget``, only the best ``budget`` of those kept stay (ties:
    lowest id), the rest dropped ``over_budget``: not in the paper, off by default.
    """
    items = [_as_record(r) for r in records]
    dropped: dict[int, Rejection] = {}
    kept: list[tuple[float, str, int]] = []
    for i, record in enumerate(items):
        score = _meta_score(record, "alpagasus")
        if score is None:
            dropped[i] = _drop(
                record, "unscored", "no meta.alpagasus.score; run AlpagasusRater first"
            )
        elif score < min_score:
            dropped[i] = _drop(record, "low_score", f"score {score:g} < {min_score:g}")
        else:
            kept.append((-score, record.id, i))
    if budget is not None:
        kept.sort()
        for _, _, i in kept[_check_budget(budget) :]:
            dropped[i] = _drop(items[i], "over_budget", f"budget {budget} already filled")
        kept = kept[:budget]
    return _split(items, {i for _, _, i in kept}, dropped)


def _squared_distances(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """``(len(points), len(centres))`` squared Euclidean distances, without the
    ``n x k x d`` intermediate a broadcast difference would build."""
    sq = (points**2).sum(axis=1)[:, None] - 2.0 * points @ centres.T + (centres**2).sum(axis=1)
    return np.maximum(sq, 0.0)


def kmeans(
    vectors: np.ndarray, k: int, rng: np.random.Generator, *, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding (Arthur & Vassilvitskii, 2007).

    Returns ``(labels, centroids)``. All randomness comes from ``rng``. An emptied
    cluster is re-seeded at the point farthest from its centroid.
    """
    n = len(vectors)
    k = max(1, min(k, n))
    centroids = np.empty((k, vectors.shape[1]))
    centroids[0] = vectors[rng.integers(n)]
    closest = ((vectors - centroids[0]) ** 2).sum(axis=1)
    for j in range(1, k):
        total = closest.sum()
        pick = rng.choice(n, p=closest / total) if total > 0 else rng.integers(n)
        centroids[j] = vectors[pick]
        closest = np.minimum(closest, ((vectors - centroids[j]) ** 2).sum(axis=1))
    labels = np.full(n, -1)
    for _ in range(max_iter):
        distances = _squared_distances(vectors, centroids)
        new_labels = distances.argmin(axis=1)
        if np.array_equal(new_labels, labels):
            break
        labels = new_labels
        for j in range(k):
            members = vectors[labels == j]
            if len(members):
                centroids[j] = members.mean(axis=0)
            else:
                far = int(distances[np.arange(n), labels].argmax())
                centroids[j] = vectors[far]
    return labels, centroids


def greedy_kcenter(vectors: np.ndarray, m: int, *, first: int = 0) -> list[int]:
    """Farthest-point greedy k-center (Gonzalez, 1985): start at ``first``, then
    repeatedly add the point whose Euclidean distance to the selected set is largest
    (ties: lowest index). Returns ``min(m, len(vectors))`` indexes in pick order."""
    n = len(vectors)
    if n == 0 or m <= 0:
        return []
    return _farthest_points(vectors, [first], m)


def _farthest_points(vectors: np.ndarray, picked: list[int], m: int) -> list[int]:
    """Extend ``picked`` (in place) by farthest-point greedy until it holds
    ``min(m, len(vectors))`` indexes; :func:`greedy_kcenter` and :func:`_global_kcenter`
    both grow their picks here."""
    n = len(vectors)
    gap = np.full(n, np.inf)
    for s in picked:
        gap = np.minimum(gap, np.sqrt(((vectors - vectors[s]) ** 2).sum(axis=1)))
    gap[picked] = -1.0
    while len(picked) < min(m, n):
        nxt = int(np.argmax(gap))
        picked.append(nxt)
        gap = np.minimum(gap, np.sqrt(((vectors - vectors[nxt]) ** 2).sum(axis=1)))
        gap[picked] = -1.0
    return picked


def _allocate(sizes: list[int], budget: int) -> list[int]:
    """Split ``budget`` across clusters in proportion to their sizes (largest remainder,
    ties: lower cluster index), never more than a cluster holds."""
    quotas = [0] * len(sizes)
    left = min(budget, sum(sizes))
    while left > 0:
        open_ = [j for j, size in enumerate(sizes) if quotas[j] < size]
        room = sum(sizes[j] - quotas[j] for j in open_)
        shares = {j: left * (sizes[j] - quotas[j]) / room for j in open_}
        given = 0
        for j in open_:
            add = min(int(shares[j]), sizes[j] - quotas[j])
            quotas[j] += add
            given += add
        rest = left - given
        order = sorted(open_, key=lambda j: (-(shares[j] - int(shares[j])), j))
        for j in order:
            if rest == 0:
                break
            if quotas[j] < sizes[j]:
                quotas[j] += 1
                rest -= 1
        left = rest
    return quotas


def _nearest_to_centroids(
    vectors: np.ndarray, labels: np.ndarray, centroids: np.ndarray
) -> list[tuple[int, np.ndarray]]:
    """Per non-empty cluster: (the index of its point nearest the centroid, its members)."""
    out = []
    for j, centroid in enumerate(centroids):
        group = np.flatnonzero(labels == j)
        if len(group):
            nearest = int(group[((vectors[group] - centroid) ** 2).sum(axis=1).argmin()])
            out.append((nearest, group))
    return out


def _global_kcenter(vectors: np.ndarray, seeds: list[int], m: int) -> list[int]:
    """Farthest-point greedy over the whole set, started from every index in ``seeds``
    (when ``m`` is smaller than the seeds, the greedy picks ``m`` of the seeds)."""
    if len(seeds) >= m:
        sub = vectors[seeds]
        return [seeds[p] for p in greedy_kcenter(sub, m)]
    return _farthest_points(vectors, list(seeds), m)


def select_kcenter(
    records: Sequence[RecordLike],
    budget: int,
    embedder: Embedder,
    k: int | None = None,
    seed: int = 0,
    *,
    fields: Sequence[str] | None = None,
    mode: str = "global",
) -> tuple[list[Record], list[Rejection]]:
    """LTD, "Maybe Only 0.5% Data is Needed" (Chen et al., 2023): embed each record
    (instruction + response by default), L2-normalise, k-means, then greedy k-center.

    ``mode="global"`` (the paper's): the centres start as the K points nearest the
    cluster centroids, then one farthest-point loop over the whole set adds the point
    farthest from every centre until the budget is met -- no density weighting.
    ``mode="per-cluster"`` (evoforge before issue 14): the budget is split across
    clusters in proportion to their sizes (largest remainder) and greedy k-center runs
    inside each cluster from the point nearest its centroid.

    ``k`` defaults to ``max(1, budget // 10)``: the paper's encoder and K are not
    verified here, so both are parameters. Deterministic for a given ``seed`` (a NumPy
    generator made from it). Dropped: ``not_selected``.
    """
    budget = _check_budget(budget)
    if mode not in KCENTER_MODES:
        raise ConfigError(
            f"select_kcenter: mode {mode!r}; use one of {', '.join(KCENTER_MODES)}"
            + did_you_mean(mode, KCENTER_MODES)
        )
    items = [_as_record(r) for r in records]
    chosen: set[int] = set()
    if items and budget:
        vectors = _embed(items, embedder, fields)
        clusters = max(1, budget // 10) if k is None else k
        if clusters < 1:
            raise ConfigError(f"select_kcenter: k must be >= 1 (got {k})")
        labels, centroids = kmeans(vectors, clusters, np.random.default_rng(seed))
        seeds = _nearest_to_centroids(vectors, labels, centroids)
        if mode == "global":
            chosen.update(_global_kcenter(vectors, [s for s, _ in seeds], budget))
        else:
            quotas = _allocate([len(g) for _, g in seeds], budget)
            for (start, group), quota in zip(seeds, quotas, strict=True):
                if quota == 0:
                    continue
                first = int(np.flatnonzero(group == start)[0])
                picks = greedy_kcenter(vectors[group], quota, first=first)
                chosen.update(int(group[p]) for p in picks)
    dropped = {
        i: _drop(r, "not_selected", f"k-center ({mode}) kept {len(chosen)} of {len(items)}")
        for i, r in enumerate(items)
        if i not in chosen
    }
    return _split(items, chosen, dropped)


def select_random(
    records: Sequence[RecordLike], budget: int, seed: int = 0
) -> tuple[list[Record], list[Rejection]]:
    """The baseline: ``budget`` records drawn uniformly without replacement, with a
    ``random.Random(seed)`` of its own. Dropped: ``not_selected``."""
    budget = _check_budget(budget)
    items = [_as_record(r) for r in records]
    chosen = set(random.Random(seed).sample(range(len(items)), min(budget, len(items))))
    dropped = {
        i: _drop(r, "not_selected", f"random sample of {len(chosen)} (seed {seed})")
        for i, r in enumerate(items)
        if i not in chosen
    }
    return _split(items, chosen, dropped)


def _alpagasus(records: Sequence[RecordLike], budget: int | None = None, **kw: Any):
    return select_alpagasus(records, budget=budget, **kw)


SELECTORS: dict[str, Callable[..., tuple[list[Record], list[Rejection]]]] = {
    "deita": select_deita,
    "alpagasus": _alpagasus,
    "kcenter": select_kcenter,
    "random": select_random,
}


def select(
    records: Sequence[RecordLike], method: str, budget: int | None = None, **kw: Any
) -> tuple[list[Record], list[Rejection]]:
    """Run the selector named ``method`` (``deita``, ``alpagasus``, ``kcenter``,
    ``random``); ``kw`` go to it. Only ``alpagasus`` runs without a budget."""
    selector = SELECTORS.get(method)
    if selector is None and method in registry("selector"):  # a plugin's selector
        selector = registry("selector").lookup(method)
    if selector is None:
        methods = [*SELECTORS, *(m for m in registry("selector") if m not in SELECTORS)]
        hint = difflib.get_close_matches(method, methods, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(
            f"unknown selection method {method!r}; use one of {', '.join(methods)}.{suggestion}"
        )
    if budget is None and method != "alpagasus":
        raise ConfigError(f"selection method {method!r} needs a budget")
    known = set(inspect.signature(selector).parameters) - {"records", "budget"}
    if method == "alpagasus":
        known = set(inspect.signature(select_alpagasus).parameters) - {"records", "budget"}
    unknown = sorted(set(kw) - known)
    if unknown:
        raise ConfigError(
            f"selection method {method!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
    return selector(records, budget=budget, **kw)
