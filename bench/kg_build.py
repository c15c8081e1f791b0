"""Knowledge-graph build: seconds per phase and peak memory for N synthetic chunks.

The corpus is generated from a fixed vocabulary: 12 topics of real English words,
shared filler words and stop words, and made-up names that recur within a topic
(so keyphrase overlap means something); 10 chunks of about 110 words per document,
each document on one topic. Prints seconds for embedding, similarity, keyphrases,
graph assembly and in total, peak RSS (``ru_maxrss``) before and after the build,
the edge counts, then save/load seconds and file sizes, and a JSON line.

    .venv/bin/python bench/kg_build.py [--chunks 10000] [--embedder hashing|minilm]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TOPICS = {
    "astronomy": "galaxy telescope orbit planet comet nebula stellar gravity cosmic eclipse "
    "asteroid supernova spectrum moon solar luminosity redshift observatory quasar meteor",
    "cooking": "recipe flour butter oven simmer garlic sauce dough roast spice onion broth "
    "knead bake skillet pepper caramel whisk pastry marinade",
    "finance": "revenue equity bond interest dividend portfolio inflation credit loan market "
    "investor liquidity budget asset audit valuation profit hedge currency mortgage",
    "medicine": "patient diagnosis therapy vaccine clinical symptom dosage infection surgeon "
    "antibiotic tumor immune chronic prescription cardiac virus hospital biopsy nurse trial",
    "software": "compiler database server function variable thread memory cache deploy "
    "kernel algorithm runtime debugger repository container latency query module api bug",
    "botany": "photosynthesis chlorophyll leaf root seed pollen flower stem soil fungus "
    "blossom orchid fern moss sapling canopy nectar petal germination xylem",
    "music": "melody rhythm chord guitar violin symphony tempo harmony orchestra lyric "
    "piano drum concert composer album chorus octave jazz opera sonata",
    "geology": "volcano magma sediment fossil granite erosion earthquake tectonic mineral "
    "crystal basalt lava canyon glacier strata quartz limestone fault mantle crust",
    "law": "court judge verdict statute contract plaintiff defendant appeal jury attorney "
    "evidence testimony lawsuit clause liability precedent ruling tribunal custody patent",
    "sports": "football tournament goalkeeper referee stadium league championship athlete "
    "marathon coach season penalty tennis sprint medal dribble inning playoff team score",
    "weather": "storm rainfall humidity forecast hurricane thunder drought monsoon breeze "
    "temperature snowfall cyclone fog frost barometer tornado climate drizzle hail wind",
    "history": "empire dynasty revolution treaty monarch archive medieval colony battle "
    "parliament chronicle siege republic crusade feudal pharaoh ancient rebellion throne war",
}
FILLER = (
    "large small new early late important different general public local major common "
    "recent strong clear simple modern natural various several specific main basic "
    "describes shows explains includes requires suggests provides supports reduces "
    "increases changes follows allows creates improves affects measures compares "
    "process result system method example approach problem question study report "
    "level period number group area part case point fact detail effect value"
).split()
STOP = "the a of and to in is was for on with as by that this it from at be are".split()
SYLLABLES = "ka lo mi ra ven tor sil dun bre qua zel nor pim ast ul rho".split()


def synthetic_corpus(n_chunks: int, *, seed: int = 0, per_doc: int = 10) -> tuple[list, list]:
    """``(documents, chunks)``: ``n_chunks`` chunks, ``per_doc`` per document."""
    from evoforge.io.documents import Chunk, Document

    rng = np.random.default_rng(seed)
    topics = [np.array(words.split(), dtype=object) for words in TOPICS.values()]
    filler, stop = np.array(FILLER, dtype=object), np.array(STOP, dtype=object)
    names = [
        ["".join(rng.choice(SYLLABLES, size=3)) for _ in range(40)] for _ in range(len(topics))
    ]
    sentences, words = 9, 12
    size = sentences * words
    documents, chunks = [], []
    for d in range((n_chunks + per_doc - 1) // per_doc):
        topic = int(rng.integers(len(topics)))
        doc_names = np.array(rng.choice(names[topic], size=4, replace=False), dtype=object)
        path = f"topic{topic:02d}/doc{d:05d}.md"
        doc_id = f"{path}#{d:05d}"
        parts: list[str] = []
        offset = 0
        for index in range(min(per_doc, n_chunks - d * per_doc)):
            # 30% topic words, 6% the document's names, 34% filler, 30% stop words.
            p = rng.random(size)
            drawn = np.where(
                p < 0.3,
                topics[topic][rng.integers(len(topics[topic]), size=size)],
                np.where(
                    p < 0.36,
                    doc_names[rng.integers(len(doc_names), size=size)],
                    np.where(
                        p < 0.7,
                        filler[rng.integers(len(filler), size=size)],
                        stop[rng.integers(len(stop), size=size)],
                    ),
                ),
            )
            text = " ".join(
                " ".join(drawn[s * words : (s + 1) * words]).capitalize() + "."
                for s in range(sentences)
            )
            chunk_id = f"{doc_id}:{index}"
            chunks.append(Chunk(chunk_id, doc_id, path, index, offset, offset + len(text), text))
            parts.append(text)
            offset += len(text) + 2
        documents.append(Document(doc_id, path, "\n\n".join(parts), "Latin"))
    return documents, chunks


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--embedder", default="hashing", help="hashing | minilm | any spec")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=0.6)
    args = parser.parse_args()

    from evoforge.embeddings import load_embedder
    from evoforge.generators.knowledge_graph import KnowledgeGraph

    documents, chunks = synthetic_corpus(args.chunks)
    words = sum(len(c.text.split()) for c in chunks) / max(1, len(chunks))
    embedder = load_embedder(args.embedder)
    before = peak_rss_mb()
    load_before = os.getloadavg()[0]  # others' work on a shared machine slows the build
    started = time.perf_counter()
    graph = KnowledgeGraph.build(
        documents, chunks, embedder, top_k=args.top_k, threshold=args.threshold
    )
    wall = time.perf_counter() - started
    after = peak_rss_mb()
    timings = graph.timings
    stats = graph.stats()

    # Quality: how many similar / keyphrase links join chunks of the same topic.
    same_topic = {}
    for kind in ("similar", "keyphrase"):
        links = [(u, v) for u, v, k in graph.graph.edges(keys=True) if k == kind]
        same = sum(u.split("/")[0] == v.split("/")[0] for u, v in links)
        same_topic[kind] = round(same / len(links), 3) if links else None

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.json"
        mark = time.perf_counter()
        graph.save(path)
        save_s = time.perf_counter() - mark
        mark = time.perf_counter()
        loaded = KnowledgeGraph.load(path)
        load_s = time.perf_counter() - mark
        json_mb = path.stat().st_size / 2**20
        npy_mb = path.with_suffix(".npy").stat().st_size / 2**20
        assert loaded.stats() == stats

    load = os.getloadavg()[0]
    print(f"{args.chunks:,} chunks ({words:.0f} words each), {len(documents):,} documents, "
          f"embedder {args.embedder} ({stats['dim']}-d), top_k {args.top_k}, "
          f"threshold {args.threshold}")  # fmt: skip
    for phase in ("embedding_s", "similarity_s", "keyphrases_s", "graph_s", "total_s"):
        print(f"  {phase[:-2]:<11} {timings[phase]:8.2f} s")
    cpus = os.cpu_count()
    print(f"  load avg    {load_before:8.2f} before the build, {load:.2f} after ({cpus} CPUs)")
    print(f"  peak RSS    {before:8.1f} MB before the build, {after:.1f} MB after")
    print(f"  edges       {stats['edges']}")
    print(f"  same topic  {same_topic} (share of links within a topic; 12 topics)")
    print(f"  save        {save_s:8.2f} s  ({json_mb:.1f} MB JSON + {npy_mb:.1f} MB .npy)")
    print(f"  load        {load_s:8.2f} s")
    result = {
        "chunks": args.chunks,
        "embedder": args.embedder,
        **{k: round(v, 3) for k, v in timings.items()},
        "build_wall_s": round(wall, 3),
        "peak_rss_before_mb": round(before, 1),
        "peak_rss_after_mb": round(after, 1),
        "load_avg": [round(load_before, 2), round(load, 2)],
        "cpus": cpus,
        "edges": stats["edges"],
        "same_topic": same_topic,
        "save_s": round(save_s, 3),
        "load_s": round(load_s, 3),
        "json_mb": round(json_mb, 2),
        "npy_mb": round(npy_mb, 2),
    }
    print(json.dumps(result))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
