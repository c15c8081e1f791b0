"""The knowledge graph: nodes, the four edge kinds, reading it, saving and loading it."""

from __future__ import annotations

import random
from itertools import combinations

import networkx as nx
import numpy as np
import pytest

from evoforge.embeddings import EmbeddingCache, HashingEmbedder
from evoforge.errors import ConfigError
from evoforge.generators.knowledge_graph import (
    KnowledgeGraph,
    candidate_terms,
    extract_keyphrases,
    keyphrase_links,
    nearest_neighbours,
)
from evoforge.io.documents import Chunk, Document

CORPUS = {
    "botany/photosynthesis.md": [
        "Photosynthesis in plants turns light into sugar. Chlorophyll in the chloroplast "
        "absorbs red and blue light; photosynthesis needs chlorophyll and water.",
        "Without chlorophyll there is no photosynthesis. The chloroplast holds the "
        "chlorophyll, and photosynthesis releases oxygen into the air.",
        "The Calvin cycle fixes carbon dioxide into sugar in the stroma of the chloroplast.",
    ],
    "ml/networks.md": [
        "Neural networks learn representations from data. Gradient descent updates the "
        "weights of neural networks to reduce the training loss.",
        "Gradient descent follows the gradient of the loss. Neural networks trained with "
        "gradient descent need a learning rate.",
        "Transformers are neural networks built on attention over tokens.",
    ],
    "zh/学习.md": [
        "机器学习是人工智能的一个分支。机器学习使用数据训练模型。",
        "深度学习是机器学习的一个分支，深度学习使用神经网络训练模型。",
    ],
}
PARAMS = {"top_k": 2, "threshold": 0.05, "keyphrases_per_chunk": 6, "min_shared": 2}


def make_corpus() -> tuple[list[Document], list[Chunk]]:
    documents, chunks = [], []
    for path, parts in CORPUS.items():
        doc_id = f"{path}#0000"
        text = "\n\n".join(parts)
        documents.append(Document(doc_id, path, text, "Han" if path.startswith("zh") else None))
        offset = 0
        for index, part in enumerate(parts):
            chunks.append(
                Chunk(f"{path}:{index}", doc_id, path, index, offset, offset + len(part), part)
            )
            offset += len(part) + 2
    return documents, chunks


def node_set(kg: KnowledgeGraph) -> list:
    return list(kg.graph.nodes(data=True))


def edge_set(kg: KnowledgeGraph) -> list:
    return list(kg.graph.edges(keys=True, data=True))


def edges_of(kg: KnowledgeGraph, kind: str) -> list[tuple[str, str, dict]]:
    return [(u, v, d) for u, v, k, d in kg.graph.edges(keys=True, data=True) if k == kind]


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


@pytest.fixture(scope="module")
def kg(corpus):
    documents, chunks = corpus
    return KnowledgeGraph.build(documents, chunks, HashingEmbedder(), **PARAMS)


# ----------------------------------------------------------------------------- nodes


def test_nodes_and_their_attributes(kg, corpus):
    documents, chunks = corpus
    assert kg.stats()["nodes"] == {"document": 3, "chunk": 8}
    assert kg.documents() == sorted(d.id for d in documents)
    assert kg.embeddings.shape == (8, 384) and kg.embeddings.dtype == np.float32
    for chunk in chunks:
        data = kg.graph.nodes[f"chunk:{chunk.id}"]
        assert data["type"] == "chunk"
        assert kg.chunk(chunk.id) == chunk
        np.testing.assert_array_equal(
            kg.embeddings[data["embedding_row"]], HashingEmbedder().embed([chunk.text])[0]
        )
        assert 0 < len(data["keyphrases"]) <= PARAMS["keyphrases_per_chunk"]
    doc = kg.graph.nodes["doc:zh/学习.md#0000"]
    assert doc == {"type": "document", "path": "zh/学习.md", "language": "Han"}


def test_reading_chunks(kg, corpus):
    _, chunks = corpus
    assert kg.chunks() == sorted(chunks, key=lambda c: (c.path, c.index))
    assert kg.chunks_of("ml/networks.md#0000") == [c for c in chunks if c.path == "ml/networks.md"]
    with pytest.raises(KeyError):
        kg.chunk("nope")
    with pytest.raises(KeyError):
        kg.chunks_of("nope")


# ----------------------------------------------------------------------------- edges


def test_part_of_and_next_edges_are_exact(kg, corpus):
    _, chunks = corpus
    part_of = {(u, v) for u, v, _ in edges_of(kg, "part_of")}
    assert part_of == {(f"chunk:{c.id}", f"doc:{c.doc_id}") for c in chunks}
    following = {(u, v) for u, v, _ in edges_of(kg, "next")}
    assert following == {
        (f"chunk:{a.id}", f"chunk:{b.id}")
        for a, b in combinations(chunks, 2)
        if a.doc_id == b.doc_id and b.index == a.index + 1
    }
    assert len(edges_of(kg, "next")) == 5


