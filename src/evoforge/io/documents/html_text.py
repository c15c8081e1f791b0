"""The visible text of an HTML page, for documents read from ``.html``/``.htm`` files."""

from __future__ import annotations

import re
from html.parser import HTMLParser

_HIDDEN_TAGS = frozenset(
    {"script", "style", "noscript", "template", "head", "nav", "svg", "iframe", "object"}
)
# A paragraph break (blank line) before and after these ...
_PARAGRAPH_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "details", "dl", "div",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
        "h5", "h6", "header", "hr", "main", "ol", "p", "pre", "section", "summary",
        "table", "ul",
    }
)  # fmt: skip
# ... and a line break for these.
_LINE_TAGS = frozenset({"br", "li", "tr", "dt", "caption", "option"})  # at their start only
_CELL_TAGS = frozenset({"td", "th"})  # a space before each cell
_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _VisibleText(HTMLParser):
    """Collects the text a browser would show, with block elements on their own lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden: list[str] = []  # open hidden elements
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # an unclosed <head> ends here
            self.hidden = [t for t in self.hidden if t != "head"]
        if tag in _HIDDEN_TAGS:
            self.hidden.append(tag)
            return
        self._break(tag)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN_TAGS:
            self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            if tag in self.hidden:
                while self.hidden and self.hidden.pop() != tag:
                    pass
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag not in _LINE_TAGS and tag not in _CELL_TAGS:
            self._break(tag)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            self.parts.append(data)
            return
        data = _SPACES.sub(" ", data)
        if not self.parts or self.parts[-1].endswith((" ", "\n")):
            data = data.lstrip()
        if data:
            self.parts.append(data)

    def _break(self, tag: str) -> None:
        if self.hidden:
            return
        if tag in _PARAGRAPH_TAGS:
            self.parts.append("\n\n")
        elif tag in _LINE_TAGS:
            self.parts.append("\n")
        elif tag in _CELL_TAGS and self.parts and not self.parts[-1].endswith((" ", "\n")):
            self.parts.append(" ")

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self.parts).split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """The visible text of an HTML page; block elements become line breaks.

    Drops the content of script, style, noscript, template, head, nav, svg,
    iframe and object elements; collapses runs of spaces (except inside
    ``<pre>``) and runs of blank lines.
    """
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return parser.text()
