"""The SKILL.md format (Agent Skills spec): render, parse, validate, diff and patch by section.

Pure: no database, no model. A skill is a frozen `SkillDocument`; its SKILL.md text is
`render(doc)`. Our own fields go under the spec's `metadata` mapping, values as strings.

The frontmatter is written by hand rather than by `yaml.dump`: the reference validator reads it with
strictyaml, which refuses flow style, and splits the file on the first two `---` it finds, so a
value may never contain `---`. Each value is a plain scalar when that is unambiguous and a
double-quoted one otherwise, with every `-` of a `---` run written as `\\x2D`.

`parse(render(doc)) == doc` holds when section bodies have no leading blank lines, no trailing
whitespace and no `## ` heading line outside a code fence, and a section titled "" comes first.
"""

from __future__ import annotations

import difflib
import enum
import hashlib
import json
import math
import posixpath
import re
import unicodedata
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import yaml
from skills_ref.errors import ParseError as _ReferenceParseError  # type: ignore[import-untyped]
from skills_ref.parser import parse_frontmatter as _reference_parse  # type: ignore[import-untyped]
from skills_ref.validator import validate_metadata as _reference_validate  # type: ignore[import-untyped]

# Section titles every generated skill uses, in this order.
WHEN_TO_USE = "When to use"
PROCEDURE = "Procedure"
PITFALLS = "Pitfalls"
EVIDENCE = "Evidence"
SECTION_ORDER = (WHEN_TO_USE, PROCEDURE, PITFALLS, EVIDENCE)

# Agents load the whole body into context; the spec advises keeping it under ~5000 tokens.
MAX_BODY_TOKENS = 5000
SKILL_FILE = "SKILL.md"
FALLBACK_NAME = "skill"

# Frontmatter fields the spec knows, in the order we write them (metadata comes last).
SPEC_FIELDS = ("name", "description", "license", "compatibility", "allowed-tools", "metadata")


class SkillFormatError(ValueError):
    """A SKILL.md text or a skill folder that cannot be read or written as asked."""


class PatchError(ValueError):
    """A section patch that cannot apply to the document it was given."""


@dataclass(frozen=True)
class Section:
    """One `## title` block of the body."""

    title: str
    body: str


@dataclass(frozen=True)
class SkillDocument:
    """A parsed or generated SKILL.md: frontmatter fields and body sections."""

    name: str
    description: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    sections: tuple[Section, ...] = ()
    title: str = ""  # the `# Title` line; defaults to the name
    license: str = ""
    compatibility: str = ""
    allowed_tools: str = ""  # the spec's `allowed-tools`: space-separated tool names
    # Frontmatter fields outside the spec, kept so a hand-written file survives a round trip;
    # the reference validator (and so `validate`) reports them.
    extra: Mapping[str, str] = field(default_factory=dict)

    def section(self, title: str) -> Section | None:
        """The first section with this title (case-insensitive), if any."""
        index = _find(self.sections, title)
        return None if index is None else self.sections[index]


class PatchOp(enum.StrEnum):
    """What a `SectionPatch` does to its section (or, for DESCRIPTION, to the description)."""

    REPLACE = "replace"
    APPEND = "append"
    ADD = "add"
    DELETE = "delete"
    DESCRIPTION = "description"


@dataclass(frozen=True)
class SectionPatch:
    """One edit of a skill, by section; `DESCRIPTION` ignores the title."""

    op: PatchOp
    title: str
    body: str = ""
    reason: str = ""


def slugify(text: str, *, max_len: int = 64) -> str:
    """A valid skill name from free text: lowercase ASCII, digits and single hyphens."""
    # NFKD then ASCII keeps "Café" as "cafe" instead of dropping the letter.
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    limit = max(max_len, 1)
    if len(slug) > limit:
        cut = slug[: limit + 1]
        # Cut at the last hyphen that keeps the name within the limit, so no word is halved.
        slug = cut[: cut.rfind("-")] if "-" in cut[1:] else slug[:limit]
        slug = slug.strip("-")
    return slug or FALLBACK_NAME[:limit]


