"""The risk scanner: a skill's files in, a verdict with findings out (pure: no database, nothing run).

`scan_files` takes a mapping of relative path to content, so a zip can be scanned in memory;
`scan_folder` reads a folder into such a mapping. Every file is read as text (or sniffed as
binary), analysed by its kind, checked for invisible Unicode and encoded payloads; then the skill
as a whole: what its frontmatter grants and claims, and facts combined across lines and files
(a credential store read here, data sent out there). The verdict follows `rules.is_malicious`.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from app.governance import code, manifest, markdown, prose, pyast, shell
from app.governance.decode import payloads
from app.governance.dispatch import analyse_guess
from app.governance.findings import Collector, Context, Fact, Finding, Seen
from app.governance.rules import RULESET_VERSION, is_malicious, score, total
from app.governance.text import (
    BIDI,
    URL,
    host_of,
    host_problem,
    invisibles,
    mixed_script_word,
    tag_text,
    urls,
    zero_width_bits,
)

MAX_FILE_BYTES = 1_000_000
MAX_FILES = 400
MAX_TOTAL_BYTES = 8_000_000
SKIP_DIRS = frozenset({".git", "node_modules", "__pycache__", ".venv", "venv", ".mypy_cache", ".ruff_cache"})
SKILL_FILE = "skill.md"
# Facts this close (in lines, in one Markdown block) are one instruction.
WINDOW = 8

_MARKDOWN = frozenset({"md", "markdown", "mdx", "txt", "rst", "html", "htm"})
_PYTHON = frozenset({"py", "pyw", "pyi"})
_SHELL = frozenset({"sh", "bash", "zsh", "ksh", "command", "bats", "fish"})
_JS = frozenset({"js", "mjs", "cjs", "ts", "tsx", "jsx"})
_GENERIC = frozenset(
    {"ps1", "psm1", "bat", "cmd", "rb", "pl", "php", "go", "rs", "java", "lua", "applescript", "vbs"}
)
_DATA = frozenset(
    {"json", "yaml", "yml", "toml", "ini", "cfg", "conf", "xml", "plist", "env", "csv", "properties"}
)
_COMPILED = frozenset(
    {"pyc", "pyo", "so", "dylib", "dll", "exe", "bin", "class", "jar", "o", "elf", "msi", "scr"}
)
_INERT = frozenset({
    "png", "jpg", "jpeg", "gif", "bmp", "ico", "webp", "pdf", "svg", "txt", "md", "csv", "json", "mp3", "wav",
    "mp4", "ttf", "woff", "woff2", "docx", "xlsx", "pptx",
})  # fmt: skip
_MAGIC = ((b"\x7fELF", "ELF"), (b"MZ", "PE"), (b"\xcf\xfa\xed\xfe", "Mach-O"), (b"\xfe\xed\xfa", "Mach-O"),
          (b"\xca\xfe\xba\xbe", "Mach-O/Java"), (b"\xce\xfa\xed\xfe", "Mach-O"))  # fmt: skip
_BIDI = re.compile("[" + "".join(sorted(BIDI)) + "]")
_SHEBANG = re.compile(rb"^#!\s*\S*?(python|bash|sh|zsh|node|perl|ruby|env\s+\w+)")


@dataclass(frozen=True)
class Verdict:
    """The scanner's answer for one skill."""

    skill: str
    malicious: bool
    score: float
    weight: int
    findings: tuple[Finding, ...]
    files: int
    ruleset: str = RULESET_VERSION

    def as_dict(self, *, by_file: bool = False) -> dict[str, object]:
        """The wire form: one line of `skillfoundry scan --jsonl`."""
        out: dict[str, object] = {
            "skill": self.skill,
            "malicious": self.malicious,
            "score": self.score,
            "weight": self.weight,
            "ruleset": self.ruleset,
            "files": self.files,
            "findings": [f.as_dict() for f in self.findings],
        }
        if by_file:
            grouped: dict[str, list[dict[str, object]]] = {}
            for finding in self.findings:
                grouped.setdefault(finding.file, []).append(finding.as_dict())
            out["by_file"] = grouped
        return out


def find_skills(root: Path) -> list[Path]:
    """Every folder under `root` holding a SKILL.md (outermost only), or `root` itself if it is one."""
    if _skill_file(root) is not None:
        return [root]
    found: list[Path] = []
    for current, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if any(f.lower() == SKILL_FILE for f in files):
            found.append(Path(current))
            dirs[:] = []
    return sorted(found)


def _skill_file(folder: Path) -> Path | None:
    try:
        return next((p for p in folder.iterdir() if p.is_file() and p.name.lower() == SKILL_FILE), None)
    except OSError:
        return None


