"""The knowledge graph a RAG evaluation set is drawn from: documents, chunks and their links.

- :mod:`~evoforge.generators.knowledge_graph.graph`: :class:`KnowledgeGraph` (build,
  query, save, load);
- :mod:`~evoforge.generators.knowledge_graph.similarity`: :func:`nearest_neighbours`,
  the ``similar`` edges;
- :mod:`~evoforge.generators.knowledge_graph.keyphrases`: :func:`extract_keyphrases`
  and :func:`keyphrase_links`, the ``keyphrase`` edges.
"""

from __future__ import annotations

from evoforge.generators.knowledge_graph.graph import (
    CHUNK_PREFIX,
    DOC_PREFIX,
    EDGE_KINDS,
    FORMAT,
    KnowledgeGraph,
)
from evoforge.generators.knowledge_graph.keyphrases import (
    candidate_terms,
    extract_keyphrases,
    keyphrase_links,
)
from evoforge.generators.knowledge_graph.similarity import nearest_neighbours

__all__ = [
    "CHUNK_PREFIX",
    "DOC_PREFIX",
    "EDGE_KINDS",
    "FORMAT",
    "KnowledgeGraph",
    "candidate_terms",
    "extract_keyphrases",
    "keyphrase_links",
    "nearest_neighbours",
]
