"""LIMA's answer filters (Zhou et al., 2023, "LIMA: Less Is More for Alignment").

LIMA kept answers written as a helpful assistant: no first person, no pointers to
other answers ("as mentioned above"), 1,200-4,096 characters once links and images
are stripped. The rules here read text the way a person would:

- :func:`first_person` finds the answerer speaking as "I", "me", "my" ... but not
  ``for i in range(3)`` (code), "World War I" / "Type I" / "Henry I" (Roman
  numerals), ``I/O``, "i.e." or words inside quotation marks (someone else speaking:
  ``He said "I am tired"``). Fenced and inline code is removed first.
- :func:`other_answer_reference` finds phrases that point at another answer or
  thread ("the other answer", "accepted answer", "Stack Exchange", "as mentioned
  above", ...), matched as whole words.
- :func:`strip_links` removes Markdown images, turns Markdown links into their
  text and drops bare URLs and HTML ``<img>`` / ``<a>`` tags, before length checks.

:func:`check_lima` composes them into one :class:`~evoforge.validators.base.Verdict`
(reason codes ``first_person``, ``references_other_answer``, ``too_short``,
``too_long``).
"""

from __future__ import annotations

import re

from evoforge.validators.base import PASS, Verdict

__all__ = [
    "LIMA_MAX_CHARS",
    "LIMA_MIN_CHARS",
    "OTHER_ANSWER_PHRASES",
    "check_lima",
    "first_person",
    "other_answer_reference",
    "strip_links",
]

LIMA_MIN_CHARS = 1200
LIMA_MAX_CHARS = 4096

OTHER_ANSWER_PHRASES = (
    "as mentioned above",
    "as mentioned earlier",
    "as mentioned before",
    "as mentioned in another answer",
    "as mentioned in the other answer",
    "as others have said",
    "as others have mentioned",
    "as others have pointed out",
    "as someone else said",
    "as someone mentioned",
    "as another answer",
    "as the other answer",
    "as i said",
    "as i mentioned",
    "as stated above",
    "as stated earlier",
    "as discussed above",
    "as noted above",
    "as explained above",
    "as said above",
    "in my previous answer",
    "in the previous answer",
    "in another answer",
    "in the other answer",
    "the other answer",
    "the other answers",
    "other answers here",
    "the answer above",
    "the answer below",
    "the answers above",
    "the accepted answer",
    "accepted answer",
    "the top answer",
    "the top-voted answer",
    "highest voted answer",
    "previous answers",
    "previous poster",
    "the previous commenter",
    "stack exchange",
    "stackexchange",
    "stack overflow",
    "stackoverflow",
    "this thread",
    "see above",
    "upvote",
    "如上所述",
    "如前所述",
    "其他回答",
    "楼上",
)