_PLAIN_VALUE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.,;()/+'-]*")
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _yaml_printable(char: str) -> bool:
    code = ord(char)
    # YAML's printable set, less NEL/LS/PS/BOM, which PyYAML reads as line breaks or markers.
    return (
        0x20 <= code <= 0x7E
        or (0xA0 <= code <= 0xD7FF and code not in (0x2028, 0x2029))
        or (0xE000 <= code <= 0xFFFD and code != 0xFEFF)
        or 0x10000 <= code <= 0x10FFFF
    )


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    if _yaml_printable(char):
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02X}"
    if code <= 0xFFFF:
        return f"\\u{code:04X}"
    return f"\\U{code:08X}"


def _quote(text: str) -> str:
    body = "".join(_escape(char) for char in text)
    body = re.sub(r"-{3,}", lambda run: "\\x2D" * len(run.group()), body)
    return f'"{body}"'


def _scalar(value: object, *, key: bool = False) -> str:
    text = str(value)
    pattern = _PLAIN_KEY if key else _PLAIN_VALUE
    if pattern.fullmatch(text) and not text.endswith(" ") and "---" not in text:
        return text
    return _quote(text)


def _frontmatter(doc: SkillDocument) -> str:
    lines = [f"name: {_scalar(doc.name)}", f"description: {_scalar(doc.description)}"]
    for key, value in (
        ("license", doc.license),
        ("compatibility", doc.compatibility),
        ("allowed-tools", doc.allowed_tools),
    ):
        if value:
            lines.append(f"{key}: {_scalar(value)}")
    lines.extend(f"{_scalar(key, key=True)}: {_scalar(value)}" for key, value in _sorted(doc.extra))
    if doc.metadata:
        lines.append("metadata:")
        lines.extend(f"  {_scalar(key, key=True)}: {_scalar(value)}" for key, value in _sorted(doc.metadata))
    return "\n".join(lines) + "\n"


def _sorted(mapping: Mapping[str, object]) -> list[tuple[str, object]]:
    return sorted(((str(key), value) for key, value in mapping.items()), key=lambda item: item[0])


def _clean_body(body: str) -> str:
    lines = body.split("\n")
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines).rstrip()


def render_body(doc: SkillDocument) -> str:
    """The markdown after the frontmatter: the `# title` line and the sections."""
    blocks = [f"# {doc.title or doc.name}"]
    for position, section in enumerate(doc.sections):
        body = _clean_body(section.body)
        # A leading untitled section is the text under the title; anywhere else it needs a heading.
        if position == 0 and not section.title:
            if body:
                blocks.append(body)
            continue
        heading = f"## {section.title}".rstrip()
        blocks.append(f"{heading}\n\n{body}" if body else heading)
    return "\n\n".join(blocks) + "\n"


def render(doc: SkillDocument) -> str:
    """The SKILL.md text of a document: frontmatter, `# title`, then `## section` blocks."""
    return f"---\n{_frontmatter(doc)}---\n\n{render_body(doc)}"


_FRONTMATTER = re.compile(r"\A---[ \t]*\n(?P<yaml>.*?)^---[ \t]*(?:\n|\Z)", re.DOTALL | re.MULTILINE)
_TITLE = re.compile(r"#[ \t]+(?P<title>.*?)[ \t]*")
_SECTION = re.compile(r"##(?:[ \t]+(?P<title>.*?))?[ \t]*")
_FENCE = re.compile(r" {0,3}(?P<fence>`{3,}|~{3,})")


