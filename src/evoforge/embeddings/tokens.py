"""Word tokens for model-free text features: lower-cased words, CJK character bigrams,
English stop words. Shared by the hashing embedder and the knowledge graph's keyphrases."""

from __future__ import annotations

import re

# Hiragana, Katakana, CJK Unified Ideographs (+ extension A, compatibility), Hangul.
_CJK_CHARS = "\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"([{_CJK_CHARS}]+)|([^\W_{_CJK_CHARS}]+)")
_CJK_START = re.compile(rf"[{_CJK_CHARS}]")

ENGLISH_STOP_WORDS = frozenset(
    """a about above after again against all also am an and any are aren as at be because
    been before being below between both but by can cannot could couldn did didn do does
    doesn doing don down during each either else etc even ever every few for from further
    get gets got had hadn has hasn have haven having he her here hers herself him himself
    his how however i if in into is isn it its itself just least less let like ll made
    make many may me might more most much must mustn my myself neither no nor not now of
    off often on once one only or other others otherwise our ours ourselves out over own
    per perhaps rather re same shall shan she should shouldn since so some such than that
    the their theirs them themselves then there these they this those though through thus
    to too under until up upon us use used using ve very via was wasn we were weren what
    whatever when where whether which while who whom whose why will with within without
    won would wouldn yet you your yours yourself yourselves""".split()
)


def is_cjk(token: str) -> bool:
    """Whether a token from :func:`word_tokens` is Chinese, Japanese or Korean text."""
    return bool(token) and _CJK_START.match(token) is not None


def word_tokens(text: str) -> list[str]:
    """Lower-cased word tokens; a run of CJK characters becomes its overlapping character
    bigrams (those scripts do not separate words with spaces), a lone CJK character itself.
    """
    tokens: list[str] = []
    for cjk, word in _TOKEN.findall(text.lower()):
        if word:
            tokens.append(word)
        elif len(cjk) == 1:
            tokens.append(cjk)
        else:
            tokens.extend(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return tokens
