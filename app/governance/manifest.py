"""Skill-level checks: allowed-tools, description against behaviour, undeclared hosts, dependencies (pure)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping

from app.governance import patterns as pat
from app.governance import shell
from app.governance.findings import Collector, Fact, Seen
from app.governance.net import is_placeholder
from app.governance.text import host_of, is_collector, public_ip

_TOOL = re.compile(r"[A-Za-z*][\w*.-]*(?:\([^)]*\))?")
_SHELL_TOOLS = frozenset({"bash", "shell", "terminal", "execute", "exec", "run", "computer", "python", "code",
                          "codeexecution", "code_execution", "powershell", "*", "all"})  # fmt: skip
_WEB_TOOLS = frozenset({"webfetch", "websearch", "fetch", "browser", "http", "web", "internet", "curl"})
_WRITE_TOOLS = frozenset({"write", "edit", "multiedit", "notebookedit", "delete"})
_WEB_WORDS = re.compile(
    r"https?://|\b(web|search|fetch|online|internet|url|http|api|download|browse|website|docs)\b", re.I
)
_WRITE_WORDS = re.compile(
    r"\b(write|edit|create|save|modify|update|generate|output|fix|refactor|change|format|apply|add|inse"
    r"rt|build)\w*",
    re.I,
)
# What a description has to mention, in some form, for a capability the code uses.
DECLARES = {
    Fact.NET_SEND: re.compile(
        r"\b(send|upload|sync|post|api|http|web|cloud|server|remote|network|online|fetch|download|share"
        r"|e-?mail|mail"
        r"|slack|discord|webhook|report|publish|notif|integrat|deploy|submit|telemetry|analytic|monitor"
        r"|backup|service"
        r"|calendar|endpoint|stripe|paypal|github|gitlab|jira|notion|hugging ?face|upload)\w*",
        re.I,
    ),
    Fact.SECRET_ACCESS: re.compile(
        r"\b(credential|secret|key|token|password|auth|ssh|aws|login|config|env|vault|keychain|wallet|c"
        r"ert)\w*",
        re.I,
    ),
    Fact.SENSITIVE: re.compile(
        r"\b(clipboard|screen|screenshot|location|gps|keyboard|camera|microphone|record|capture|geo)\w*", re.I
    ),
}
_GENERIC_LABELS = frozenset({
    "www", "api", "com", "org", "net", "io", "app", "dev", "cloud", "cdn", "raw", "static", "files", "docs",
    "githubusercontent", "amazonaws", "googleapis", "azure", "co", "uk", "www2", "v1", "v2", "data", "apis",
    "services",
})  # fmt: skip


def allowed_tools(
    frontmatter: Mapping[str, object], body: str, has_code: bool, col: Collector, line: int
) -> None:
    """Flag tools the frontmatter grants that nothing in the skill needs, and blanket grants."""
    value = frontmatter.get("allowed-tools", frontmatter.get("allowed_tools"))
    if value is None:
        return
    text = " ".join(str(v) for v in value) if isinstance(value, list) else str(value)
    granted = [t for t in _TOOL.findall(text)]
    unneeded: list[str] = []
    for tool in granted:
        base = tool.split("(", 1)[0].lower()
        restricted = "(" in tool and not re.search(r"\(\s*\*?\s*\)|\(\s*\*\s*:?\s*\*?\s*\)", tool)
        if base in ("*", "all"):
            unneeded.append(tool)
        elif base in _SHELL_TOOLS and not restricted and not has_code:
            unneeded.append(tool)
        elif base in _WEB_TOOLS and not _WEB_WORDS.search(body):
            unneeded.append(tool)
        elif base in _WRITE_TOOLS and not _WRITE_WORDS.search(body):
            unneeded.append(tool)
    if unneeded:
        col.hit("PRIV-ALLOWED-TOOLS", line, f"allowed-tools: {text}", detail=", ".join(unneeded))


def mismatch(description: str, seen: Iterable[Seen], col: Collector) -> None:
    """Flag a capability the code uses that the name and description never hint at."""
    missing: dict[Fact, Seen] = {}
    for fact in seen:
        if fact.block != -1 or fact.fact not in DECLARES:
            continue
        if not DECLARES[fact.fact].search(description) and fact.fact not in missing:
            missing[fact.fact] = fact
    if missing:
        first = min(missing.values(), key=lambda s: (s.file, s.line))
        names = ", ".join(sorted(f.value for f in missing))
        target = Collector(first.file, findings=col.findings, seen=col.seen, hosts=col.hosts)
        target.hit("MIS-CAPABILITY", first.line, first.snippet, detail=names)


def undeclared_hosts(hosts: Iterable[tuple[str, str, int, bool]], prose: str, col: Collector) -> None:
    """Flag hosts code calls that the skill's own words never name (worse when data goes along)."""
    words = prose.lower()
    reported: set[str] = set()
    for file, host, line, sending in hosts:
        if host in reported or is_placeholder(host) or public_ip(host) or is_collector(host):
            continue
        labels = [
            label for label in re.split(r"[.]", host)[:-1] if len(label) >= 4 and label not in _GENERIC_LABELS
        ]
        parts = {p for label in labels for p in re.split(r"[-_]", label) if len(p) >= 4}
        if labels and not any(label in words for label in labels) and not any(p in words for p in parts):
            reported.add(host)
            Collector(file, findings=col.findings, seen=col.seen, hosts=col.hosts).hit(
                "MIS-UNDECLARED-HOST", line, host, detail=host, shift=1 if sending else 0
            )