def _as_text(value: object) -> str:
    # Hand-written files put lists or mappings where the spec wants strings; keep them readably.
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(_as_text(item) for item in value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _load_frontmatter(text: str) -> tuple[dict[str, object], str]:
    match = _FRONTMATTER.match(text)
    if match is None:
        if not re.match(r"---[ \t]*\n", text):
            raise SkillFormatError("SKILL.md must start with a '---' line that opens the YAML frontmatter")
        raise SkillFormatError("SKILL.md frontmatter is not closed by a '---' line")
    try:
        # BaseLoader keeps every scalar a string ("1.0", "yes", "null"), as strictyaml does,
        # but also reads the flow style hand-written files use. It builds only str, list and dict,
        # so it is as safe as SafeLoader, whatever S506 assumes.
        data = yaml.load(match.group("yaml"), Loader=yaml.BaseLoader)  # noqa: S506
    except yaml.YAMLError as exc:
        raise SkillFormatError(f"SKILL.md frontmatter is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise SkillFormatError("SKILL.md frontmatter must be a YAML mapping of fields")
    return data, text[match.end() :]


def _required(data: Mapping[str, object], key: str) -> str:
    if key not in data:
        raise SkillFormatError(f"SKILL.md frontmatter has no '{key}' field")
    value = data[key]
    if not isinstance(value, str):
        raise SkillFormatError(f"SKILL.md frontmatter field '{key}' must be a string")
    return value


def _fence_lines(lines: Iterable[str]) -> Iterable[tuple[str, bool]]:
    """Each line with whether it lies inside (or opens or closes) a fenced code block."""
    fence = ""
    for line in lines:
        match = _FENCE.match(line)
        if fence:
            if match and match.group("fence")[0] == fence[0] and len(match.group("fence")) >= len(fence):
                if not line.strip().lstrip(fence[0]):
                    fence = ""
            yield line, True
        elif match:
            fence = match.group("fence")
            yield line, True
        else:
            yield line, False


def _has_heading(body: str) -> bool:
    return any(not fenced and _SECTION.fullmatch(line) for line, fenced in _fence_lines(body.split("\n")))


def parse(text: str) -> SkillDocument:
    """A document from SKILL.md text; any `## ` heading starts a section."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    data, body = _load_frontmatter(text)
    name = _required(data, "name")
    description = _required(data, "description")
    raw_metadata = data.get("metadata") or {}
    if not isinstance(raw_metadata, dict):
        raise SkillFormatError("SKILL.md frontmatter field 'metadata' must be a mapping")

    lines = body.split("\n")
    title = ""
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is not None and (match := _TITLE.fullmatch(lines[first])):
        title = match.group("title")
        del lines[first]

    sections: list[Section] = []
    current_title: str | None = None
    current: list[str] = []
    for line, fenced in _fence_lines(lines):
        heading = None if fenced else _SECTION.fullmatch(line)
        if heading is None:
            current.append(line)
            continue
        if current_title is not None or _clean_body("\n".join(current)):
            sections.append(Section(title=current_title or "", body=_clean_body("\n".join(current))))
        current_title, current = (heading.group("title") or "").strip(), []
    if current_title is not None or _clean_body("\n".join(current)):
        sections.append(Section(title=current_title or "", body=_clean_body("\n".join(current))))

    return SkillDocument(
        name=name,
        description=description,
        metadata={str(key): _as_text(value) for key, value in raw_metadata.items()},
        sections=tuple(sections),
        # render() writes the name when there is no title; reading it back means "no title".
        title="" if title == name else title,
        license=_as_text(data.get("license")),
        compatibility=_as_text(data.get("compatibility")),
        allowed_tools=_allowed_tools(data.get("allowed-tools")),
        extra={str(key): _as_text(value) for key, value in data.items() if key not in SPEC_FIELDS},
    )


def _allowed_tools(value: object) -> str:
    if isinstance(value, list):
        return " ".join(_as_text(item) for item in value)
    return _as_text(value)


def estimate_tokens(text: str) -> int:
    """Tokens in a text, roughly: the larger of 4/3 per word and 1 per 4 characters, rounded up."""
    # Prose runs ~0.75 words per token; code and identifiers ~4 characters per token.
    return max(math.ceil(len(text.split()) * 4 / 3), math.ceil(len(text) / 4))


_INLINE_LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*(?P<target><[^>\n]*>|[^)\s]+)(?:\s+[\"'(][^\n]*?)?\s*\)")
_REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]\n]+\]:\s*(?P<target><[^>\n]*>|\S+)", re.MULTILINE)
_CODE_SPAN = re.compile(r"(`+)(?!`).*?(?<!`)\1(?!`)", re.DOTALL)
_SIBLING_SKILL = re.compile(r"\.\./(?P<name>[^/]+)/SKILL\.md")
_FINE_SCHEMES = frozenset({"http", "https", "mailto"})


def _link_targets(body: str) -> list[str]:
    # Code shows link syntax without meaning a link: `a[0](b)` in a fence is not a reference.
    prose = "\n".join(line for line, fenced in _fence_lines(body.split("\n")) if not fenced)
    prose = _CODE_SPAN.sub("", prose)
    found = [match.group("target") for match in _INLINE_LINK.finditer(prose)]
    found += [match.group("target") for match in _REFERENCE_LINK.finditer(prose)]
    return [target.removeprefix("<").removesuffix(">").strip() for target in found]


def _link_problem(target: str, files: Mapping[str, str], known_skills: Collection[str] | None) -> str | None:
    parts = urlsplit(target)
    if parts.scheme:
        # "C:/x" parses as scheme "c"; either way only web and mail links leave the folder.
        return None if parts.scheme.lower() in _FINE_SCHEMES else f"link '{target}' is not a web link"
    path = unquote(parts.path)
    if not path:
        return None  # an anchor (#section) or a query on this page
    if path.startswith("/"):
        return f"link '{target}' is absolute; link relative to the skill folder"
    normal = posixpath.normpath(path)
    if sibling := _SIBLING_SKILL.fullmatch(normal):
        if known_skills is not None and sibling.group("name") not in known_skills:
            return f"link '{target}' names unknown skill '{sibling.group('name')}'"
        return None
    if normal == ".." or normal.startswith("../"):
        return f"link '{target}' leaves the skill folder (only ../<skill>/SKILL.md may)"
    if normal in (".", SKILL_FILE):
        return None
    known = {posixpath.normpath(key) for key in files}
    if normal in known or any(key.startswith(normal + "/") for key in known):
        return None
    return f"link '{target}' points to '{normal}', which is not a file of the skill"


def validate(
    doc: SkillDocument,
    *,
    files: Mapping[str, str] | None = None,
    known_skills: Collection[str] | None = None,
) -> list[str]:
    """Every problem of a document, readable; empty when the skill is valid and its links resolve."""
    problems: list[str] = []
    text = render(doc)
    try:
        # Check exactly what the reference reads from our text, not what we meant to write.
        metadata, _ = _reference_parse(text)
    except _ReferenceParseError as exc:
        problems.append(str(exc))
    else:
        problems.extend(str(problem) for problem in _reference_validate(metadata, None))

    for key, value in doc.metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            problems.append(f"metadata '{key}' must map a string to a string, not {type(value).__name__}")

    for section in doc.sections:
        if "\n" in section.title:
            problems.append(f"section title {section.title!r} spans several lines")
        if _has_heading(section.body):
            problems.append(f"section '{section.title}' holds a '## ' heading, which would split it")

    body = render_body(doc)
    tokens = estimate_tokens(body)
    if tokens > MAX_BODY_TOKENS:
        problems.append(f"body is about {tokens} tokens; keep it within {MAX_BODY_TOKENS}")

    seen: set[str] = set()
    for target in _link_targets(body):
        problem = _link_problem(target, files or {}, known_skills)
        if problem and problem not in seen:
            seen.add(problem)
            problems.append(problem)
    return problems


def _frame(data: str) -> bytes:
    raw = data.encode("utf-8", "surrogatepass")
    return len(raw).to_bytes(8, "big") + raw


def content_hash(content: str, files: Mapping[str, str] | None = None) -> str:
    """SHA-256 hex of a SKILL.md and its files, each framed by its length so none can pose as another."""
    digest = hashlib.sha256(_frame(content))
    for path, data in sorted((files or {}).items()):
        digest.update(_frame(path))
        digest.update(_frame(data))
    return digest.hexdigest()


def unified_diff(old: str, new: str, *, old_label: str = "a/SKILL.md", new_label: str = "b/SKILL.md") -> str:
    """A unified diff of two texts; empty when they are equal."""
    if old == new:
        return ""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), fromfile=old_label, tofile=new_label
    )
    # As git does, so that a missing final newline shows and the diff still applies.
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


def _key(title: str) -> str:
    return " ".join(title.split()).casefold()


def _find(sections: Iterable[Section], title: str) -> int | None:
    key = _key(title)
    return next((i for i, section in enumerate(sections) if _key(section.title) == key), None)


def _rank(title: str) -> int | None:
    if not title.strip():
        return -1  # the untitled text under the title comes first
    canonical = [_key(known) for known in SECTION_ORDER]
    key = _key(title)
    return canonical.index(key) if key in canonical else None


def _canonical_title(title: str) -> str:
    rank = _rank(title)
    return SECTION_ORDER[rank] if rank is not None and rank >= 0 else title.strip()


def _insert(sections: list[Section], section: Section) -> None:
    """Put a new section before the first canonical section that SECTION_ORDER places after it."""
    rank = _rank(section.title)
    if rank is not None:
        for index, existing in enumerate(sections):
            other = _rank(existing.title)
            if other is not None and other > rank:
                sections.insert(index, section)
                return
    sections.append(section)


def _apply(doc: SkillDocument, patch: SectionPatch) -> SkillDocument:
    body = _clean_body(patch.body)
    if patch.op is PatchOp.DESCRIPTION:
        description = " ".join(patch.body.split())
        if not description:
            raise PatchError("the new description is empty")
        return replace(doc, description=description)

    if "\n" in patch.title:
        raise PatchError(f"section title {patch.title!r} spans several lines")
    if patch.op is not PatchOp.DELETE and _has_heading(body):
        raise PatchError("the body holds a '## ' heading; patch each section separately")
    sections = list(doc.sections)
    index = _find(sections, patch.title)

    if patch.op is PatchOp.REPLACE:
        if index is None:
            raise PatchError(f"cannot replace section '{patch.title}': there is no such section")
        sections[index] = replace(sections[index], body=body)
    elif patch.op is PatchOp.APPEND:
        if not body:
            raise PatchError(f"nothing to append to section '{patch.title}'")
        if index is None:
            _insert(sections, Section(title=_canonical_title(patch.title), body=body))
        else:
            old = sections[index].body
            sections[index] = replace(sections[index], body=f"{old}\n{body}" if old.strip() else body)
    elif patch.op is PatchOp.ADD:
        if index is not None:
            raise PatchError(f"cannot add section '{patch.title}': it already exists")
        _insert(sections, Section(title=_canonical_title(patch.title), body=body))
    elif patch.op is PatchOp.DELETE:
        if index is None:
            raise PatchError(f"cannot delete section '{patch.title}': there is no such section")
        del sections[index]
    else:  # pragma: no cover - every PatchOp is handled above
        raise PatchError(f"unknown patch op {patch.op!r}")
    return replace(doc, sections=tuple(sections))


def apply_patches(doc: SkillDocument, patches: Iterable[SectionPatch]) -> SkillDocument:
    """The document after applying patches in order; the first impossible one raises `PatchError`."""
    for number, patch in enumerate(patches, start=1):
        try:
            doc = _apply(doc, patch)
        except PatchError as exc:
            why = f" (its reason: {patch.reason})" if patch.reason else ""
            raise PatchError(f"patch {number} ({patch.op.value} '{patch.title}'): {exc}{why}") from exc
    return doc


def _content_lines(doc: SkillDocument) -> list[str]:
    # A line moved to another section is a change, so each line carries its section; headings and
    # blank lines would match between any two skills and hide a total rewrite.
    return [
        f"{_key(section.title)}\x00{line.rstrip()}"
        for section in doc.sections
        for line in section.body.split("\n")
        if line.strip()
    ]


def changed_share(old: SkillDocument, new: SkillDocument) -> float:
    """Share (0..1) of body lines changed: 1 - SequenceMatcher ratio over non-blank section lines."""
    before, after = _content_lines(old), _content_lines(new)
    if not before and not after:
        return 0.0
    return 1.0 - difflib.SequenceMatcher(None, before, after, autojunk=False).ratio()


def _safe_relative(path: str) -> PurePosixPath:
    if not path or "\\" in path or "\x00" in path:
        raise SkillFormatError(f"file path {path!r} is not a plain relative path")
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts or re.match(r"[A-Za-z]:", path):
        raise SkillFormatError(f"file path {path!r} escapes the skill folder")
    if pure == PurePosixPath(SKILL_FILE):
        raise SkillFormatError(f"file path {path!r} would overwrite the rendered SKILL.md")
    return pure


def write_folder(root: Path, doc: SkillDocument, files: Mapping[str, str] | None = None) -> Path:
    """Write `root/<name>/SKILL.md` and the skill's files; returns the skill folder."""
    name = doc.name
    if not name or name in (".", "..") or any(char in name for char in "/\\\x00"):
        raise SkillFormatError(f"skill name {name!r} cannot be a folder name")
    # Check every path before writing anything, so a bad one leaves no half-written folder.
    relative = {path: _safe_relative(path) for path in files or {}}
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SKILL_FILE).write_text(render(doc), encoding="utf-8", newline="")
    for path, data in (files or {}).items():
        target = folder.joinpath(*relative[path].parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data, encoding="utf-8", newline="")
    return folder
