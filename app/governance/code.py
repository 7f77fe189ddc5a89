"""Rules for JavaScript, PowerShell and other code without a parser here: patterns on lines (pure).

Command strings handed to a process API are cut out and analysed by the shell analyser; string
literals are checked for odd hosts and encoded payloads. Data files (JSON, YAML) go through
`analyse_data`, which also looks for code smuggled into a value.
"""

from __future__ import annotations

import bisect
import re

from app.governance import patterns as pat
from app.governance.decode import payloads
from app.governance.findings import Collector, Context, Fact
from app.governance.net import check_url, classify_url
from app.governance.text import URL, fold_code

_STRING = re.compile(r"""(['"`])((?:\\.|(?!\1)[^\\\n]){3,})\1""")
_PROCESS = re.compile(
    r"\b(exec|execSync|spawn|spawnSync|execFile|execFileSync|system|shell_exec|passthru|popen|proc_open"
    r"|Start-Process|Invoke-Expression|iex|Runtime\.getRuntime\(\)\.exec|Process\.Start|exec\.Command)"
    r"\s*\(\s*(['\"`])((?:\\.|(?!\2).)*)\2",
)
_SHELL_C = re.compile(
    r"""['"](?:/bin/)?(?:ba|z)?sh['"]\s*,\s*\[\s*['"]-c['"]\s*,\s*(['"`])((?:\\.|(?!\1).)*)\1"""
)
_CALL_URL = re.compile(
    r"\b(fetch|axios(?:\.\w+)?|got(?:\.\w+)?|request|https?\.(?:get|request)|\.post|\.get|\.put|\.patch"
    r"|Invoke-WebRequest|Invoke-RestMethod|iwr|irm|curl_init|file_get_contents|Net::HTTP\.\w+"
    r"|http\.(?:Get|Post|NewRequest)|DownloadString|DownloadFile|UploadFile|UploadString)\s*\(?\s*['\"`"
    r"]([^'\"`\s]+)",
    re.I,
)
_SEND = re.compile(
    r"method\s*:\s*['\"](POST|PUT|PATCH)|\.(post|put|patch)\s*\(|sendBeacon|XMLHttpRequest|\bhttp\.Post"
    r"\b|PostForm"
    r"|-Method\s+(Post|Put)|Upload(File|String|Data)\s*\(|\.write\(\s*JSON\.stringify",
    re.I,
)
_ENV_HARVEST = re.compile(
    r"JSON\.stringify\(\s*process\.env\s*\)|Object\.(keys|entries|values)\(\s*process\.env\s*\)|\.\.\.p"
    r"rocess\.env\b"
    r"|for\s*\(\s*(const|let|var)?\s*\w+\s+in\s+process\.env|os\.Environ\(\)|Get-ChildItem\s+env:|\bENV"
    r"\.to_h\b"
    r"|getenv\(\)\s*[;)]",
    re.I,
)
_READ = re.compile(
    r"readFile|readFileSync|createReadStream|fopen|file_get_contents|File\.read|Get-Content|ReadFile|op"
    r"en\(|homedir"
    r"|expanduser|\$HOME|\$env:USERPROFILE|os\.UserHomeDir",
    re.I,
)
_WRITE = re.compile(
    r"writeFile|appendFile|fs\.write|>>|Add-Content|Set-Content|Out-File|WriteFile|fopen\(.*['\"][aw]", re.I
)
_DECODE_EXEC = re.compile(
    r"\b(eval|new\s+Function|setTimeout|setInterval)\s*\([^;\n]{0,40}\b(atob|Buffer\.from|unescape|from"
    r"CharCode"
    r"|decodeURIComponent)\b|\bfrombase64string\b[^\n]{0,200}\b(iex|invoke-expression)\b"
    r"|\b(iex|invoke-expression)\b[^\n]{0,200}\bfrombase64string\b",
    re.I,
)
_REMOTE_EXEC = re.compile(
    r"\b(eval|new\s+Function)\s*\([^;\n]{0,80}\b(fetch|axios|https?\.get|responseText|\.text\(\))"
    r"|\b(iex|invoke-expression)\b[^\n]{0,160}\b(downloadstring|invoke-webrequest|iwr|irm|invoke-restme"
    r"thod|net\.webclient)"
    r"|\b(downloadstring|invoke-webrequest|iwr|irm|invoke-restmethod)\b[^\n]{0,160}\|\s*(iex|invoke-exp"
    r"ression)\b",
    re.I,
)
_REVERSE = re.compile(
    r"spawn\(\s*['\"](/bin/)?(ba)?sh['\"]|/dev/tcp/|\bnet\.Socket\b.*\bpipe\(|TCPClient\(.*GetStream", re.I
)
_SENSITIVE = re.compile(
    r"(clipboardy\.read|navigator\.clipboard\.readText|Get-Clipboard|navigator\.geolocation|screenshot-"
    r"desktop"
    r"|screen\.capture|desktopCapturer|CopyFromScreen|getUserMedia)",
    re.I,
)
_EVAL = re.compile(r"\beval\s*\(\s*(?!['\"`])[\w$]")
_LOOP = re.compile(
    r"\bfor\s*\(.*?;\s*\w+\s*<=?\s*(\d{3,})|\bfor\s+\w+\s+in\s+range\(\s*(\d{3,})\s*\)|\bwhile\s*\(?\s*"
    r"(true|1|True)\s*\)?\s*[:{]"
)
_NET_CALL = re.compile(
    r"\b(fetch|axios|requests\.\w+|https?\.(get|request)|curl|Invoke-WebRequest|iwr|got)\b\s*\(?", re.I
)
# A string that is a command line: a command word at the start or after `&&`, `||`, `;`, `|`, `&`.
COMMAND_CHAIN = re.compile(
    r"(?:^|&&|\|\||;|\||&)\s*(?:sudo\s+)?(?:curl|wget|bash|sh|zsh|python3?|perl|nc|ncat|chmod|rm|base64"
    r"|powershell|iex|osascript|crontab|xattr)\b[^\n]*?(?:&&|\|\||;|\||&|https?://|>)"
)
_EMBEDDED = re.compile(
    r"require\(\s*\\?['\"]child_process|child_process['\"]?\)?\s*\.\s*(exec|spawn)|\bexecSync\s*\(|\bos"
    r"\.system\s*\("
    r"|\bsubprocess\.(run|Popen|call|check_output)\s*\(|__import__\(\s*\\?['\"]os|Runtime\.getRuntime\("
    r"\)\.exec"
    r"|process\.mainModule|\bnew Function\s*\(|\beval\s*\(",
)


