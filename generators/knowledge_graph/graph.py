"""The knowledge graph a RAG evaluation set is drawn from: documents, chunks and their links.

Ragas builds a knowledge graph of documents and chunks, enriches the chunks
(embeddings, keyphrases) and links them by cosine similarity and by keyphrase
overlap, so that single-hop questions come from one chunk and multi-hop questions
from chunks that are linked (Ragas ``testset`` docs, "Knowledge graph"). Here the
same graph is built without an LLM:

* nodes ``doc:<doc_id>`` (``type="document"``, ``path``, ``language``) and
  ``chunk:<chunk_id>`` (``type="chunk"``, ``doc_id``, ``path``, ``index``, ``start``,
  ``end``, ``text``, ``keyphrases``, ``embedding_row``);
* edges, keyed and tagged by ``kind``, each with a ``weight``:

  - ``part_of``   chunk -> its document (weight 1);
  - ``next``      chunk -> the following chunk of the same document (weight 1);
  - ``similar``   chunk -> each of its ``top_k`` most similar chunks whose cosine is
                  at least ``threshold`` (weight = cosine): a k-nearest-neighbour
                  graph, so a chunk has at most ``top_k`` outgoing ``similar`` edges,
                  and a pair that is mutually near has one edge each way;
  - ``keyphrase`` chunk -> the chunks sharing at least ``min_shared`` of its
                  keyphrases, the ``max_keyphrase_edges`` strongest (weight = number
                  shared, ``keyphrases`` = the shared ones).

Keyphrases are the ``keyphrases_per_chunk`` terms of highest TF-IDF in a chunk
(sublinear tf, smoothed idf as in scikit-learn), over unigrams and bigrams of
words that are not English stop words; Chinese, Japanese and Korean text gives
character bigrams (:func:`evoforge.embeddings.word_tokens`).

Nothing here is quadratic in memory: similarities are computed 1,024 rows (fewer
for a very large corpus) against all at a time, keeping the top ``k`` with
``np.argpartition``; keyphrase overlaps are counted from an inverted index in
bounded blocks.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from evoforge.embeddings import (
    ENGLISH_STOP_WORDS,
    Embedder,
    EmbeddingCache,
    embed_cached,
    is_cjk,
    word_tokens,
)
from evoforge.errors import ConfigError
from evoforge.io.documents import Chunk, Document

__all__ = [
    "EDGE_KINDS",
    "KnowledgeGraph",
    "extract_keyphrases",
    "keyphrase_links",
    "nearest_neighbours",
]

FORMAT = "evoforge.knowledge_graph/1"
EDGE_KINDS = ("part_of", "next", "similar", "keyphrase")
DOC_PREFIX = "doc:"
CHUNK_PREFIX = "chunk:"

_SIMILARITY_CELLS = 1 << 24  # similarities per block: 64 MiB, + 128 MiB of argpartition indices
_SIMILARITY_ROWS = 1024
_PAIR_BUDGET = 1 << 22  # keyphrase co-occurrences counted per block

# CJK function characters (Chinese particles, pronouns, measure words): a character
# bigram holding one is grammar, not a keyphrase; so is one holding Hiragana.
_CJK_FUNCTION_CHARS = frozenset("的了是在和与及或也而之其为以于被把从这那些")
_HIRAGANA = re.compile("[\u3040-\u309f]")

# Clause punctuation, Latin and CJK: a bigram never spans it.
_CLAUSES = re.compile(
    r"[.,;:!?()\[\]{}\"“”‘’«»|/\\<>=+*#~`\n\r\t。，、；：！？（）【】「」『』《》]+"
)


# ----------------------------------------------------------------------------- keyphrases


def candidate_terms(text: str) -> list[str]:
    """Unigrams and bigrams of ``text`` that can be keyphrases, in order, repeats kept.

    A word counts when it is not an English stop word, has two characters or more and
    is not a bare number; a bigram is two such words next to each other in one clause.
    CJK character bigrams (and lone characters) are terms as they are, unless they hold
    a function character (的, 是, ...) or Hiragana (Japanese grammar).
    """
    terms: list[str] = []
    for clause in _CLAUSES.split(text):
        previous: str | None = None
        for token in word_tokens(clause):
            if is_cjk(token):
                if not _CJK_FUNCTION_CHARS.intersection(token) and not _HIRAGANA.search(token):
                    terms.append(token)
                previous = None
                continue
            if token in ENGLISH_STOP_WORDS or len(token) < 2 or token.isdigit():
                previous = None
                continue
            terms.append(token)
            if previous is not None:
                terms.append(f"{previous} {token}")
            previous = token
    return terms


def extract_keyphrases(texts: Sequence[str], per_text: int = 8) -> list[list[str]]:
    """The ``per_text`` terms of highest TF-IDF in each text, best first.

    tf is sublinear (``1 + ln count``), idf smoothed (``ln((1 + n) / (1 + df)) + 1``);
    ties go to the alphabetically first term, so the result is deterministic.
    """
    counts = [Counter(candidate_terms(text)) for text in texts]
    df: Counter[str] = Counter()
    for count in counts:
        df.update(count.keys())
    n = len(texts)
    idf = {term: math.log((1 + n) / (1 + d)) + 1.0 for term, d in df.items()}
    phrases: list[list[str]] = []
    for count in counts:
        best = heapq.nsmallest(
            per_text,
            count.items(),
            key=lambda item: (-(1.0 + math.log(item[1])) * idf[item[0]], item[0]),
        )
        phrases.append([term for term, _ in best])
    return phrases


def keyphrase_links(
    keyphrases: Sequence[Sequence[str]], *, min_shared: int = 2, max_per_item: int = 10
) -> list[tuple[int, int, int]]:
    """``(i, j, shared)`` for the items ``j != i`` sharing ``shared >= min_shared``
    keyphrases with item ``i``: at most ``max_per_item`` per ``i``, most shared first
    (ties to the lower ``j``). Sorted by ``i``.

    Overlaps are counted from an inverted index, a bounded number of co-occurrences
    per block, so memory stays flat however many items share a keyphrase.
    """
    n = len(keyphrases)
    if n < 2 or max_per_item < 1:
        return []
    vocabulary = {term: t for t, term in enumerate(sorted({p for ps in keyphrases for p in ps}))}
    row_terms = [sorted({vocabulary[p] for p in ps}) for ps in keyphrases]
    rows = np.repeat(np.arange(n, dtype=np.int64), [len(ts) for ts in row_terms])
    terms = np.fromiter(chain.from_iterable(row_terms), dtype=np.int64, count=len(rows))
    df = np.bincount(terms, minlength=len(vocabulary))
    pointer = np.concatenate([[0], np.cumsum(df)])
    postings = rows[np.argsort(terms, kind="stable")]  # the rows of each term, ascending
    row_pointer = np.concatenate([[0], np.cumsum([len(ts) for ts in row_terms])])
    work = np.bincount(rows, weights=df[terms], minlength=n).astype(np.int64)  # pairs per row

    links: list[tuple[int, int, int]] = []
    start = 0
    while start < n:
        stop, budget = start + 1, int(work[start])
        while stop < n and budget + int(work[stop]) <= _PAIR_BUDGET:
            budget += int(work[stop])
            stop += 1
        links.extend(
            _block_links(
                rows[row_pointer[start] : row_pointer[stop]],
                terms[row_pointer[start] : row_pointer[stop]],
                df,
                pointer,
                postings,
                n,
                min_shared,
                max_per_item,
            )
        )
        start = stop
    return links


def _block_links(
    block_rows: np.ndarray,
    block_terms: np.ndarray,
    df: np.ndarray,
    pointer: np.ndarray,
    postings: np.ndarray,
    n: int,
    min_shared: int,
    max_per_item: int,
) -> list[tuple[int, int, int]]:
    lengths = df[block_terms]
    total = int(lengths.sum())
    if total == 0:
        return []
    # The postings of every (row, term) pair of the block, laid end to end.
    offsets = np.cumsum(lengths) - lengths
    gather = np.arange(total) - np.repeat(offsets - pointer[block_terms], lengths)
    pairs = np.repeat(block_rows, lengths) * n + postings[gather]
    keys, shared = np.unique(pairs, return_counts=True)
    source, target = keys // n, keys % n
    keep = (shared >= min_shared) & (source != target)
    source, target, shared = source[keep], target[keep], shared[keep]
    order = np.lexsort((target, -shared, source))
    source, target, shared = source[order], target[order], shared[order]
    position = np.arange(len(source))
    first = np.r_[True, source[1:] != source[:-1]] if len(source) else np.zeros(0, bool)
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    keep = rank < max_per_item
    return list(
        zip(source[keep].tolist(), target[keep].tolist(), shared[keep].tolist(), strict=True)
    )


# ----------------------------------------------------------------------------- similarity


def nearest_neighbours(
    embeddings: np.ndarray,
    *,
    top_k: int = 5,
    threshold: float = 0.6,
    block_rows: int | None = None,
) -> list[tuple[int, int, float]]:
    """``(i, j, cosine)`` for each row ``i``'s ``top_k`` most similar rows ``j != i`` with
    ``cosine >= threshold``, most similar first, then by ``j``; sorted by ``i``. (Which
    of several rows tied at the k-th place is kept is ``np.argpartition``'s choice: the
    same for the same input.)

    Rows must be L2-normalised. ``block_rows`` rows are compared with all at a time
    (default 1,024, fewer when the corpus is so large that a block would pass 16M
    similarities), so memory is linear in the number of rows.
    """
    n = len(embeddings)
    k = min(top_k, n - 1)
    if k <= 0:
        return []
    matrix = np.ascontiguousarray(embeddings, dtype=np.float32)
    block = block_rows or max(1, min(_SIMILARITY_ROWS, _SIMILARITY_CELLS // n))
    cutoff = np.float32(threshold)
    links: list[tuple[int, int, float]] = []
    for start in range(0, n, block):
        scores = matrix[start : start + block] @ matrix.T
        rows = np.arange(len(scores))
        scores[rows, start + rows] = -np.inf  # never itself
        if k < n - 1:
            top = np.argpartition(scores, n - k, axis=1)[:, n - k :]
        else:
            top = np.broadcast_to(np.arange(n), scores.shape)
        values = np.take_along_axis(scores, top, axis=1)
        order = np.lexsort((top, -values), axis=-1)
        top = np.take_along_axis(top, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        for row, (targets, cosines) in enumerate(zip(top, values, strict=True)):
            keep = cosines >= cutoff
            links.extend(
                zip(
                    [start + row] * int(keep.sum()),
                    targets[keep].tolist(),
                    cosines[keep].tolist(),
                    strict=True,
                )
            )
    return links


# ----------------------------------------------------------------------------- the graph


class KnowledgeGraph:
    """Documents, chunks and the links between chunks (see the module docstring).

    ``graph`` is a :class:`networkx.MultiDiGraph` whose edge keys are their kinds;
    ``embeddings[node["embedding_row"]]`` is a chunk's vector. ``graph.graph`` holds
    the format, the build parameters, the embedder's identity and ``dim``.
    ``timings`` holds the seconds each build phase took (not saved).
    """

    def __init__(self, graph: nx.MultiDiGraph, embeddings: np.ndarray) -> None:
        self.graph = graph
        self.embeddings = embeddings
        self.timings: dict[str, float] = {}

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.graph.graph.get("params", {}))

    @property
    def embedder_identity(self) -> dict[str, str]:
        return dict(self.graph.graph.get("embedder", {}))

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        documents: Iterable[Document],
        chunks: Iterable[Chunk],
        embedder: Embedder,
        *,
        top_k: int = 5,
        threshold: float = 0.6,
        keyphrases_per_chunk: int = 8,
        min_shared: int = 2,
        max_keyphrase_edges: int = 10,
        cache: EmbeddingCache | None = None,
    ) -> KnowledgeGraph:
        """Embed the chunks (through ``cache`` when given), extract keyphrases, link.

        The result depends only on the inputs' content, not on their order: documents
        are laid out by id, chunks by ``(path, index, id)``.
        """
        _check_params(top_k, threshold, keyphrases_per_chunk, min_shared, max_keyphrase_edges)
        docs = sorted(documents, key=lambda d: d.id)
        doc_ids = {d.id for d in docs}
        if len(doc_ids) != len(docs):
            duplicates = sorted(i for i, c in Counter(d.id for d in docs).items() if c > 1)
            raise ConfigError(f"knowledge graph: duplicate document ids {duplicates[:5]}")
        items = sorted(chunks, key=lambda c: (c.path, c.index, c.id))
        if len({c.id for c in items}) != len(items):
            duplicates = sorted(i for i, c in Counter(c.id for c in items).items() if c > 1)
            raise ConfigError(f"knowledge graph: duplicate chunk ids {duplicates[:5]}")
        for chunk in items:
            if chunk.doc_id not in doc_ids:
                raise ConfigError(
                    f"knowledge graph: chunk {chunk.id!r} belongs to document "
                    f"{chunk.doc_id!r}, which is not among the documents given"
                )

        timings: dict[str, float] = {}
        started = time.perf_counter()
        embeddings = embed_cached(embedder, [c.text for c in items], cache)
        dim = embedder.dim
        if embeddings.shape != (len(items), dim):
            raise ConfigError(
                f"knowledge graph: the embedder returned shape {embeddings.shape}, "
                f"expected {(len(items), dim)}"
            )
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        timings["embedding_s"] = time.perf_counter() - started

        mark = time.perf_counter()
        similar = nearest_neighbours(embeddings, top_k=top_k, threshold=threshold)
        timings["similarity_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        keyphrases = extract_keyphrases([c.text for c in items], keyphrases_per_chunk)
        shared = keyphrase_links(
            keyphrases, min_shared=min_shared, max_per_item=max_keyphrase_edges
        )
        timings["keyphrases_s"] = time.perf_counter() - mark

        mark = time.perf_counter()
        graph = nx.MultiDiGraph()
        graph.graph.update(
            format=FORMAT,
            params={
                "top_k": top_k,
                "threshold": threshold,
                "keyphrases_per_chunk": keyphrases_per_chunk,
                "min_shared": min_shared,
                "max_keyphrase_edges": max_keyphrase_edges,
            },
            embedder=dict(embedder.identity),
            dim=dim,
        )
        graph.add_nodes_from(
            (DOC_PREFIX + d.id, {"type": "document", "path": d.path, "language": d.language})
            for d in docs
        )
        names = [CHUNK_PREFIX + c.id for c in items]
        graph.add_nodes_from(
            (
                name,
                {
                    "type": "chunk",
                    "doc_id": c.doc_id,
                    "path": c.path,
                    "index": c.index,
                    "start": c.start,
                    "end": c.end,
                    "text": c.text,
                    "keyphrases": keyphrases[row],
                    "embedding_row": row,
                },
            )
            for row, (name, c) in enumerate(zip(names, items, strict=True))
        )
        graph.add_edges_from(
            (name, DOC_PREFIX + c.doc_id, "part_of", {"kind": "part_of", "weight": 1.0})
            for name, c in zip(names, items, strict=True)
        )
        by_doc: dict[str, list[int]] = {}
        for row, c in enumerate(items):
            by_doc.setdefault(c.doc_id, []).append(row)
        for rows in by_doc.values():
            rows.sort(key=lambda r: (items[r].index, items[r].id))
            graph.add_edges_from(
                (names[a], names[b], "next", {"kind": "next", "weight": 1.0})
                for a, b in pairwise(rows)
            )
        graph.add_edges_from(
            (names[a], names[b], "similar", {"kind": "similar", "weight": cosine})
            for a, b, cosine in similar
        )
        graph.add_edges_from(
            (
                names[a],
                names[b],
                "keyphrase",
                {
                    "kind": "keyphrase",
                    "weight": count,
                    "keyphrases": sorted(set(keyphrases[a]) & set(keyphrases[b])),
                },
            )
            for a, b, count in shared
        )
        timings["graph_s"] = time.perf_counter() - mark
        timings["total_s"] = time.perf_counter() - started

        built = cls(graph, embeddings)
        built.timings = timings
        return built

    # ------------------------------------------------------------------ reading

    def _chunk_node(self, chunk_id: str) -> str:
        node = CHUNK_PREFIX + chunk_id
        if self.graph.nodes.get(node, {}).get("type") != "chunk":
            raise KeyError(f"no chunk {chunk_id!r} in the knowledge graph")
        return node

    def chunk(self, chunk_id: str) -> Chunk:
        """The chunk, rebuilt from its node; ``KeyError`` when there is none."""
        return self._chunk_from(self._chunk_node(chunk_id))

    def _chunk_from(self, node: str) -> Chunk:
        data = self.graph.nodes[node]
        return Chunk(
            id=node[len(CHUNK_PREFIX) :],
            doc_id=data["doc_id"],
            path=data["path"],
            index=data["index"],
            start=data["start"],
            end=data["end"],
            text=data["text"],
        )

    def chunks(self) -> list[Chunk]:
        """Every chunk, in ``(path, index)`` order."""
        return [self._chunk_from(n) for n in self._chunk_nodes_in_order()]

    def _chunk_nodes_in_order(self) -> list[str]:
        rows = [
            (d["embedding_row"], n)
            for n, d in self.graph.nodes(data=True)
            if d.get("type") == "chunk"
        ]
        return [n for _, n in sorted(rows)]

    def documents(self) -> list[str]:
        """Document ids, sorted."""
        return sorted(
            n[len(DOC_PREFIX) :]
            for n, d in self.graph.nodes(data=True)
            if d.get("type") == "document"
        )

    def chunks_of(self, doc_id: str) -> list[Chunk]:
        """The chunks of one document in ``index`` order (``KeyError`` for an unknown id)."""
        node = DOC_PREFIX + doc_id
        if self.graph.nodes.get(node, {}).get("type") != "document":
            raise KeyError(f"no document {doc_id!r} in the knowledge graph")
        members = [
            self._chunk_from(u)
            for u, _, kind in self.graph.in_edges(node, keys=True)
            if kind == "part_of"
        ]
        return sorted(members, key=lambda c: (c.index, c.id))

    def embedding(self, chunk_id: str) -> np.ndarray:
        """The chunk's (L2-normalised) vector."""
        return self.embeddings[self.graph.nodes[self._chunk_node(chunk_id)]["embedding_row"]]

    def neighbours(
        self, chunk_id: str, kinds: Sequence[str] = ("similar", "keyphrase", "next")
    ) -> list[tuple[str, str, float]]:
        """``(chunk_id, kind, weight)`` of the chunks linked to this one, either direction.

        Each neighbour appears once, under the first of ``kinds`` that links it (with
        that link's weight); the list is ordered by that kind's place in ``kinds``, then
        by weight, strongest first, then by id. The chunk itself never appears.
        Weights of different kinds are not comparable (cosine, number of shared
        keyphrases, 1 for ``next``), hence the order by kind first.
        """
        node = self._chunk_node(chunk_id)
        rank = {kind: r for r, kind in enumerate(kinds)}
        best: dict[str, tuple[int, float, str]] = {}
        edges = chain(
            self.graph.out_edges(node, keys=True, data="weight"),
            self.graph.in_edges(node, keys=True, data="weight"),
        )
        for u, v, kind, weight in edges:
            other = v if u == node else u
            if kind not in rank or other == node or not other.startswith(CHUNK_PREFIX):
                continue
            candidate = (rank[kind], -float(weight), kind)
            if other not in best or candidate < best[other]:
                best[other] = candidate
        ordered = sorted(best.items(), key=lambda item: (item[1][:2], item[0]))
        return [(other[len(CHUNK_PREFIX) :], kind, -neg) for other, (_, neg, kind) in ordered]

    def connected(self, a: str, b: str) -> bool:
        """Whether any edge joins chunks ``a`` and ``b``, in either direction."""
        u, v = self._chunk_node(a), self._chunk_node(b)
        return u != v and (self.graph.has_edge(u, v) or self.graph.has_edge(v, u))

    def stats(self) -> dict[str, Any]:
        """``{"nodes": {"document": n, "chunk": n}, "edges": {kind: n, ...}, "dim": d}``."""
        nodes = Counter(d.get("type") for _, d in self.graph.nodes(data=True))
        edges = Counter(kind for _, _, kind in self.graph.edges(keys=True))
        return {
            "nodes": {"document": nodes.get("document", 0), "chunk": nodes.get("chunk", 0)},
            "edges": {kind: edges.get(kind, 0) for kind in EDGE_KINDS},
            "dim": int(self.embeddings.shape[1]) if self.embeddings.ndim == 2 else 0,
        }

    # ------------------------------------------------------------------ files

    def save(self, path: str | os.PathLike[str]) -> None:
        """Node-link JSON at ``path``, the embeddings beside it (``path`` with ``.npy``).

        Each file is written to a temporary name and renamed into place.
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = nx.node_link_data(self.graph, edges="edges")
        matrix_path = target.with_suffix(".npy")
        temp_matrix = matrix_path.with_name(matrix_path.name + ".tmp")
        with open(temp_matrix, "wb") as handle:
            np.save(handle, self.embeddings, allow_pickle=False)
        os.replace(temp_matrix, matrix_path)
        temp_graph = target.with_name(target.name + ".tmp")
        with open(temp_graph, "w", encoding="utf-8") as handle:
            json.dump(data, handle, ensure_ascii=False, separators=(",", ":"))
        os.replace(temp_graph, target)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> KnowledgeGraph:
        """Read what :meth:`save` wrote; a missing or mismatched file is a ConfigError."""
        target = Path(path)
        try:
            with open(target, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"knowledge graph {target}: no such file") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"knowledge graph {target}: cannot read it ({exc})") from None
        if not isinstance(data, dict) or data.get("graph", {}).get("format") != FORMAT:
            raise ConfigError(
                f"knowledge graph {target}: not a knowledge graph saved by evoforge "
                f"(expected format {FORMAT!r})"
            )
        graph = nx.node_link_graph(data, directed=True, multigraph=True, edges="edges")
        matrix_path = target.with_suffix(".npy")
        try:
            embeddings = np.load(matrix_path, allow_pickle=False)
        except FileNotFoundError:
            raise ConfigError(
                f"knowledge graph {target}: its embeddings file {matrix_path} is missing "
                "(save() writes both; copy them together)"
            ) from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"knowledge graph {matrix_path}: cannot read it ({exc})") from None
        n_chunks = sum(1 for _, d in graph.nodes(data=True) if d.get("type") == "chunk")
        dim = graph.graph.get("dim")
        if embeddings.ndim != 2 or embeddings.shape != (n_chunks, dim):
            raise ConfigError(
                f"knowledge graph {target}: {matrix_path} holds shape {embeddings.shape}, "
                f"expected {(n_chunks, dim)} (the two files are from different builds)"
            )
        return cls(graph, embeddings)


def _check_params(
    top_k: int,
    threshold: float,
    keyphrases_per_chunk: int,
    min_shared: int,
    max_keyphrase_edges: int,
) -> None:
    problems = []
    if top_k < 0:
        problems.append(f"top_k must be >= 0 (got {top_k})")
    if not -1.0 <= threshold <= 1.0:
        problems.append(f"threshold must be a cosine in [-1, 1] (got {threshold})")
    if keyphrases_per_chunk < 0:
        problems.append(f"keyphrases_per_chunk must be >= 0 (got {keyphrases_per_chunk})")
    if min_shared < 1:
        problems.append(f"min_shared must be >= 1 (got {min_shared})")
    if max_keyphrase_edges < 0:
        problems.append(f"max_keyphrase_edges must be >= 0 (got {max_keyphrase_edges})")
    if problems:
        raise ConfigError("knowledge graph: " + "; ".join(problems))