def read_folder(path: Path) -> dict[str, bytes]:
    """The files of a skill folder, relative paths to bytes, within the size limits."""
    files: dict[str, bytes] = {}
    budget = MAX_TOTAL_BYTES
    for current, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in sorted(names):
            full = Path(current) / name
            if full.is_symlink() or not full.is_file() or len(files) >= MAX_FILES:
                continue
            with full.open("rb") as handle:
                data = handle.read(min(MAX_FILE_BYTES, budget))
            budget -= len(data)
            files[full.relative_to(path).as_posix()] = data
            if budget <= 0:
                return files
    return files


def scan_folder(path: Path | str, *, skill: str | None = None) -> Verdict:
    """Scan a skill folder on disk."""
    folder = Path(path)
    return scan_files(read_folder(folder), skill=folder.name if skill is None else skill)


def scan_files(files: Mapping[str, str | bytes], *, skill: str = "") -> Verdict:
    """Scan a skill given as relative path -> content (str or bytes), e.g. the members of a zip."""
    root = Collector(file="")
    texts: dict[str, str] = {}
    docs: dict[str, markdown.Document] = {}
    for name in sorted(files)[:MAX_FILES]:
        path = posixpath.normpath(name.replace("\\", "/")).lstrip("./") or name
        content = files[name]
        data = content.encode("utf-8", errors="surrogatepass") if isinstance(content, str) else content
        text = _analyse_file(path, data[:MAX_FILE_BYTES], root, docs)
        if text is not None:
            texts[path] = text
    _skill_level(texts, docs, root)
    findings = _dedupe(root.findings)
    weight = total((f.rule_id, f.severity) for f in findings)
    return Verdict(
        skill=skill,
        malicious=is_malicious(weight),
        score=score(weight),
        weight=weight,
        findings=tuple(findings),
        files=len(files),
    )


def _collector(root: Collector, path: str) -> Collector:
    return Collector(file=path, findings=root.findings, seen=root.seen, hosts=root.hosts)


def _decode_text(data: bytes) -> str | None:
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("latin-1")
        printable = sum(1 for c in text[:4096] if c.isprintable() or c in "\r\n\t")
        return text if printable / max(1, min(len(text), 4096)) > 0.95 else None


def _extension(path: str) -> str:
    name = posixpath.basename(path).lower()
    return name.rsplit(".", 1)[-1] if "." in name else ""


def _analyse_file(path: str, data: bytes, root: Collector, docs: dict[str, markdown.Document]) -> str | None:
    """Analyse one file by kind; returns its text (None for binary files); Markdown goes into `docs`."""
    col = _collector(root, path)
    ext = _extension(path)
    name = posixpath.basename(path).lower()
    magic = next((kind for prefix, kind in _MAGIC if data.startswith(prefix)), None)
    if ext in _COMPILED or magic:
        if magic and ext in _INERT:
            col.hit(
                "OBF-MASQUERADE",
                1,
                f"{path} is a {magic} executable",
                detail=f".{ext} file holds {magic} code",
            )
        else:
            col.hit("OBF-COMPILED", 1, path, detail=magic or ext)
        return None
    text = _decode_text(data)
    if text is None:
        return None
    kind = _kind(ext, name, data, text)
    if ext in _INERT and kind in ("python", "shell", "javascript"):
        col.hit("OBF-MASQUERADE", 1, text.split("\n", 1)[0], detail=f".{ext} file holds {kind} code")
    if kind == "markdown":
        doc = docs[path] = markdown.parse(text)
        prose.analyse_markdown(doc, col)
    elif kind == "python":
        pyast.analyse(text, col)
        if name == "setup.py":
            manifest.install_hook(text, [s for s in root.seen if s.file == path], col)
    elif kind == "shell":
        shell.analyse(text, col)
    elif kind in ("javascript", "generic"):
        code.analyse(text, col)
    elif kind == "requirements":
        manifest.requirements(text, col)
    elif kind == "package":
        manifest.package_json(text, col)
        code.analyse_data(text, col)
    elif kind == "pyproject":
        manifest.pyproject(text, col)
    else:
        code.analyse_data(text, col)
    _unicode(text, col)
    if kind not in ("python",):
        _payloads(text, col)
    return text