# Code, where `i` is a loop variable and never the writer.
_FENCED = re.compile(r"```.*?(?:```|\Z)|~~~.*?(?:~~~|\Z)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_INDENTED_CODE = re.compile(r"(?m)^(?: {4}|\t).*$")
# Quoted speech: straight and curly double quotes, and curly single quotes.
_QUOTED = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”|‘[^’\n]*’|«[^»\n]*»")
# Code-like text outside code marks: `i` used as a variable (i = 0, i++, [i], i < n,
# i in range), `I/O`, `i.e.`.
_CODE_I = re.compile(
    r"(?<![\w'’])i(?=\s*(?:[-+*/%<>!=]=?|\+\+|--|\]|\)|,\s*\w+\s*(?:in|=)\b|\s+in\s+\w))"
    r"|(?<=[\[(])\s*i(?![\w'’])"
    r"|(?<![\w'’])I/O(?!\w)|(?<![\w'’])i\.e\.",
    re.IGNORECASE,
)
# A Roman numeral I: after a label or a name ("World War I", "Type I", "Henry I",
# "Phase I"), unless a verb follows as it would follow the pronoun ("Then I think").
_LABELS = frozenset(
    "war type phase part chapter class grade stage level article title book act volume "
    "section appendix figure table schedule division league round world henry louis "
    "charles elizabeth james george william edward richard john mary peter frederick "
    "napoleon alexander pope king queen emperor tsar".split()
)
_TITLED = frozenset(w.capitalize() for w in _LABELS)
_PRONOUN_VERBS = frozenset(
    "am was have had will would think believe can could feel do did should must might "
    "may need want hope guess know recommend suggest see prefer like love use found "
    "tried 'm ’m 've ’ve 'd ’d 'll ’ll".split()
)
_CAPITAL_I = re.compile(r"(?<![\w'’])I(?![\w'’])")
_WORD_BEFORE = re.compile(r"([A-Za-z]+)([^A-Za-z]*)$")
_WORD_AFTER = re.compile(r"^\s*(['’]?[A-Za-z]+)")


def _is_roman(text: str, start: int) -> bool:
    before = _WORD_BEFORE.search(text[max(0, start - 40) : start])
    after = _WORD_AFTER.match(text[start + 1 : start + 30])
    if before is not None and not before.group(2).strip() and before.group(1) in _TITLED:
        return True  # "World War I was ...", "Henry I had ..."
    if after is not None and after.group(1).lower() in _PRONOUN_VERBS:
        return False
    if (
        after is not None
        and after.group(1) in ("and", "or", "to")
        and "II" in text[start : start + 12]
    ):
        return True
    if before is None or before.group(2).strip(" -"):
        return False  # a sentence or clause starts here: "... done. I ..."
    word = before.group(1)
    return word.lower() in _LABELS or (
        word[0].isupper() and (after is None or not after.group(1)[0].islower())
    )


def _drop_roman(text: str) -> str:
    return _CAPITAL_I.sub(lambda m: " " if _is_roman(text, m.start()) else m.group(0), text)


_SMALL_I = re.compile(r"(?<![\w'’])i(?![\w'’])")


def _drop_variable_i(text: str) -> str:
    """A lower-case ``i`` is a pronoun only where a verb follows it ("what do i do");
    "the index i runs", "when i is 0" name a variable."""

    def keep(match: re.Match[str]) -> str:
        after = _WORD_AFTER.match(text[match.end() : match.end() + 30])
        return match.group(0) if after and after.group(1).lower() in _PRONOUN_VERBS else " "

    return _SMALL_I.sub(keep, text)


_PERSON = re.compile(
    r"(?<![\w'’/.-])(i|i'm|i’m|i've|i’ve|i'd|i’d|i'll|i’ll|me|my|mine|myself)(?![\w'’/-])",
    re.IGNORECASE,
)

_MD_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)|!\[[^\]]*\]\[[^\]]*\]")
_MD_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)|\[([^\]]*)\]\[[^\]]*\]")
_MD_LINK_DEF = re.compile(r"(?m)^\s*\[[^\]]+\]:\s*\S+.*$")
_HTML_IMG = re.compile(r"<img\b[^>]*>", re.IGNORECASE)
_HTML_A = re.compile(r"<a\b[^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)
_URL = re.compile(r"<?(?:https?|ftp)://[^\s<>)\]]+>?|\bwww\.[^\s<>)\]]+", re.IGNORECASE)


def strip_links(text: str) -> str:
    """``text`` without images and link targets: Markdown images and HTML ``<img>``
    removed, Markdown and HTML links replaced by their text, bare URLs dropped."""
    text = _MD_IMAGE.sub("", text)
    text = _HTML_IMG.sub("", text)
    text = _MD_LINK.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), text)
    text = _MD_LINK_DEF.sub("", text)
    text = _HTML_A.sub(r"\1", text)
    text = _URL.sub("", text)
    return re.sub(r"[ \t]{2,}", " ", text)


def _speaker_text(text: str) -> str:
    """The text the answerer says in their own voice: no code, no quoted speech, no
    ``i`` used as a variable, no Roman numeral I."""
    text = _FENCED.sub(" ", text)
    text = _INLINE_CODE.sub(" ", text)
    text = _INDENTED_CODE.sub(" ", text)
    text = _QUOTED.sub(" ", text)
    text = _CODE_I.sub(" ", text)
    return _drop_variable_i(_drop_roman(text))


def first_person(text: str) -> str | None:
    """The first word in which the answerer speaks as themself ("I", "my", ...), or
    ``None``; code, quoted speech, Roman numerals and ``I/O`` do not count."""
    match = _PERSON.search(_speaker_text(text))
    return match.group(0) if match else None


def _phrase_pattern() -> re.Pattern[str]:
    parts = []
    for phrase in sorted(OTHER_ANSWER_PHRASES, key=len, reverse=True):
        escaped = re.escape(phrase).replace(r"\ ", r"\s+")
        if phrase[:1].isascii():
            escaped = rf"(?<!\w){escaped}(?!\w)"
        parts.append(escaped)
    return re.compile("|".join(parts), re.IGNORECASE)


_OTHER_ANSWER = _phrase_pattern()


def other_answer_reference(text: str) -> str | None:
    """The phrase by which ``text`` points at another answer or thread, or ``None``."""
    match = _OTHER_ANSWER.search(text)
    return " ".join(match.group(0).lower().split()) if match else None


def check_lima(answer: str, *, lima_length: bool = False) -> Verdict:
    """LIMA's filters: no first person, no pointers to other answers and, with
    ``lima_length``, 1,200-4,096 characters once links and images are stripped."""
    word = first_person(answer)
    if word is not None:
        return Verdict.failed("first_person", f"the answer speaks in the first person ({word!r})")
    phrase = other_answer_reference(answer)
    if phrase is not None:
        return Verdict.failed("references_other_answer", f"the answer says {phrase!r}")
    if lima_length:
        size = len(strip_links(answer).strip())
        if size < LIMA_MIN_CHARS:
            return Verdict.failed(
                "too_short", f"{size} chars without links, the minimum is {LIMA_MIN_CHARS}"
            )
        if size > LIMA_MAX_CHARS:
            return Verdict.failed(
                "too_long", f"{size} chars without links, the maximum is {LIMA_MAX_CHARS}"
            )
    return PASS
