"""Near-duplicate detection: a graph of verified duplicate pairs, one survivor per group.

Three ways to propose a pair, each checked before it becomes an edge: ``exact`` (the
normalised text's digest), ``minhash`` (MinHash signatures, Broder, 1997, banded for
LSH, each candidate verified by its true shingle Jaccard) and ``semantic`` (embedding
cosine over nearest neighbours, SemDeDup, Abbas et al., 2023, arXiv 2303.09540).
Connected components are the duplicate groups; one record of each is kept (highest
score, then lowest id) and every other one is rejected naming the id it lost to.
Output depends only on the input records, the parameters and the seed; which record
is kept does not depend on input order.

The package, one idea a module:

- :mod:`.signatures`: shingles, MinHash signatures, LSH band keys and parameters;
- :mod:`.shards`: band keys of a stream of batches, in worker processes (``shards=N``);
- :mod:`.graph`: :class:`NearDuplicateGraph`, its components and the rejections;
- :mod:`.stream`: :func:`dedup_jsonl` over a JSON-lines file larger than memory;
- :mod:`.steps`: the methods as set steps (:class:`DedupStep`, :data:`EXACT`,
  :data:`MINHASH`, :data:`SEMANTIC`: the ``dedup`` registry's entries).
"""

from evoforge.validators.dedup.graph import (
    NearDuplicateGraph,
    RecordIds,
    connected_components,
    dedup,
)
from evoforge.validators.dedup.signatures import (
    RECALL_WEIGHT,
    MinHasher,
    ShingleHasher,
    band_keys,
    candidate_probability,
    lsh_params,
    normalise,
    record_text,
    shingles,
)
from evoforge.validators.dedup.steps import (
    EXACT,
    MINHASH,
    SEMANTIC,
    DedupStep,
    ExactDedup,
    MinHashDedup,
    SemanticDedup,
)
from evoforge.validators.dedup.stream import JsonlRecords, dedup_jsonl

__all__ = [
    "EXACT",
    "MINHASH",
    "RECALL_WEIGHT",
    "SEMANTIC",
    "DedupStep",
    "ExactDedup",
    "JsonlRecords",
    "MinHashDedup",
    "MinHasher",
    "NearDuplicateGraph",
    "RecordIds",
    "SemanticDedup",
    "ShingleHasher",
    "band_keys",
    "candidate_probability",
    "connected_components",
    "dedup",
    "dedup_jsonl",
    "lsh_params",
    "normalise",
    "record_text",
    "shingles",
]
