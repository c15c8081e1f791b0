"""Rule-based checks on text, each a small function returning a Verdict.

The rules of Evol-Instruct's elimination step (Xu et al., 2023, arXiv
2304.12244, section 3.3) and of Ragas-style question rewrites:

- ``refusal``: the answer contains "sorry" (or another refusal phrase) and has
  fewer than 80 words (the paper's rule; a long answer that apologises once is
  kept);
- ``empty_answer``: only punctuation and stop words;
- ``prompt_leak``: the text copies words from the evolving prompt
  (``#Rewritten Prompt#``, "given prompt", ...);
- ``language_drift``: the output's script differs from the input's (a Chinese
  seed must give a Chinese evolution);
- ``context_reference``: a question that says "based on the context";
- ``too_long``: over a word limit.

Words are counted the way a reader would: runs of letters, and CJK characters
at about 1.7 characters to a word (so Ragas' 15-word limit allows a natural
Chinese question of some 25 characters).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from functools import cache

from evoforge.validators.base import PASS, Check, Verdict

_WORDS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)

STOP_WORDS = frozenset(
    (
        "a an and are as at be but by for if in into is it of on or such that the their "
        "then there these they this to was will with i you he she we "
        "的 了 是 在 和 也 就 都 而 及 与 着 或 一个 没有 我 你 他 她 它 们 这 那 吗 呢 吧 啊"
    ).split()
)

# "sorry" is the paper's word; the rest are the usual ways models decline, kept narrow
# so that "I cannot stress enough..." is not a refusal.
REFUSAL_PHRASES = (
    "sorry",
    "i apologize",
    "i apologise",
    "i cannot help",
    "i can't help",
    "i cannot assist",
    "i can't assist",
    "i cannot provide",
    "i can't provide",
    "i am unable to",
    "i'm unable to",
    "as an ai",
    "as a language model",
    "抱歉",
    "对不起",
    "我无法",
)

LEAK_PHRASES = (
    "#the given prompt#",
    "#given prompt#",
    "#rewritten prompt#",
    "#created prompt#",
    "#the given response#",
    "#given response#",
    "#rewritten response#",
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "given response",
    "rewritten response",
    "the original prompt",
    "rewritten question",
    "original question",
    "given question",
    "#new question#",
    "原始提示",
    "改写后的提示",
)

CONTEXT_PHRASES = (
    "based on the context",
    "based on the given context",
    "based on the provided context",
    "according to the context",
    "according to the passage",
    "according to the text",
    "according to the document",
    "in the given context",
    "in the provided context",
    "the provided text",
    "the given passage",
    "in this passage",
    "from the passage",
    "mentioned in the context",
    "based on the passage",
    "based on the text",
    "based on the information",
    "based on the document",
    "the given text",
    "in the text",
    "the above text",
    "context 1",
    "context 2",
    "the first context",
    "the second context",
    "the first passage",
    "the second passage",
    "根据材料",
    "文中",
    "上述",
    "根据上下文",
    "根据文章",
    "根据段落",
    "根据上文",
    "根据给定",
)


_CJK_CHARS_PER_WORD = 1.7


def words(text: str) -> list[str]:
    """Runs of letters or digits, and each CJK character on its own."""
    return _WORDS.findall(text)


def word_count(text: str) -> int:
    """Words as a reader counts them; CJK characters count about 1.7 to a word."""
    tokens = words(text)
    cjk = sum(1 for token in tokens if len(token) == 1 and _is_cjk(token))
    return len(tokens) - cjk + math.ceil(cjk / _CJK_CHARS_PER_WORD)


def _is_cjk(ch: str) -> bool:
    return "\u3040" <= ch <= "\u30ff" or "\u3400" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af"


@cache
def _pattern(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """Whole words for alphabetic phrases ("in the text" is not in "textile"); CJK
    phrases, which have no word boundaries, match as substrings."""
    parts = []
    for phrase in phrases:
        escaped = re.escape(phrase)
        if phrase[:1].isascii() and phrase[:1].isalnum():
            escaped = r"(?<!\w)" + escaped
        if phrase[-1:].isascii() and phrase[-1:].isalnum():
            escaped += r"(?!\w)"
        parts.append(escaped)
    return re.compile("|".join(parts))


def _find(text: str, phrases: tuple[str, ...]) -> str | None:
    match = _pattern(phrases).search(text.lower())
    return match.group(0) if match else None


def empty_answer(text: str) -> Verdict:
    """Fails when ``text`` holds nothing but punctuation and stop words."""
    content = [w for w in words(text) if w.lower() not in STOP_WORDS]
    if content:
        return PASS
    return Verdict.failed("empty_answer", f"only punctuation and stop words: {text[:80]!r}")


def refusal(text: str, *, max_words: int = 80) -> Verdict:
    """Fails when ``text`` contains a refusal phrase and has fewer than ``max_words`` words."""
    phrase = _find(text, REFUSAL_PHRASES)
    count = word_count(text)
    if phrase is None or count >= max_words:
        return PASS
    return Verdict.failed("refusal", f"contains {phrase!r} and has {count} < {max_words} words")


def prompt_leak(text: str) -> Verdict:
    """Fails when ``text`` copies words of the evolving prompt itself."""
    phrase = _find(text, LEAK_PHRASES)
    if phrase is None:
        return PASS
    return Verdict.failed("prompt_leak", f"copies {phrase!r} from the evolving prompt")


def context_reference(text: str) -> Verdict:
    """Fails when a question points at "the context" instead of standing on its own."""
    phrase = _find(text, CONTEXT_PHRASES)
    if phrase is None:
        return PASS
    return Verdict.failed("context_reference", f"says {phrase!r}")


def too_long(text: str, *, max_words: int) -> Verdict:
    count = word_count(text)
    if count <= max_words:
        return PASS
    return Verdict.failed("too_long", f"{count} words, the limit is {max_words}")


# Scripts whose characters are words rather than letters weigh more, so a Chinese
# sentence with a short English code name in it still counts as Chinese.
_SCRIPT_WEIGHT = {"Han": 3.0, "Kana": 3.0, "Hangul": 2.0}
_SCRIPT_PREFIXES = (
    ("CJK", "Han"),
    ("HIRAGANA", "Kana"),
    ("KATAKANA", "Kana"),
    ("HANGUL", "Hangul"),
    ("CYRILLIC", "Cyrillic"),
    ("GREEK", "Greek"),
    ("ARABIC", "Arabic"),
    ("HEBREW", "Hebrew"),
    ("DEVANAGARI", "Devanagari"),
    ("THAI", "Thai"),
    ("LATIN", "Latin"),
)


def script_profile(text: str) -> Counter[str]:
    """Weighted letter counts per writing system (Latin, Han, Cyrillic, ...)."""
    profile: Counter[str] = Counter()
    for ch in text:
        if not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        for prefix, script in _SCRIPT_PREFIXES:
            if name.startswith(prefix):
                profile[script] += _SCRIPT_WEIGHT.get(script, 1.0)
                break
    return profile


def dominant_script(text: str) -> str | None:
    profile = script_profile(text)
    return profile.most_common(1)[0][0] if profile else None


def language_drift(source: str, output: str, *, min_share: float = 0.3) -> Verdict:
    """Fails when the source's main script is under ``min_share`` of the output's letters.

    Formatted input a rewrite adds (code, JSON, a table) may bring another script
    in; the seed's own script must still carry the text.
    """
    script = dominant_script(source)
    profile = script_profile(output)
    total = sum(profile.values())
    if script is None or total < 5:
        return PASS
    share = profile[script] / total
    if share >= min_share:
        return PASS
    found = profile.most_common(1)[0][0]
    return Verdict.failed(
        "language_drift", f"the seed is written in {script}, the output in {found} ({share:.0%})"
    )


# Evolution sanity (issue 14): a weak model's "evolved instruction" that is an answer
# ("Here's a solution: ...") or a comment on the task ("This task requires ...").
# An answer opens like one and goes on to give it: a code block, numbered steps, or
# some length. "Here's a table of ..." and "Here is a function ..." open many real
# instructions, so only answer-like nouns count after "here is".
_ANSWER_OPENING = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|absolutely|okay|ok)\b[\s,!.:-]*)?"
    r"(?:here(?:'s|’s| is| are)|below is|the following is)\s+"
    r"(?:a|an|the|my|one|your)?\s*"
    r"(?:(?:possible|complete|full|detailed|simple|sample|working|correct|step-by-step|"
    r"python|javascript|java|c\+\+|sql|revised|improved|updated|final|corrected|concise|"
    r"brief|short|comprehensive|potential|suggested)\s+){0,3}"
    r"(?:solution|solutions|answer|answers|implementation|response|explanation|"
    r"rewritten|revised version|approach to solv|way to solve)",
    re.IGNORECASE,
)
_COURTESY_OPENING = re.compile(
    r"^\W*(?:sure|certainly|of course|absolutely)\b[\s,!.]+(?:here|i|below|let)", re.IGNORECASE
)
_STEPS = re.compile(r"(?m)^\s*(?:step\s*)?\d+[.):]\s+\S")

_META_OPENING = re.compile(
    r"^\W*(?:"
    r"(?:this|the|that|the given|the above|the original|the new|the rewritten|the evolved)\s+"
    r"(?:task|prompt|instruction|question|request|problem|exercise|rewrite)\s+"
    r"(?:requires|involves|asks|is asking|wants|demands|tests|calls for|would require|"
    r"aims|is designed|has been|was|focuses|now requires|is about|adds|increases)"
    r"(?!\s+(?:you|your)\b)"
    r"|(?:i|we)\s*(?:have|'ve|’ve)?\s*(?:rewritten|added|made|increased|modified|changed|"
    r"created|revised|replaced|introduced|complicated)\b"
    r"|to (?:make|increase) (?:this|the) (?:task|prompt|instruction|question)\b"
    r"|(?:note|explanation|rationale)\s*:"
    r")",
    re.IGNORECASE,
)


def answer_not_instruction(text: str, *, min_words: int = 30) -> Verdict:
    """Fails when an evolved "instruction" is an answer: it opens like one ("Here's a
    solution", "Sure! Here is ...") and gives it (a code block, numbered steps, or at
    least ``min_words`` words)."""
    stripped = text.strip()
    opening = _ANSWER_OPENING.match(stripped) or _COURTESY_OPENING.match(stripped)
    if opening is None:
        return PASS
    body = "```" in stripped or len(_STEPS.findall(stripped)) >= 2
    if not body and word_count(stripped) < min_words:
        return PASS
    return Verdict.failed(
        "answer_not_instruction",
        f"opens like an answer ({opening.group(0).strip()!r}) and gives one: {stripped[:80]!r}",
    )


def meta_comment(text: str) -> Verdict:
    """Fails when an evolved "instruction" comments on the task instead of setting it
    ("This task requires ...", "I have added a constraint ...")."""
    match = _META_OPENING.match(text.strip())
    if match is None:
        return PASS
    return Verdict.failed(
        "meta_comment", f"comments on the task ({match.group(0).strip()!r}): {text.strip()[:80]!r}"
    )


def _instruction_text(record: dict, _settings: object = None) -> str:
    return str(record.get("instruction") or record.get("question") or "")


ANSWER_NOT_INSTRUCTION = Check(
    "answer_not_instruction",
    lambda record, settings=None: answer_not_instruction(_instruction_text(record)),
    "$.instruction",
)
META_COMMENT = Check(
    "meta_comment",
    lambda record, settings=None: meta_comment(_instruction_text(record)),
    "$.instruction",
)
