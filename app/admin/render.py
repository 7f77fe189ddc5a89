"""Safe rendering of untrusted text for reviewers' browsers (pure).

Everything a skill, an agent or an API caller wrote is hostile until shown otherwise:
- Markdown goes through markdown-it with raw HTML off, then through nh3 (an allowlist sanitiser);
- every other file and every value is escaped and shown as code or text;
- characters that render as nothing or reorder what follows (zero-width, bidi controls, tag
  characters, variation selectors, other format and control characters) are replaced by a visible
  marker such as ⟨U+200B⟩, so a reviewer sees exactly what an agent would be given.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup, escape

from app.governance.text import BIDI, QUIET, TAG_RANGE, ZERO_WIDTH

# Invisible or misleading even though Unicode files them as letters or marks.
_EXTRA_INVISIBLE = frozenset(
    "\u115f\u1160\u17b4\u17b5\u3164\uffa0\u034f\u2028\u2029"
    + "".join(chr(c) for c in range(0x180B, 0x1810))  # Mongolian free variation selectors and vowel separator
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))  # variation selectors
)
_KEEP = frozenset("\n\t")
_SAFE_TAGS = frozenset(
    {
        "a",
        "abbr",
        "b",
        "blockquote",
        "br",
        "code",
        "dd",
        "del",
        "details",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "kbd",
        "li",
        "ol",
        "p",
        "pre",
        "s",
        "span",
        "strong",
        "sub",
        "summary",
        "sup",
        "table",
        "tbody",
        "td",
        "th",
        "thead",
        "tr",
        "ul",
    }
)
_SAFE_ATTRIBUTES = {"a": {"href", "title"}, "span": {"title"}, "ol": {"start"}}
_MARKER_CLASS = "invisible-char"


def is_invisible(char: str) -> bool:
    """Whether `char` renders as nothing, or changes how the text around it is shown."""
    code = ord(char)
    if char in _KEEP:
        return False
    if char in ZERO_WIDTH or char in BIDI or char in QUIET or char in _EXTRA_INVISIBLE:
        return True
    if code in TAG_RANGE or 0xE0100 <= code <= 0xE01EF:  # tag characters, variation selectors 17-256
        return True
    return unicodedata.category(char) in ("Cf", "Cc", "Cs", "Co", "Cn", "Zl", "Zp")


def marker(char: str) -> str:
    """The visible stand-in of one invisible character: ⟨U+200B⟩."""
    return f"⟨U+{ord(char):04X}⟩"


def _has_invisible(text: str) -> bool:
    return not text.isascii() or any(is_invisible(c) for c in text)


def plain_markers(text: str) -> str:
    """`text` with every invisible character replaced by its marker as plain text (no markup)."""
    if not _has_invisible(text):
        return text
    return "".join(marker(c) if is_invisible(c) else c for c in text)


def reveal(value: object) -> Markup:
    """`value` as escaped HTML text, each invisible character shown as a highlighted marker."""
    if isinstance(value, Markup):
        return value
    text = "" if value is None else str(value).replace("\r\n", "\n")
    escaped = str(escape(text))
    if not _has_invisible(escaped):
        return Markup(escaped)  # noqa: S704 - escaped above
    out = []
    for char in escaped:
        if is_invisible(char):
            name = unicodedata.name(char, "") or "invisible character"
            out.append(f'<span class="{_MARKER_CLASS}" title="{escape(name)}">{marker(char)}</span>')
        else:
            out.append(char)
    return Markup("".join(out))  # noqa: S704 - built from escaped text and fixed markup


# --- Markdown ------------------------------------------------------------------------------------


def _text_rule(_renderer: Any, tokens: Sequence[Token], idx: int, *_: Any) -> str:
    return str(reveal(tokens[idx].content))


def _code_inline_rule(_renderer: Any, tokens: Sequence[Token], idx: int, *_: Any) -> str:
    return f"<code>{reveal(tokens[idx].content)}</code>"


def _code_block_rule(_renderer: Any, tokens: Sequence[Token], idx: int, *_: Any) -> str:
    # The fence's info string is the author's: it is not rendered at all (no class, no language).
    return f"<pre><code>{reveal(tokens[idx].content)}</code></pre>\n"


def _image_rule(_renderer: Any, tokens: Sequence[Token], idx: int, *_: Any) -> str:
    # Never loaded: an image would call out to its host the moment a reviewer opens the page.
    token = tokens[idx]
    alt = "".join(child.content for child in token.children or [])
    return f"<em>[image: {reveal(alt)} → {reveal(token.attrGet('src') or '')}]</em>"


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.enable("table").enable("strikethrough")
    md.add_render_rule("text", _text_rule)
    md.add_render_rule("code_inline", _code_inline_rule)
    md.add_render_rule("code_block", _code_block_rule)
    md.add_render_rule("fence", _code_block_rule)
    md.add_render_rule("image", _image_rule)
    return md


def sanitise(html: str) -> str:
    """An HTML fragment reduced to an allowlist of tags and attributes; links to http(s) and mailto only."""
    return nh3.clean(
        html,
        tags=set(_SAFE_TAGS),
        clean_content_tags={"script", "style"},
        attributes={k: set(v) for k, v in _SAFE_ATTRIBUTES.items()},
        tag_attribute_values={"span": {"class": {_MARKER_CLASS}}},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
    )


def markdown(text: str) -> Markup:
    """Untrusted Markdown as sanitised HTML: no raw HTML, script or image; invisible characters shown."""
    html = sanitise(_parser().render(text))
    # Text nodes already carry highlighted markers; what is left sits in attribute values (a link's
    # href or title), where only plain text is safe.
    return Markup(plain_markers(html))  # noqa: S704 - sanitised above


# --- code and values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CodeLine:
    """One line of a file as shown: its number, its escaped text and the findings on it."""

    number: int
    html: Markup
    rules: tuple[str, ...] = ()  # findings that stand
    waived: tuple[str, ...] = ()  # findings a reviewer marked as false positives

    @property
    def flagged(self) -> bool:
        """Whether a finding that stands points at this line."""
        return bool(self.rules)


def code_lines(
    text: str,
    flags: dict[int, tuple[str, ...]] | None = None,
    waived: dict[int, tuple[str, ...]] | None = None,
) -> list[CodeLine]:
    """A file as numbered, escaped lines (split as the scanner numbers them), findings attached."""
    flags, waived = flags or {}, waived or {}
    return [
        CodeLine(number, reveal(line.removesuffix("\r")), flags.get(number, ()), waived.get(number, ()))
        for number, line in enumerate(text.split("\n"), start=1)
    ]


def pretty_json(value: Any) -> Markup:
    """A JSON value, indented, as escaped text with invisible characters shown."""
    return reveal(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True, default=str))


def compact_json(value: Any) -> Markup:
    """A JSON object as `key: value` lines (values as JSON), escaped, invisible characters shown."""
    if not isinstance(value, dict):
        return pretty_json(value)
    lines = (f"{k}: {json.dumps(v, ensure_ascii=False, default=str)}" for k, v in sorted(value.items()))
    return reveal("\n".join(lines))


def clip(text: str | None, limit: int = 160) -> str:
    """`text` cut to `limit` characters, with an ellipsis when cut."""
    if text is None:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"