class _Lines:
    """Offsets to 1-based line numbers."""

    def __init__(self, text: str) -> None:
        self.starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.text = text

    def line(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)

    def at(self, line: int) -> str:
        start = self.starts[line - 1]
        end = self.starts[line] - 1 if line < len(self.starts) else len(self.text)
        return self.text[start:end]


def analyse(text: str, col: Collector) -> None:
    """Analyse JavaScript or other code by patterns."""
    from app.governance import shell

    text = fold_code(text)
    lines = _Lines(text)
    for match in _PROCESS.finditer(text):
        line = lines.line(match.start())
        col.note(Fact.EXEC, line, match.group())
        shell.analyse(_unescape(match.group(3)), col.child(pin_line=line))
    for match in _SHELL_C.finditer(text):
        line = lines.line(match.start())
        shell.analyse(_unescape(match.group(2)), col.child(pin_line=line))
    for match in _CALL_URL.finditer(text):
        url = match.group(2)
        if URL.match(url):
            line = lines.line(match.start())
            sending = bool(_SEND.search(lines.at(line)))
            check_url(col, url, line, lines.at(line), sending=sending)
    for rule_id, pattern in (("RCE-DECODE-EXEC", _DECODE_EXEC), ("RCE-EXEC-REMOTE", _REMOTE_EXEC)):
        for match in pattern.finditer(text):
            line = lines.line(match.start())
            col.hit(rule_id, line, lines.at(line))
            col.note(Fact.EXEC, line, lines.at(line))
    for number, content in enumerate(text.split("\n"), 1):
        _line_rules(content, number, col)
    _loops(text, lines, col)
    _strings(text, lines, col)


