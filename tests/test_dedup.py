"""Near-duplicate graph: exact, minhash and semantic pairs; one survivor per group."""

from __future__ import annotations

import json
import random

import networkx as nx
import numpy as np
import pytest

from evoforge.embeddings import load_embedder
from evoforge.errors import InputError
from evoforge.validators.dedup import (
    JsonlRecords,
    MinHasher,
    NearDuplicateGraph,
    ShingleHasher,
    candidate_probability,
    connected_components,
    dedup,
    dedup_jsonl,
    lsh_params,
    normalise,
    record_text,
    shingles,
)

VOCAB = [f"w{i}" for i in range(5000)]
HANZI = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def _text(rng: random.Random, n: int = 100) -> list[str]:
    return rng.sample(VOCAB, n)


def _variant(tokens: list[str], jaccard: float, rng: random.Random) -> list[str]:
    """Replace the last k tokens with fresh ones so unigram Jaccard is about ``jaccard``;
    contiguous replacement keeps word-3-gram Jaccard close to the same."""
    n = len(tokens)
    k = round(n * (1 - jaccard) / (1 + jaccard))
    fresh = [f"x{rng.randrange(10**9)}" for _ in range(k)]
    return tokens[: n - k] + fresh


def _jaccard(a: str, b: str) -> float:
    sa, sb = shingles(normalise(a)), shingles(normalise(b))
    return len(sa & sb) / len(sa | sb)


def _record(id_: str, text: str) -> dict:
    return {"id": id_, "instruction": text, "output": ""}


def test_normalise_collapses_case_whitespace_and_compatibility_forms() -> None:
    assert normalise("  Hello\tWORLD\n\n ｆｕｌｌ ") == "hello world full"
    assert normalise("Straße") == normalise("STRASSE")


def test_record_text_joins_fields_turns_and_lists() -> None:
    record = {
        "instruction": "Q",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "tags": ["a", "b"],
    }
    assert record_text(record, ("instruction", "messages", "tags", "missing")) == "Q\nhi\nyo\na\nb"


def test_shingles_words_for_english_characters_for_chinese_and_short_fallback() -> None:
    assert shingles("the cat sat on", n_words=3) == {"the cat sat", "cat sat on"}
    assert shingles("机器学习", n_chars=2) == {"机器", "器学", "学习"}
    assert shingles("hi there") == {"hi there"}
    assert shingles("") == set()


def test_exact_variants_collapse_and_one_survives() -> None:
    records = [
        _record("b", "What is  the Capital of France?"),
        _record("a", "what is the capital of france?"),
        _record("c", "ＷＨＡＴ is the capital\nof France?"),
        _record("d", "Something else entirely, about rivers and lakes and seas."),
    ]
    kept, dropped = dedup(records, methods=("exact",))
    assert [r["id"] for r in kept] == ["a", "d"]
    assert {d["id"] for d in dropped} == {"b", "c"}
    for d in dropped:
        assert d["lost_to"] == "a" and d["method"] == "exact" and d["similarity"] == 1.0
        assert d["reason"] == "duplicate" and "to a" in d["detail"]


def test_english_near_duplicates_found_at_08_not_04() -> None:
    rng = random.Random(3)
    base = _text(rng)
    near, far = _variant(base, 0.8, rng), _variant(base, 0.4, rng)
    assert 0.72 < _jaccard(" ".join(base), " ".join(near)) < 0.88
    assert _jaccard(" ".join(base), " ".join(far)) < 0.5
    graph = NearDuplicateGraph(threshold=0.7).build(
        [
            _record("base", " ".join(base)),
            _record("near", " ".join(near)),
            _record("far", " ".join(far)),
        ]
    )
    assert graph.components() == [["base", "near"]]
    _, dropped = graph.resolve()
    assert [d["id"] for d in dropped] == ["near"]
    assert dropped[0]["lost_to"] == "base" and dropped[0]["method"] == "minhash"
    assert dropped[0]["similarity"] == pytest.approx(_jaccard(" ".join(base), " ".join(near)))
    assert dropped[0]["detail"].startswith("minhash similarity 0.")


