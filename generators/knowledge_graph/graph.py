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

import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import chain, pairwise
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

from evoforge.embeddings import (
    Embedder,
    EmbeddingCache,
    embed_cached,
)
from evoforge.errors import ConfigError
from evoforge.generators.knowledge_graph.keyphrases import extract_keyphrases, keyphrase_links
from evoforge.generators.knowledge_graph.similarity import nearest_neighbours
from evoforge.io.documents import Chunk, Document

FORMAT = "evoforge.knowledge_graph/1"
EDGE_KINDS = ("part_of", "next", "similar", "keyphrase")
DOC_PREFIX = "doc:"
CHUNK_PREFIX = "chunk:"


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