def _kind(ext: str, name: str, data: bytes, text: str) -> str:
    if name == "package.json":
        return "package"
    if name == "pyproject.toml":
        return "pyproject"
    if re.match(r"(requirements|constraints)[\w.-]*\.(txt|in)$", name):
        return "requirements"
    shebang = _SHEBANG.match(data)
    if shebang:
        interpreter = shebang.group(1).decode()
        if "python" in interpreter:
            return "python"
        if "node" in interpreter:
            return "javascript"
        if interpreter in ("bash", "sh", "zsh") or interpreter.startswith("env"):
            return "shell" if "python" not in text.split("\n", 1)[0] else "python"
        return "generic"
    if ext in _PYTHON:
        return "python"
    if ext in _SHELL:
        return "shell"
    if ext in _JS:
        return "javascript"
    if ext in _GENERIC:
        return "generic"
    if ext in _MARKDOWN or not ext:
        if ext in _INERT or not ext:
            from app.governance.dispatch import looks_like_python

            if looks_like_python(text) and not text.lstrip().startswith(("#", "---")):
                return "python"
        return "markdown"
    if ext in _DATA:
        return "data"
    if ext in _INERT:
        return "markdown"
    return "data"


def _unicode(text: str, col: Collector) -> None:
    """Invisible characters, Unicode tag smuggling, look-alike letters."""
    if text.isascii():
        return
    tag_reported = zero_reported = mixed_reported = False
    for number, line in enumerate(text.split("\n"), 1):
        if line.isascii():
            continue
        hidden = tag_text(line)
        if hidden.strip():
            if not tag_reported:
                col.hit("HID-UNICODE-TAG", number, hidden, detail=f"{len(hidden)} hidden characters")
                tag_reported = True
            analyse_guess(hidden, col.child(context=Context.HIDDEN, pin_line=number))
        found = invisibles(line)
        if found is not None:
            if found.bidi:
                col.hit("HID-BIDI", number, line, detail=f"{found.bidi} control characters")
            if (found.zero_width_in_word or found.zero_width_run >= 4) and not zero_reported:
                zero_reported = True
                col.hit("HID-ZERO-WIDTH", number, line, shift=1 if found.zero_width_run >= 16 else 0)
        for url, _ in urls(line):
            # Look-alike letters in a host are judged on the text as written, before code is folded.
            host = host_of(url)
            problem = host_problem(host)
            if problem is not None:
                rule_id = "HID-HOMOGLYPH-DOMAIN" if problem == "homoglyph" else "HID-PUNYCODE"
                col.hit(rule_id, number, line, detail=host)
        bits = zero_width_bits(line)
        if bits:
            analyse_guess(bits, col.child(context=Context.HIDDEN, pin_line=number))
        if not mixed_reported:
            word = mixed_script_word(line)
            if word:
                mixed_reported = True
                col.hit("HID-MIXED-SCRIPT", number, line, detail=word)
    if _BIDI.search(text) and not any(f.rule_id == "HID-BIDI" for f in col.findings if f.file == col.file):
        col.hit("HID-BIDI", 1, "bidirectional control characters")


def _payloads(text: str, col: Collector) -> None:
    """Encoded payloads anywhere in the text, decoded and analysed again."""
    for payload in payloads(text):
        line = text.count("\n", 0, payload.start) + 1
        analyse_guess(payload.text, col.child(context=Context.DECODED, pin_line=line))


def _skill_level(texts: Mapping[str, str], docs: Mapping[str, markdown.Document], root: Collector) -> None:
    """Frontmatter, description against behaviour, undeclared hosts, and facts combined."""
    skill_path = min((p for p in texts if posixpath.basename(p).lower() == SKILL_FILE), key=len, default=None)
    description = ""
    prose_words: list[str] = []
    for path, doc in docs.items():
        if _extension(path) in ("md", "markdown", "mdx", "txt"):
            for paragraph in doc.paragraphs:
                prose_words.extend(URL.sub(" ", line) for _, line in paragraph.lines)
            prose_words.extend(line for _, line in doc.frontmatter_lines)
    if skill_path is not None:
        doc = docs.get(skill_path) or markdown.parse(texts[skill_path])
        front = doc.frontmatter or {}
        description = f"{front.get('name', '')} {front.get('description', '')}"
        col = _collector(root, skill_path)
        if doc.frontmatter_lines:
            prose.analyse_text("\n".join(line for _, line in doc.frontmatter_lines), col.child(line_offset=2))
        has_code = (
            any(_extension(p) not in _MARKDOWN | _DATA | _INERT for p in texts)
            or bool(doc.fences)
            or bool(
                re.search(r"`(?:sudo\s+)?(?:python3?|bash|sh|node|npm|pip|git|curl)\s", texts[skill_path])
            )
        )
        tools_line = next((n for n, line in doc.frontmatter_lines if line.lower().startswith("allowed")), 1)
        manifest.allowed_tools(front, texts[skill_path], has_code, col, tools_line)
    manifest.mismatch(description, [s for s in root.seen], root)
    hosts = [(f.file, h, f.line, sending) for f, h, sending in _host_files(root)]
    manifest.undeclared_hosts(hosts, " ".join(prose_words) + " " + description, root)
    _combine(root.seen, root)


