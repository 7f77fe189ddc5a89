"""Split a Markdown document into frontmatter, prose paragraphs, code fences and hidden parts (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`{]*)")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*)$")
_HIDDEN_TAG = re.compile(
    r"<(\w+)\b[^>]*?(?:style\s*=\s*['\"][^'\"]*?(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size"
    r"\s*:\s*0(?![.\d])"
    r"|opacity\s*:\s*0(?![.\d])|color\s*:\s*(?:white|#fff(?:fff)?\b|transparent))[^'\"]*['\"]|\shidden("
    r"?:\s|>|=))[^>]*>"
    r"(.{1,5000}?)</\1>",
    re.I | re.S,
)
_PADDING = re.compile(r"\S[ \t\u00a0]{150,}\S|^[ \t\u00a0]{150,}\S")
# The frontmatter is the spec's: a first line `---`, YAML, a closing `---` within the first lines.
MAX_FRONTMATTER_LINES = 300


@dataclass(frozen=True)
class Paragraph:
    """Consecutive prose lines (a list is one paragraph) under one heading; `heading` is the heading path."""

    block: int
    heading: str
    lines: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Fence:
    """A fenced code block: first content line, info string, code, and the prose that introduces it."""

    line: int
    lang: str
    text: str
    lead: str
    block: int


@dataclass(frozen=True)
class Hidden:
    """Text a reader of the rendered page does not see: an HTML comment or invisibly styled markup."""

    line: int
    text: str
    kind: str


@dataclass(frozen=True)
class Document:
    """A Markdown document taken apart."""

    frontmatter: dict[str, object] | None
    frontmatter_lines: tuple[tuple[int, str], ...]
    paragraphs: tuple[Paragraph, ...]
    fences: tuple[Fence, ...]
    hidden: tuple[Hidden, ...]
    padded: tuple[int, ...]


def _frontmatter(lines: list[str]) -> tuple[dict[str, object] | None, int]:
    if not lines or lines[0].strip() != "---":
        return None, 0
    for end in range(1, min(len(lines), MAX_FRONTMATTER_LINES)):
        if lines[end].strip() == "---":
            raw = "\n".join(lines[1:end])
            try:
                data = yaml.safe_load(raw)
            except yaml.YAMLError:
                data = _loose_yaml(lines[1:end])
            return (data if isinstance(data, dict) else _loose_yaml(lines[1:end])), end + 1
    return None, 0


def _loose_yaml(lines: list[str]) -> dict[str, object]:
    """`key: value` pairs, for frontmatter that is not valid YAML."""
    out: dict[str, object] = {}
    for line in lines:
        match = re.match(r"^([\w-]+)\s*:\s*(.*)$", line)
        if match:
            out[match.group(1)] = match.group(2).strip().strip("'\"")
    return out


def parse(text: str) -> Document:
    """Take a Markdown document apart; line numbers are 1-based in `text`."""
    lines = text.split("\n")
    frontmatter, body_start = _frontmatter(lines)
    front_lines = tuple((n + 1, lines[n]) for n in range(1, max(body_start - 1, 1))) if body_start else ()
    paragraphs: list[Paragraph] = []
    fences: list[Fence] = []
    hidden: list[Hidden] = []
    padded: list[int] = []
    block, heading = 0, ""
    path: list[tuple[int, str]] = []  # the headings above, so a rule list keeps its "Do not" parent
    current: list[tuple[int, str]] = []
    recent: list[str] = []
    fence: tuple[str, int, str] | None = None  # marker, first content line, lang
    fence_lines: list[str] = []
    comment: list[str] | None = None
    comment_line = 0
    blank_run = 0

    def close_paragraph() -> None:
        nonlocal current
        if current:
            paragraphs.append(Paragraph(block, heading, tuple(current)))
            current = []

    for index in range(body_start, len(lines)):
        number = index + 1
        line = lines[index]
        if fence is not None:
            marker = fence[0]
            if line.strip().startswith(marker[0] * len(marker)) and not line.strip().strip(marker[0]):
                code = "\n".join(fence_lines)
                lead = " ".join(recent[-3:] + [heading] + [ln for ln in fence_lines[:2] if _is_comment(ln)])
                fences.append(Fence(fence[1], fence[2], code, lead, block))
                fence, fence_lines = None, []
            else:
                fence_lines.append(line)
            continue
        if comment is not None:
            end = line.find("-->")
            if end == -1:
                comment.append(line)
                continue
            comment.append(line[:end])
            hidden.append(Hidden(comment_line, "\n".join(comment), "comment"))
            comment = None
            line = " " * (end + 3) + line[end + 3 :]
        opened = _FENCE.match(line)
        if opened:
            close_paragraph()
            fence = (opened.group(1), number + 1, opened.group(2).lower())
            continue
        line = _strip_comments(line, number, hidden)
        start = line.find("<!--")
        if start != -1:
            comment, comment_line = [line[start + 4 :]], number
            line = line[:start]
        if not line.strip():
            blank_run += 1
            close_paragraph()
            continue
        if blank_run >= 30 or ("|" not in line and _PADDING.search(line)):
            padded.append(number)
        blank_run = 0
        head = _HEADING.match(line)
        if head:
            close_paragraph()
            block += 1
            level = len(line.strip()) - len(line.strip().lstrip("#"))
            path = [(lvl, title) for lvl, title in path if lvl < level] + [(level, head.group(1).strip())]
            heading = " / ".join(title for _, title in path)
        current.append((number, line))
        recent = (recent + [line.strip()])[-3:]
    if fence is not None:
        fences.append(
            Fence(fence[1], fence[2], "\n".join(fence_lines), " ".join(recent[-3:] + [heading]), block)
        )
    if comment is not None:
        hidden.append(Hidden(comment_line, "\n".join(comment), "comment"))
    close_paragraph()
    hidden.extend(
        Hidden(text.count("\n", 0, match.start()) + 1, _tags_out(match.group(2)), "css")
        for match in _HIDDEN_TAG.finditer(text)
    )
    return Document(frontmatter, front_lines, tuple(paragraphs), tuple(fences), tuple(hidden), tuple(padded))


def _strip_comments(line: str, number: int, hidden: list[Hidden]) -> str:
    """Take one-line `<!-- ... -->` comments out of a line, keeping the columns."""
    while True:
        start = line.find("<!--")
        end = line.find("-->", start + 4) if start != -1 else -1
        if start == -1 or end == -1:
            return line
        hidden.append(Hidden(number, line[start + 4 : end], "comment"))
        line = line[:start] + " " * (end + 3 - start) + line[end + 3 :]


def _is_comment(line: str) -> bool:
    return bool(re.match(r"^\s*(#|//|--|<!--|/\*|\*)", line))


def _tags_out(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)