def test_chinese_near_duplicates_found_unrelated_not() -> None:
    rng = random.Random(5)
    sentence = "".join(rng.choice(HANZI) for _ in range(100))
    changed = list(sentence)
    changed[30], changed[70] = "甲", "乙"
    unrelated = "".join(rng.choice(HANZI) for _ in range(100))
    records = [
        _record("zh1", sentence),
        _record("zh2", "".join(changed)),
        _record("zh3", unrelated),
    ]
    graph = NearDuplicateGraph().build(records)
    assert graph.components() == [["zh1", "zh2"]]
    assert graph.edges[(0, 1)][0] == "minhash"


def test_keep_one_per_component_with_score_and_path_similarity() -> None:
    rng = random.Random(7)
    base = _text(rng)
    # a chain: b1 ~ b0 ~ b2, where b1 and b2 may be too far apart for a direct edge
    b1 = base[:92] + [f"y{i}" for i in range(8)]  # Jaccard 0.85 to base
    b2 = [f"z{i}" for i in range(8)] + base[8:]  # 0.85 to base, 0.72 to b1
    records = [
        _record("r1", " ".join(b1)),
        _record("r0", " ".join(base)),
        _record("r2", " ".join(b2)),
    ]
    records.append(_record("solo", " ".join(_text(rng))))
    graph = NearDuplicateGraph(threshold=0.75, num_perm=256).build(records)
    assert graph.components() == [["r0", "r1", "r2"]]
    assert (0, 2) not in graph.edges  # r1 -- r2 only through r0
    score = {"r1": 2.0, "r0": 1.0, "r2": 1.0, "solo": 0.0}
    kept, dropped = graph.resolve(lambda r: score[r["id"]])
    assert [r["id"] for r in kept] == ["r1", "solo"]
    by_id = {d["id"]: d for d in dropped}
    assert by_id["r0"]["lost_to"] == "r1" and "via" not in by_id["r0"]["detail"]
    assert by_id["r2"]["lost_to"] == "r1" and "via r0" in by_id["r2"]["detail"]
    assert by_id["r2"]["similarity"] <= by_id["r0"]["similarity"] + 1e-12


def test_never_both_members_of_a_pair_dropped_on_random_corpus() -> None:
    rng = random.Random(11)
    records = []
    for g in range(40):
        base = _text(rng, 60)
        records.append(_record(f"g{g}-0", " ".join(base)))
        for v in range(rng.randrange(0, 4)):
            records.append(
                _record(f"g{g}-{v + 1}", " ".join(_variant(base, rng.choice([0.8, 0.9, 1.0]), rng)))
            )
    graph = NearDuplicateGraph().build(records)
    kept, dropped = graph.resolve()
    kept_ids = {r["id"] for r in kept}
    for component in graph.components():
        assert len(kept_ids & set(component)) == 1
    ids = graph.ids
    lost_to = {d["id"]: d["lost_to"] for d in dropped}
    for i, j in graph.edges:  # a pair is never lost with nothing left of it
        if ids[i] not in kept_ids and ids[j] not in kept_ids:
            assert lost_to[ids[i]] == lost_to[ids[j]]
    assert len(kept) + len(dropped) == len(records)
    assert all(d["lost_to"] in kept_ids for d in dropped)


def test_deterministic_and_kept_independent_of_input_order() -> None:
    rng = random.Random(13)
    records = []
    for g in range(30):
        base = _text(rng, 50)
        records += [
            _record(f"{g}a", " ".join(base)),
            _record(f"{g}b", " ".join(_variant(base, 0.85, rng))),
        ]
    first = dedup(records)
    assert dedup(records) == first
    shuffled = records[:]
    random.Random(1).shuffle(shuffled)
    kept, dropped = dedup(shuffled)
    assert {r["id"] for r in kept} == {r["id"] for r in first[0]}
    assert sorted(dropped, key=lambda d: d["id"]) == sorted(first[1], key=lambda d: d["id"])


def test_signatures_are_per_record_so_shards_concatenate() -> None:
    rng = random.Random(17)
    sets = [shingles(" ".join(_text(rng, rng.randrange(1, 40)))) for _ in range(50)] + [set()]
    hasher = MinHasher(64, seed=3)
    whole = hasher.signatures(sets)
    shards = np.concatenate(
        [MinHasher(64, seed=3).signatures(sets[i : i + 7]) for i in range(0, 51, 7)]
    )
    np.testing.assert_array_equal(whole, shards)
    np.testing.assert_array_equal(hasher.signature(sets[4]), whole[4])
    assert not np.array_equal(MinHasher(64, seed=4).signatures(sets[:1]), whole[:1])