def _line_rules(content: str, line: int, col: Collector) -> None:
    if _SEND.search(content):
        col.note(Fact.NET_SEND, line, content)
    if _ENV_HARVEST.search(content):
        col.hit("EXF-ENV-HARVEST", line, content)
        col.note(Fact.ENV_HARVEST, line, content)
    if _REVERSE.search(content) and (
        "net" in content.lower() or "/dev/tcp/" in content or "TCPClient" in content
    ):
        col.hit("RCE-REVERSE-SHELL", line, content)
    if _SENSITIVE.search(content):
        col.hit("EXF-SENSITIVE-COLLECT", line, content)
        col.note(Fact.SENSITIVE, line, content)
    if _EVAL.search(content):
        col.hit("UNS-EXEC-DYNAMIC", line, content)
    if pat.is_secret_path(content) and _READ.search(content):
        col.hit("EXF-SECRET-PATH", line, content)
        col.note(Fact.SECRET_ACCESS, line, content)
    if _WRITE.search(content):
        from app.governance.shell import _write_target

        for match in _STRING.finditer(content):
            _write_target(match.group(2), content, line, content, col)


def _loops(text: str, lines: _Lines, col: Collector) -> None:
    """A long or endless loop with a request in its first lines and no pause."""
    for match in _LOOP.finditer(text):
        line = lines.line(match.start())
        count = match.group(1) or match.group(2)
        if count is not None and int(count) < 500:
            continue
        window = "\n".join(lines.at(n) for n in range(line, min(line + 4, len(lines.starts) + 1)))
        if _NET_CALL.search(window) and not re.search(
            r"sleep|setTimeout|await\s+new\s+Promise|delay", window
        ):
            col.hit("RES-NET-FLOOD", line, lines.at(line))


def _strings(text: str, lines: _Lines, col: Collector) -> None:
    """Odd hosts and encoded payloads in string literals."""
    from app.governance.dispatch import analyse_guess

    for match in _STRING.finditer(text):
        value = match.group(2)
        line = lines.line(match.start())
        for url in URL.finditer(value):
            classify_url(col, url.group(), line, value)
        if COMMAND_CHAIN.search(value):
            from app.governance import shell

            shell.analyse(_unescape(value), col.child(pin_line=line))
        if len(value) >= 20 and col.depth <= 2:
            for payload in list(payloads(value))[:5]:
                analyse_guess(payload.text, col.child(context=Context.DECODED, pin_line=line))


def analyse_data(text: str, col: Collector) -> None:
    """JSON, YAML and other data: code in values, odd hosts, encoded payloads, prose in long values."""
    from app.governance import prose, shell

    lines = _Lines(text)
    for number, content in enumerate(text.split("\n"), 1):
        embedded = bool(_EMBEDDED.search(content))
        for match in _STRING.finditer(content):
            value = _unescape(match.group(2))
            if COMMAND_CHAIN.search(value):
                # A command line stored in a value is there to be run by whoever reads the value.
                embedded = True
                shell.analyse(value, col.child(pin_line=number))
        if embedded:
            col.hit("RCE-EMBEDDED-EXEC", number, content)
            col.note(Fact.EXEC, number, content)
        for url in URL.finditer(content):
            classify_url(col, url.group(), number, content)
    prose.analyse_text(text, col)
    _strings(text, lines, col)


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\'", "'").replace("\\n", "\n").replace("\\\\", "\\")