def test_similar_edges_are_the_top_k_above_the_threshold(kg):
    assert nx.number_of_selfloops(kg.graph) == 0
    similar = edges_of(kg, "similar")
    assert similar
    rows = {n: d["embedding_row"] for n, d in kg.graph.nodes(data=True) if d["type"] == "chunk"}
    scores = kg.embeddings @ kg.embeddings.T
    for node, row in rows.items():
        mine = {v: d["weight"] for u, v, d in similar if u == node}
        assert len(mine) <= PARAMS["top_k"]
        # Brute force: the same neighbours as the full similarity matrix gives.
        others = sorted((-scores[row, r], n) for n, r in rows.items() if n != node)
        expected = [n for s, n in others[: PARAMS["top_k"]] if -s >= PARAMS["threshold"]]
        assert set(mine) == set(expected)
        for other, weight in mine.items():
            assert weight >= PARAMS["threshold"]
            assert weight == pytest.approx(float(scores[row, rows[other]]), abs=1e-5)


def test_similar_respects_a_high_threshold(corpus):
    documents, chunks = corpus
    strict = KnowledgeGraph.build(documents, chunks, HashingEmbedder(), threshold=0.99)
    assert strict.stats()["edges"]["similar"] == 0


def test_keyphrase_edges_share_at_least_min_shared(kg):
    keyphrase = edges_of(kg, "keyphrase")
    assert keyphrase, "the corpus is built to have keyphrase links"
    for u, v, data in keyphrase:
        assert u != v
        shared = set(kg.graph.nodes[u]["keyphrases"]) & set(kg.graph.nodes[v]["keyphrases"])
        assert len(shared) >= PARAMS["min_shared"]
        assert data["weight"] == len(shared)
        assert data["keyphrases"] == sorted(shared)


def test_keyphrase_edges_are_capped_per_chunk(corpus):
    documents, chunks = corpus
    capped = KnowledgeGraph.build(
        documents, chunks, HashingEmbedder(), min_shared=1, max_keyphrase_edges=1
    )
    out_degree = {}
    for u, _, _ in edges_of(capped, "keyphrase"):
        out_degree[u] = out_degree.get(u, 0) + 1
    assert out_degree and max(out_degree.values()) == 1


def test_neighbours_are_sorted_unique_and_linked(kg, corpus):
    _, chunks = corpus
    kinds = ("similar", "keyphrase", "next")
    for chunk in chunks:
        found = kg.neighbours(chunk.id)
        ids = [other for other, _, _ in found]
        assert len(ids) == len(set(ids)) and chunk.id not in ids
        order = [(kinds.index(kind), -weight) for _, kind, weight in found]
        assert order == sorted(order)
        for other, kind, _ in found:
            assert kind in kinds
            assert kg.connected(chunk.id, other) and kg.connected(other, chunk.id)
    # Only the kinds asked for; next links both ways.
    assert kg.neighbours("ml/networks.md:1", kinds=("next",)) == [
        ("ml/networks.md:0", "next", 1.0),
        ("ml/networks.md:2", "next", 1.0),
    ]


def test_connected(kg):
    assert kg.connected("ml/networks.md:0", "ml/networks.md:1")
    assert not kg.connected("ml/networks.md:0", "ml/networks.md:0")
    with pytest.raises(KeyError):
        kg.connected("ml/networks.md:0", "nope")


def test_stats(kg):
    stats = kg.stats()
    assert stats["edges"]["part_of"] == 8 and stats["edges"]["next"] == 5
    assert sum(stats["edges"].values()) == kg.graph.number_of_edges()
    assert stats["dim"] == 384


# ----------------------------------------------------------------------------- determinism, files


def test_building_twice_gives_the_same_graph_whatever_the_input_order(kg, corpus):
    documents, chunks = corpus
    shuffled = chunks[:]
    random.Random(7).shuffle(shuffled)
    again = KnowledgeGraph.build(documents[::-1], shuffled, HashingEmbedder(), **PARAMS)
    assert node_set(again) == node_set(kg)
    assert edge_set(again) == edge_set(kg)
    np.testing.assert_array_equal(again.embeddings, kg.embeddings)
    assert again.graph.graph == kg.graph.graph


def test_save_load_round_trip(kg, tmp_path):
    path = tmp_path / "kg" / "graph.json"
    kg.save(path)
    assert path.is_file() and (tmp_path / "kg" / "graph.npy").is_file()
    loaded = KnowledgeGraph.load(path)
    assert node_set(loaded) == node_set(kg)
    assert edge_set(loaded) == edge_set(kg)
    np.testing.assert_array_equal(loaded.embeddings, kg.embeddings)
    assert loaded.embeddings.dtype == np.float32
    assert loaded.graph.graph == kg.graph.graph
    assert loaded.params == {**PARAMS, "max_keyphrase_edges": 10}
    assert loaded.embedder_identity == HashingEmbedder().identity
    assert loaded.neighbours("botany/photosynthesis.md:0") == kg.neighbours(
        "botany/photosynthesis.md:0"
    )
    assert sorted(p.name for p in (tmp_path / "kg").iterdir()) == ["graph.json", "graph.npy"]