def test_minhash_estimates_jaccard() -> None:
    rng = random.Random(19)
    a = set(_text(rng, 200))
    b = set(list(a)[:150]) | {f"n{i}" for i in range(50)}
    true = len(a & b) / len(a | b)
    sig = MinHasher(256).signatures([a, b])
    assert abs(float((sig[0] == sig[1]).mean()) - true) < 0.08


def test_components_match_networkx_on_random_graph() -> None:
    rng = np.random.default_rng(23)
    n = 500
    left, right = rng.integers(0, n, 400), rng.integers(0, n, 400)
    roots = connected_components(n, left, right)
    ours = {}
    for node, root in enumerate(roots.tolist()):
        ours.setdefault(root, set()).add(node)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(zip(left.tolist(), right.tolist(), strict=True))
    assert {frozenset(c) for c in ours.values()} == {
        frozenset(c) for c in nx.connected_components(graph)
    }


def test_lsh_params_curve_is_half_near_threshold() -> None:
    # The value at s = threshold is the chance that a pair exactly at the threshold
    # becomes a candidate; the optimum puts it a little under one half.
    assert lsh_params(0.7, 128) == (14, 9)  # datasketch's choice
    for threshold in (0.5, 0.7, 0.8):
        bands, rows = lsh_params(threshold, 128)
        assert bands * rows <= 128
        assert 0.35 < candidate_probability(threshold, bands, rows) < 0.6
        assert candidate_probability(threshold - 0.2, bands, rows) < 0.1
        assert candidate_probability(min(threshold + 0.15, 0.99), bands, rows) > 0.9


def test_semantic_method_uses_embedder() -> None:
    embedder = load_embedder("hashing")
    records = [
        _record("a", "how do I bake sourdough bread at home"),
        _record("b", "How do I bake sourdough bread at home?!"),
        _record("c", "the orbit of comets around the sun"),
    ]
    graph = NearDuplicateGraph(
        methods=("semantic",), embedder=embedder, semantic_threshold=0.9
    ).build(records)
    assert graph.components() == [["a", "b"]]
    assert graph.edges[(0, 1)][0] == "semantic"


def test_errors_name_the_fix(tmp_path) -> None:
    with pytest.raises(ValueError, match="needs an embedder"):
        NearDuplicateGraph(methods=("semantic",))
    with pytest.raises(ValueError, match="unknown dedup method"):
        NearDuplicateGraph(methods=("fuzzy",))
    with pytest.raises(ValueError, match='record 0: field "id" is missing'):
        NearDuplicateGraph().build([{"instruction": "x"}])
    with pytest.raises(ValueError, match="appears more than once"):
        NearDuplicateGraph().build([_record("a", "x"), _record("a", "y")])


def test_write_clusters(tmp_path) -> None:
    records = [
        _record("2", "same text here"),
        _record("1", "Same  text here"),
        _record("3", "other"),
    ]
    graph = NearDuplicateGraph().build(records)
    path = tmp_path / "clusters.jsonl"
    graph.write_clusters(path)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [{"cluster": 0, "ids": ["1", "2"], "kept": "1"}]


def test_shingle_hashes_give_the_jaccard_of_the_shingle_strings() -> None:
    rng = random.Random(29)
    texts = [
        " ".join(_text(rng, 60)),
        "".join(rng.choice(HANZI) for _ in range(80)),
        "Ça coûte 5 € — naïve café, déjà vu! Donaudampfschifffahrtsgesellschaft ist lang",
        "hi there",
        "mixed 中文 text with abc中文 and 中a文 tokens, 日本語のテキスト・です",
        "机器学习",
        "",
    ]
    texts += [" ".join(_variant(texts[0].split(), 0.8, rng))]
    texts += [texts[1][:60] + "".join(rng.choice(HANZI) for _ in range(20))]
    shingler = ShingleHasher()
    normalised = [normalise(t) for t in texts]
    flat, counts = shingler.hashes(normalised)
    assert counts.tolist() == [len(shingles(t)) for t in normalised]  # no repeats here
    hashed = [shingler.hash_set(t) for t in normalised]
    assert [len(h) for h in hashed] == [len(shingles(t)) for t in normalised]
    for a, b in ((0, 7), (1, 8), (0, 1), (3, 5), (2, 4)):
        sa, sb = shingles(normalised[a]), shingles(normalised[b])
        common = len(np.intersect1d(hashed[a], hashed[b]))
        assert common == len(sa & sb)
    # "中文" by characters and "中 文" by words are different shingles, hashes too
    pair = ShingleHasher(n_words=2)
    by_chars, by_words = pair.hash_set("中文"), pair.hash_set("中 文 alpha beta gamma")
    assert not shingles("中文") & shingles("中 文 alpha beta gamma", n_words=2)
    assert len(np.intersect1d(by_chars, by_words)) == 0
    # a batch gives each text the hashes it gets alone
    np.testing.assert_array_equal(flat[: counts[0]], shingler.hashes(normalised[:1])[0])