def requirements(text: str, col: Collector) -> None:
    """A pip requirements file."""
    unpinned: list[str] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-"):
            shell.analyse(f"pip install {line}", col.child(pin_line=number))
            continue
        if re.match(r"^(git\+|https?://)", line) or " @ " in line:
            url = line.split(" @ ", 1)[-1].removeprefix("git+")
            host = host_of(url)
            risky = url.startswith("http://") or public_ip(host) or is_collector(host)
            col.hit("SUP-URL-INSTALL", number, raw, detail=url, shift=2 if risky else 0)
            continue
        name = re.split(r"[=<>!~\[; ]", line, maxsplit=1)[0]
        squat = pat.typosquat_of(name, "pypi")
        if squat:
            col.hit("SUP-TYPOSQUAT", number, raw, detail=f"{name} looks like {squat}")
        if "==" not in line and "===" not in line:
            unpinned.append(name)
    if unpinned:
        col.hit("SUP-UNPINNED", 1, ", ".join(unpinned[:8]))


_HOOKS = ("preinstall", "install", "postinstall", "prepare", "preuninstall", "postuninstall", "prepublish")
_HOOK_RISK = re.compile(
    r"\b(curl|wget|node\s+-e|python3?\s+-c|powershell|bash\s+-c|sh\s+-c|eval|base64)\b|https?://", re.I
)


def package_json(text: str, col: Collector) -> None:
    """An npm package.json: install hooks, typosquats, URL dependencies."""
    try:
        data = json.loads(text)
    except ValueError:
        return
    if not isinstance(data, dict):
        return
    lines = text.split("\n")

    def line_of(key: str) -> int:
        return next((n for n, content in enumerate(lines, 1) if f'"{key}"' in content), 1)

    scripts = data.get("scripts")
    if isinstance(scripts, dict):
        for hook in _HOOKS:
            command = scripts.get(hook)
            if not isinstance(command, str):
                continue
            line = line_of(hook)
            before = len(col.findings)
            shell.analyse(command, col.child(pin_line=line))
            serious = any(f.severity >= 2 for f in col.findings[before:])
            if serious or _HOOK_RISK.search(command):
                col.hit("SUP-INSTALL-HOOK", line, f"{hook}: {command}")
    unpinned: list[str] = []
    for section in ("dependencies", "devDependencies", "optionalDependencies", "peerDependencies"):
        deps = data.get(section)
        if not isinstance(deps, dict):
            continue
        for name, spec in deps.items():
            line = line_of(name)
            squat = pat.typosquat_of(str(name), "npm")
            if squat:
                col.hit("SUP-TYPOSQUAT", line, f"{name}: {spec}", detail=f"{name} looks like {squat}")
            spec_text = str(spec)
            if (
                re.match(r"^(git\+|https?://|git://|github:|file:)", spec_text)
                or "/" in spec_text
                and ":" in spec_text
            ):
                host = host_of(spec_text.removeprefix("git+"))
                risky = spec_text.startswith("http://") or public_ip(host) or is_collector(host)
                col.hit("SUP-URL-INSTALL", line, f"{name}: {spec}", shift=2 if risky else 0)
            elif spec_text in ("*", "latest", "") or spec_text.startswith((">", "^", "~")):
                unpinned.append(str(name))
    if unpinned:
        col.hit("SUP-UNPINNED", 1, ", ".join(unpinned[:8]))


def pyproject(text: str, col: Collector) -> None:
    """A pyproject.toml: typosquats and unpinned dependencies."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return
    project = data.get("project", {})
    deps = list(project.get("dependencies", [])) if isinstance(project, dict) else []
    poetry = data.get("tool", {}).get("poetry", {}).get("dependencies", {})
    if isinstance(poetry, dict):
        deps += [str(k) for k in poetry if k != "python"]
    lines = text.split("\n")
    for dep in deps:
        name = re.split(r"[=<>!~\[; ]", str(dep), maxsplit=1)[0]
        squat = pat.typosquat_of(name, "pypi")
        if squat:
            line = next((n for n, content in enumerate(lines, 1) if name in content), 1)
            col.hit("SUP-TYPOSQUAT", line, str(dep), detail=f"{name} looks like {squat}")


def install_hook(text: str, file_seen: Iterable[Seen], col: Collector) -> None:
    """A setup.py that runs commands or talks to the network while it installs."""
    acts = [s for s in file_seen if s.fact in (Fact.EXEC, Fact.NET_CALL, Fact.NET_SEND)]
    if acts:
        custom = re.search(r"\bcmdclass\b|class\s+\w+\((install|develop|egg_info|build_py)\b", text)
        detail = "a custom install command runs code" if custom else "setup.py runs code at install time"
        col.hit("SUP-INSTALL-HOOK", acts[0].line, acts[0].snippet, detail=detail)