def test_load_without_embeddings_names_the_file(kg, tmp_path):
    path = tmp_path / "graph.json"
    kg.save(path)
    (tmp_path / "graph.npy").unlink()
    with pytest.raises(ConfigError, match=r"graph\.npy"):
        KnowledgeGraph.load(path)


def test_load_refuses_other_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        KnowledgeGraph.load(tmp_path / "missing.json")
    other = tmp_path / "other.json"
    other.write_text('{"nodes": []}')
    with pytest.raises(ConfigError, match="not a knowledge graph"):
        KnowledgeGraph.load(other)


def test_build_through_the_cache_embeds_once(corpus, tmp_path):
    documents, chunks = corpus

    class Counting(HashingEmbedder):
        calls = 0

        def embed(self, texts):
            Counting.calls += len(texts)
            return super().embed(texts)

    with EmbeddingCache(tmp_path / "emb.sqlite") as cache:
        first = KnowledgeGraph.build(documents, chunks, Counting(), cache=cache)
        assert Counting.calls == len(chunks)
        second = KnowledgeGraph.build(documents, chunks, Counting(), cache=cache)
        assert Counting.calls == len(chunks)
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    assert edge_set(first) == edge_set(second)


def test_empty_corpus(tmp_path):
    kg = KnowledgeGraph.build([], [], HashingEmbedder(dim=16))
    assert kg.stats() == {
        "nodes": {"document": 0, "chunk": 0},
        "edges": {"part_of": 0, "next": 0, "similar": 0, "keyphrase": 0},
        "dim": 16,
    }
    kg.save(tmp_path / "g.json")
    assert KnowledgeGraph.load(tmp_path / "g.json").embeddings.shape == (0, 16)


def test_bad_inputs_are_config_errors(corpus):
    documents, chunks = corpus
    with pytest.raises(ConfigError, match="not among the documents"):
        KnowledgeGraph.build(documents[:1], chunks, HashingEmbedder())
    with pytest.raises(ConfigError, match="duplicate chunk ids"):
        KnowledgeGraph.build(documents, chunks + chunks[:1], HashingEmbedder())
    with pytest.raises(ConfigError, match="threshold"):
        KnowledgeGraph.build(documents, chunks, HashingEmbedder(), threshold=1.5)


# ----------------------------------------------------------------------------- the parts


def test_candidate_terms_unigrams_bigrams_without_stop_words():
    assert candidate_terms("The neural network, and the loss of 2024.") == [
        "neural",
        "network",
        "neural network",
        "loss",
    ]
    assert candidate_terms("深度学习是机器学习的分支") == [
        "深度",
        "度学",
        "学习",
        "机器",
        "器学",
        "学习",
        "分支",
    ]


def test_extract_keyphrases_prefers_frequent_distinctive_terms():
    texts = [
        "Photosynthesis needs chlorophyll. Photosynthesis makes sugar.",
        "Gradient descent lowers the loss. Gradient descent needs a rate.",
        "Sugar and loss.",
    ]
    phrases = extract_keyphrases(texts, per_text=3)
    assert phrases[0][0] == "photosynthesis"
    assert phrases[1][:3] == ["descent", "gradient", "gradient descent"]
    assert all(len(p) <= 3 for p in phrases)
    assert extract_keyphrases(texts, per_text=3) == phrases


def test_nearest_neighbours_blockwise_matches_brute_force():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(57, 12)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    scores = vectors @ vectors.T
    for block_rows in (5, 1024):
        links = nearest_neighbours(vectors, top_k=4, threshold=0.1, block_rows=block_rows)
        expected = []
        for i in range(len(vectors)):
            order = sorted((j for j in range(len(vectors)) if j != i), key=lambda j: -scores[i, j])
            expected += [(i, j) for j in order[:4] if scores[i, j] >= np.float32(0.1)]
        assert [(i, j) for i, j, _ in links] == expected
    assert nearest_neighbours(vectors[:1], top_k=3) == []


def test_keyphrase_links_match_brute_force():
    rng = random.Random(3)
    vocabulary = [f"term{t}" for t in range(12)]
    items = [rng.sample(vocabulary, rng.randint(0, 5)) for _ in range(40)]
    links = keyphrase_links(items, min_shared=2, max_per_item=3)
    expected = []
    for i, mine in enumerate(items):
        shared = [(len(set(mine) & set(other)), j) for j, other in enumerate(items) if j != i]
        best = sorted((-count, j) for count, j in shared if count >= 2)[:3]
        expected += [(i, j, -count) for count, j in best]
    assert links == expected
    assert keyphrase_links([["a"]], min_shared=1) == []