def test_text_signatures_estimate_jaccard_like_string_signatures() -> None:
    rng = random.Random(31)
    base = _text(rng, 120)
    pairs = [(base, _variant(base, level, rng)) for level in (0.5, 0.7, 0.9)]
    hasher = MinHasher(256)
    for a, b in pairs:
        ta, tb = " ".join(a), " ".join(b)
        sig = hasher.text_signatures([ta, tb])
        assert abs(float((sig[0] == sig[1]).mean()) - _jaccard(ta, tb)) < 0.08
    assert (hasher.text_signatures([""]) == hasher.text_signatures([""])[0]).all()


def _corpus_file(path, rng: random.Random, groups: int = 60) -> list[dict]:
    records = []
    for g in range(groups):
        zh = g % 3 == 0
        base = [rng.choice(HANZI) for _ in range(80)] if zh else _text(rng, 60)
        glue = "" if zh else " "
        records.append(_record(f"g{g:03d}-0", glue.join(base)))
        for v in range(rng.randrange(0, 4)):
            copy = base[:]
            for _ in range(rng.randrange(0, 4)):
                copy[rng.randrange(len(copy))] = rng.choice(HANZI) if zh else "changed"
            text = glue.join(copy)
            records.append(_record(f"g{g:03d}-{v + 1}", text.upper() if v == 2 else text))
    rng.shuffle(records)
    for r in records:
        r["meta"] = {"score": rng.random()}
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return records


def test_streamed_file_dedup_matches_in_memory_and_rereads_only_candidates(tmp_path) -> None:
    records = _corpus_file(tmp_path / "in.jsonl", random.Random(37))
    fetched: list[int] = []

    class CountingRecords(JsonlRecords):
        def fetch(self, indices):
            fetched.extend(indices)
            return super().fetch(indices)

    source = CountingRecords(tmp_path / "in.jsonl")
    graph = NearDuplicateGraph().build_stream(source, source.fetch)
    assert graph.records == []  # nothing held
    in_memory = NearDuplicateGraph().build(records)
    assert graph.edges == in_memory.edges and graph.components() == in_memory.components()
    families = [r["id"].split("-")[0] for r in records]
    planted = {i for i, f in enumerate(families) if families.count(f) > 1}
    assert fetched and set(fetched) <= planted  # only candidate pairs are read again
    summary = dedup_jsonl(tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "rej.jsonl")
    kept, dropped = in_memory.resolve()
    out = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert out == kept
    rejects = (tmp_path / "rej.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in rejects] == dropped
    assert summary["kept"] == len(kept) and summary["dropped"] == len(dropped) > 10


def test_shards_give_byte_identical_results(tmp_path) -> None:
    _corpus_file(tmp_path / "in.jsonl", random.Random(41), groups=80)
    outputs = []
    for shards in (1, 3):
        run = tmp_path / f"shards{shards}"
        run.mkdir()
        summary = dedup_jsonl(
            tmp_path / "in.jsonl",
            run / "out.jsonl",
            run / "rejects.jsonl",
            clusters=run / "clusters.jsonl",
            score=lambda r: r["meta"]["score"],
            shards=shards,
            batch_size=16,  # several batches for the workers to share
        )
        outputs.append(
            (
                summary,
                *((run / n).read_bytes() for n in ("out.jsonl", "rejects.jsonl", "clusters.jsonl")),
            )
        )
    assert outputs[0] == outputs[1]
    assert outputs[0][0]["dropped"] > 10 and outputs[0][0]["dropped_by_method"]["minhash"] > 0


def test_jsonl_records_name_the_bad_line(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text('{"id": "a", "instruction": "x"}\n\n{"id": "b", oops}\n')
    with pytest.raises(InputError, match="line 3"):
        dedup_jsonl(path, tmp_path / "out.jsonl", tmp_path / "rejects.jsonl")