def _host_files(root: Collector) -> Iterable[tuple[Seen, str, bool]]:
    calls = [s for s in root.seen if s.fact is Fact.NET_CALL]
    for host, line, sending in root.hosts:
        match = next((s for s in calls if s.line == line and host in s.snippet.lower()), None)
        if match is not None:
            yield match, host, sending


def _combine(seen: list[Seen], root: Collector) -> None:
    """Facts that are harmless alone and an attack together."""
    by_file: dict[str, list[Seen]] = {}
    for fact in seen:
        by_file.setdefault(fact.file, []).append(fact)
    code_facts: dict[str, set[Fact]] = {}
    for path, facts in by_file.items():
        col = _collector(root, path)
        whole = [f for f in facts if f.block == -1]
        kinds = {f.fact for f in whole}
        code_facts[path] = kinds
        sends = [f for f in whole if f.fact is Fact.NET_SEND]
        if sends and kinds & {Fact.SECRET_ACCESS, Fact.ENV_HARVEST}:
            col.hit(
                "EXF-SECRET-SEND",
                sends[0].line,
                sends[0].snippet,
                detail="reads credentials and sends data out",
            )
        if sends and Fact.SENSITIVE in kinds:
            col.hit("EXF-COLLECT-SEND", sends[0].line, sends[0].snippet)
        _combine_blocks([f for f in facts if f.block != -1], col)
    senders = [p for p, kinds in code_facts.items() if Fact.NET_SEND in kinds]
    readers = [p for p, kinds in code_facts.items() if kinds & {Fact.SECRET_ACCESS, Fact.ENV_HARVEST}]
    if senders and readers and set(senders) != set(readers):
        col = _collector(root, senders[0])
        first = next(f for f in by_file[senders[0]] if f.fact is Fact.NET_SEND and f.block == -1)
        col.hit(
            "EXF-SECRET-SEND", first.line, first.snippet, detail=f"credentials read in {readers[0]}", shift=-1
        )
    collectors = [p for p, kinds in code_facts.items() if Fact.SENSITIVE in kinds]
    if senders and collectors and set(senders) != set(collectors):
        col = _collector(root, senders[0])
        first = next(f for f in by_file[senders[0]] if f.fact is Fact.NET_SEND and f.block == -1)
        col.hit(
            "EXF-COLLECT-SEND",
            first.line,
            first.snippet,
            detail=f"data captured in {collectors[0]}",
            shift=-1,
        )


_PAIRS = (
    (Fact.SECRET_ACCESS, "EXF-SECRET-SEND", -1),
    (Fact.ENV_HARVEST, "EXF-SECRET-SEND", -1),
    (Fact.SENSITIVE, "EXF-COLLECT-SEND", 0),
    (Fact.CONTEXT, "EXF-CONTEXT-SEND", 0),
    (Fact.STANDING, "EXF-STANDING-SEND", 0),
)


def _combine_blocks(facts: list[Seen], col: Collector) -> None:
    """Within one Markdown block: something named and something sent, a few lines apart."""
    sends = [f for f in facts if f.fact is Fact.NET_SEND]
    for kind, rule_id, shift in _PAIRS:
        for fact in (f for f in facts if f.fact is kind):
            partner = next(
                (s for s in sends if s.block == fact.block and abs(s.line - fact.line) <= WINDOW), None
            )
            if partner is not None:
                col.hit(rule_id, partner.line, partner.snippet, shift=shift)
                break
    runs = [f for f in facts if f.fact is Fact.EXEC]
    for fact in (f for f in facts if f.fact is Fact.STANDING):
        if any(r.block == fact.block and abs(r.line - fact.line) <= WINDOW for r in runs):
            col.hit("RCE-RUN-BUNDLED-HIDDEN", fact.line, fact.snippet)
            break


def _dedupe(findings: list[Finding]) -> list[Finding]:
    """One finding per rule, file and line: the most severe."""
    best: dict[tuple[str, str, int], Finding] = {}
    for finding in findings:
        key = (finding.rule_id, finding.file, finding.line)
        if key not in best or finding.severity > best[key].severity:
            best[key] = finding
    order = sorted(best.values(), key=lambda f: (-int(f.severity), f.file, f.line, f.rule_id))
    return order
