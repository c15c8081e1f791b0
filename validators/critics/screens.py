"""Model-free screens of a question: does it stand on its own, and is it a question?

Ragas v0.1 test-set generation (``testset/prompts.py``) asks an LLM critic whether a
question is independent, with a clear intent. These two screens catch the common
failures with no model call, so a judge is never asked about them:
``SelfContained`` (``not_self_contained``) and ``WellFormed`` (``not_a_question``).
Both are also validators (``check(record)``), so they can run as checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

from evoforge.records import Record
from evoforge.validators import heuristics
from evoforge.validators.base import PASS, Verdict
from evoforge.validators.critics.base import Critic
from evoforge.validators.critics.sample import question_of, reference_of, same_words, user_texts

_NOUNS = (
    r"contexts?|passages?|texts?|documents?|articles?|excerpts?|paragraphs?|sections?|"
    r"tables?|figures?|charts?|diagrams?|speakers?|snippets?|chunks?"
)
_TIME_WORDS = (
    r"day|days|week|weeks|month|months|year|years|season|seasons|decade|century|morning|"
    r"evening|night|spring|summer|autumn|fall|winter|game|match|round|election|generation"
)
# Word-boundary aware, case-insensitive. A phrase followed by "of" names what it means
# ("in the context of the Cold War", "the text of the treaty"), so it is allowed.
_LATIN_PATTERNS = (
    rf"\b(?:the|this|that|these|those|said)\s+(?:(?:given|provided|above|following|previous|"
    rf"preceding|first|second|third|last|other|same)\s+)?(?:{_NOUNS})\b(?!\s+of\b)"
    r"(?!\s+(?:message|messages|messaging|tennis|skating|skater|skaters|salt)\b)",
    r"\b(?:the|this)\s+author'?s?\b(?!\s+of\b)",
    r"\bthe\s+above\b",
    r"\b(?:mentioned|shown|listed|stated|described|given|cited|quoted)\s+(?:above|below)\b",
    r"\babove[-\s]mentioned\b",
    rf"\bthe\s+following\b(?!\s+(?:{_TIME_WORDS})\b)",
    r"\b(?:context|passage|document|excerpt|chunk|snippet)\s*#?\s*\d+\b",
)
_AUTHOR = re.compile(r"\b(?:the|this)\s+author'?s?\b", re.IGNORECASE)
_LATIN = [re.compile(p, re.IGNORECASE) for p in _LATIN_PATTERNS]

# Chinese has no spaces, so each phrase carries guards against the words it hides in:
# 本文 in 日本文化, 文中 in 中文中 ("in Chinese"), 表中 in 代表中国, 上文 in 网上文章.
_CJK_PATTERNS = {
    "上文": r"(?<![网线晚早])上文(?![章化件学字])",
    "下文": r"下文",
    "上下文": r"上下文",
    "文中": r"(?<![中英日韩法德俄外汉译语])文中",
    "本文": r"(?<![日基根资版剧样课书脚])本文(?!化)",
    "该文": r"(?<!应)该文(?![明化])",
    "原文": r"原文",
    "上述": r"上述",
    "下列": r"下列",
    "以下": r"以下(?:内容|材料|文字|段落|信息)",
    "这段": r"这段(?:话|文字|材料|内容|描述|文本)",
    "段落": r"(?:这个|这一|该|本|此)段落",
    "文章": r"(?:这篇|该|本|此)文章",
    "材料": r"(?:所给|给定|上述|该|这段|根据)材料|材料中",
    "图表": r"(?<![试企意地])图中|(?<![代发外])表中|上图|下图|上表|下表",
    "说话人": r"说话人",
    "作者": r"作者",
}
_CJK = {name: re.compile(pattern) for name, pattern in _CJK_PATTERNS.items()}

# Capitalised words that are not names ("I" inside a sentence).
_NOT_NAMES = frozenset("i i'm i've i'd i'll".split())


def _names_someone(text: str) -> bool:
    """A capitalised word that does not start a sentence, or a title in 《》: a name."""
    if re.search(r"《[^》]+》", text):
        return True
    for match in re.finditer(r"[A-Z][\w'’-]*", text):
        start = match.start()
        if start > 0 and text[start - 1].isalnum():  # inside a word, e.g. "McD"
            continue
        before = text[:start].rstrip()
        if not before or before[-1] in '.?!:;"“(':  # a sentence starts here
            continue
        if match.group().lower() not in _NOT_NAMES:
            return True
    return False


def _latin_reference(text: str, named: bool) -> str | None:
    for pattern in _LATIN:
        for match in pattern.finditer(text):
            if named and _AUTHOR.fullmatch(match.group()):
                continue
            return match.group()
    return None


def _cjk_reference(text: str, named: bool) -> str | None:
    for name, pattern in _CJK.items():
        match = pattern.search(text)
        if match is None or (name == "作者" and named):
            continue
        return match.group()
    return None


def _bounded_context_phrase(text: str) -> str | None:
    """The phrase ``heuristics.context_reference`` flags, if it stands as whole words.

    That check matches substrings ("in the text" inside "in the textile
    industry"); it runs first, and its phrases are then confirmed at word
    boundaries (CJK phrases through the guarded patterns above).
    """
    if heuristics.context_reference(text).ok:
        return None
    lowered = text.lower()
    for phrase in heuristics.CONTEXT_PHRASES:
        if phrase.isascii():
            if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", lowered):
                return phrase
        elif phrase in _CJK:
            if _CJK[phrase].search(text):
                return phrase
        elif phrase in text:
            return phrase
    return None


@dataclass(frozen=True)
class SelfContained(Critic):
    """The question must not point at material its reader cannot see (no model call).

    Ragas' question critic asks for "independence": a test question is put to a
    RAG system without its contexts, so "What does the passage say about X?"
    cannot be answered. Fails ``not_self_contained`` on phrases such as "the
    context", "this passage", "the text", "the document", "the article", "the
    author" (unless the question names someone: "What did Tolkien write..."),
    "the above", "mentioned above", "the following" (not "the following year"),
    "this section", "the table", "the figure", "the speaker", "context 1", and
    Chinese ones (上文, 文中, 本文, 该文, 这段话, 作者 ...), besides everything
    ``heuristics.context_reference`` flags. Matching is case-insensitive and
    word-boundary aware ("contextual", "textile" pass); a phrase followed by
    "of" names its referent and passes ("in the context of the Cold War").

    Every user turn of a conversation is checked (the reader sees them all); a
    name in any turn excuses "the author".
    """

    name: ClassVar[str] = "self_contained"

    def check(self, record: Record) -> Verdict:
        """The ``Validator`` protocol: the same as ``screen``."""
        return self.screen(record)

    def screen(self, record: Record) -> Verdict:
        question = question_of(record)
        user_turns = user_texts(question)
        shown = [question] if isinstance(question, str) else [t["content"] for t in question]
        named = any(_names_someone(text) for text in shown)
        for number, text in enumerate(user_turns, start=1):
            phrase = (
                _bounded_context_phrase(text)
                or _latin_reference(text, named)
                or _cjk_reference(text, named)
            )
            if phrase is not None:
                where = "" if isinstance(question, str) else f"user turn {number}: "
                return Verdict.failed(
                    "not_self_contained",
                    f"{where}the question says {phrase!r}, which points at material the "
                    "reader cannot see; name what it refers to instead",
                )
        return PASS


class WellFormed(Critic):
    """The question must be a question a person could ask (no model call).

    Small models sometimes return a title ("The Printing Press") or echo the
    answer as the question, and judges of the same size wave it through. Fails
    ``not_a_question`` when the (last user) question has fewer than
    ``min_words`` words, or has the same words as the reference.
    """

    name: ClassVar[str] = "well_formed"

    def __init__(self, min_words: int = 4) -> None:
        self.min_words = min_words

    def check(self, record: Record) -> Verdict:
        return self.screen(record)

    def screen(self, record: Record) -> Verdict:
        texts = user_texts(question_of(record))
        question = texts[-1] if texts else ""
        count = heuristics.word_count(question)
        if count < self.min_words:
            return Verdict.failed(
                "not_a_question",
                f"{question!r} has {count} words; a question needs {self.min_words}",
            )
        if same_words(question, reference_of(record)):
            return Verdict.failed("not_a_question", "the question only repeats the reference")
        return PASS
