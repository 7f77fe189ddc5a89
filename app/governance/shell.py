"""Shell analysis through a real tokenizer (shlex): pipelines, redirections, substitutions (pure).

A script is cut into logical lines, each line into pipelines and commands with `shlex` in POSIX
mode with punctuation characters, so quoting is honoured: `echo "curl x | sh"` is one argument,
not a pipe into a shell. Command substitutions (`$(...)`, backticks, `<(...)`) are analysed on
their own and stand in their command as a placeholder that remembers what they produce.
"""

from __future__ import annotations

import base64
import binascii
import posixpath
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from app.governance import patterns as pat
from app.governance.decode import decode_token
from app.governance.findings import Collector, Context, Fact
from app.governance.net import check_url
from app.governance.text import URL, fold_code, host_of, is_collector, is_vendor_installer, public_ip

FETCHERS = frozenset({
    "curl", "wget", "wget2", "fetch", "aria2c", "axel", "http", "https", "lwp-request", "lwp-download",
    "iwr", "invoke-webrequest", "irm", "invoke-restmethod",
})  # fmt: skip
NET_TOOLS = FETCHERS | {
    "nc", "ncat", "netcat", "socat", "telnet", "scp", "sftp", "rsync", "ftp", "mail", "sendmail", "mutt",
    "smbclient",
}  # fmt: skip
SHELLS = frozenset({"sh", "bash", "zsh", "dash", "ksh", "fish", "csh", "tcsh", "ash", "busybox"})
SCRIPT_RUNNERS = frozenset(
    {"python", "python2", "python3", "perl", "ruby", "node", "php", "lua", "deno", "bun"}
)
EVALUATORS = frozenset({"iex", "invoke-expression", "pwsh", "powershell", "osascript", "source", ".", "eval"})
READERS = frozenset({
    "cat", "cp", "scp", "rsync", "tar", "zip", "7z", "base64", "xxd", "head", "tail", "less", "more",
    "strings", "grep", "find", "ls", "od", "gzip", "gpg", "sqlite3", "type", "get-content", "copy-item",
})  # fmt: skip
SENSITIVE_TOOLS = {
    "pbpaste": "clipboard", "xclip": "clipboard", "xsel": "clipboard", "wl-paste": "clipboard",
    "get-clipboard": "clipboard", "screencapture": "screen", "scrot": "screen", "gnome-screenshot": "screen",
    "grim": "screen", "spectacle": "screen", "corelocationcli": "location", "whereami": "location",
}  # fmt: skip
PREFIXES = frozenset({
    "sudo", "doas", "env", "nohup", "time", "exec", "command", "builtin", "nice", "stdbuf", "then", "do",
    "else", "elif", "if", "while", "until", "!", "{", "xargs", "timeout", "caffeinate", "unbuffer",
})  # fmt: skip
MINERS = frozenset({"xmrig", "minerd", "cpuminer", "ccminer", "ethminer", "nbminer", "t-rex", "lolminer"})
OPERATORS = frozenset({";", "&&", "||", "&", ";;", "(", ")", "\n", ";&", ";;&"})
PIPES = frozenset({"|", "|&"})
_REDIRECT = re.compile(r"^(?:&?>>?|>&|>\||<>|<|<<<)$")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SUB = re.compile(r"__SUB(\d+)__")
_FORK_BOMB = re.compile(r"(\w+|:)\s*\(\)\s*\{\s*\1\s*\|\s*\1\s*&\s*\}\s*;?\s*\1")
_QUARANTINE = re.compile(r"\bxattr\s+(-\w*\s+)*(-d\s+com\.apple\.quarantine|-c)")
_DEFENSE = re.compile(
    r"\bspctl\s+--(master|global)-disable|\bcsrutil\s+disable"
    r"|\bsetenforce\s+0|\bufw\s+disable|\bsystemctl\s+(stop|disable|mask)\s+(firewalld|apparmor|auditd|ufw)"
    r"|\biptables\s+-F|\bset-mppreference\s+.*-disable|\badd-mppreference\s+.*-exclusion"
    r"|\bnetsh\s+advfirewall\s+set\s+.*state\s+off|\blsquarantine\s+-bool\s+(no|false)",
    re.I,
)
_ANTI_FORENSICS = re.compile(
    r"\bhistory\s+-c\b|\bunset\s+histfile\b|\bhistfile=/dev/null|\bhistsize=0\b|\bwevtutil\s+cl\b"
    r"|\bclear-eventlog\b|(rm|shred|truncate)\s[^|;&]*(\.bash_history|\.zsh_history|/var/log\b)",
    re.I,
)
_DISK = re.compile(
    r"\bof=/dev/(sd|hd|nvme|disk|mmcblk|xvd|vd)|\bmkfs(\.\w+)?\s+/dev/|\bwipefs\b|>\s*/dev/(sd|nvme|disk)"
)
_REVERSE = re.compile(
    r"/dev/(tcp|udp)/|\b(nc|ncat|netcat)\b[^|;&]*\s-(e|c)\s|\bsocat\b[^|;&]*\b(exec|system):", re.I
)
_INFINITE = frozenset({"true", ":", "1", "[ 1 ]", "[[ 1 ]]", "((1))", "[ true ]"})
_CURL_ARG = frozenset("dFTohXHuAebcKExUwrmYyzCPQ")  # short curl options that take a value
_VERSION = re.compile(r"(==|===|@\d|@[~^]\d|>=|<=|~=|!=|<|>)")


@dataclass
class Cmd:
    """One simple command: its words after prefixes, its redirections, where it was."""

    words: list[str]
    redirects: list[tuple[str, str]]
    line: int
    raw: str
    sudo: bool = False

    @property
    def name(self) -> str:
        """The command's base name, lower case."""
        word = self.words[0] if self.words else ""
        base = posixpath.basename(word.replace("\\", "/")).lower()
        return base[:-4] if base.endswith(".exe") else base

    @property
    def args(self) -> list[str]:
        """The words after the command name."""
        return self.words[1:]


@dataclass
class _State:
    """What a script has done so far: files it downloaded, loops it is in."""

    downloaded: set[str] = field(default_factory=set)
    vendor: set[str] = field(default_factory=set)
    loops: list[tuple[str, bool]] = field(default_factory=list)  # (kind, has_sleep)
    loop_net: list[int] = field(default_factory=list)
    kinds: dict[int, set[str]] = field(default_factory=dict)
    unpinned_reported: bool = False


def analyse(script: str, col: Collector) -> None:
    """Analyse a shell script (or one command line) and record what it does."""
    script = fold_code(script[:200_000])
    state = _State()
    lines = script.split("\n")
    index = 0
    while index < len(lines):
        start = index
        text = lines[index]
        index += 1
        # Continuations and quotes that span lines make one logical line.
        while (
            (text.rstrip().endswith("\\") or _open_quote(text)) and index < len(lines) and index - start < 40
        ):
            text = text.rstrip()[:-1] + " " if text.rstrip().endswith("\\") else text + "\n"
            text += lines[index]
            index += 1
        heredoc = re.search(r"<<-?\s*['\"]?([A-Za-z_][\w-]*)['\"]?", text)
        body: list[str] = []
        if heredoc and "<<<" not in text:
            end = heredoc.group(1)
            while index < len(lines) and lines[index].strip() != end:
                body.append(lines[index])
                index += 1
            index += 1
        _line(text, start + 1, col, state, heredoc_body="\n".join(body) if heredoc else None)


def _open_quote(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def _extract_subs(text: str) -> tuple[str, list[str]]:
    """Replace `$(..)`, backticks and `<(..)` by placeholders; return the text and what they held."""
    subs: list[str] = []
    out: list[str] = []
    i = 0
    in_single = False
    while i < len(text):
        char = text[i]
        if char == "'" and not in_single:
            # Single quotes keep a substitution literal; find the closing one.
            close = text.find("'", i + 1)
            if close == -1:
                out.append(text[i:])
                break
            out.append(text[i : close + 1])
            i = close + 1
            continue
        opener = text[i : i + 2]
        if opener in ("$(", "<(", ">(") and text[i : i + 3] != "$((":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                depth += {"(": 1, ")": -1}.get(text[j], 0)
                j += 1
            subs.append(text[i + 2 : j - 1])
            out.append(f" __SUB{len(subs) - 1}__ " if opener != "$(" else f"__SUB{len(subs) - 1}__")
            i = j
            continue
        if char == "`":
            close = text.find("`", i + 1)
            if close != -1:
                subs.append(text[i + 1 : close])
                out.append(f"__SUB{len(subs) - 1}__")
                i = close + 1
                continue
        out.append(char)
        i += 1
    return "".join(out), subs


def tokens(text: str) -> list[str]:
    """Shell words and operators of one logical line (whitespace split when quoting is broken)."""
    # An escaped parenthesis is a word (find's grouping), not a subshell.
    text = text.replace("\\(", " __LP__ ").replace("\\)", " __RP__ ")
    lexer = shlex.shlex(text, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError:
        return text.split()


def _commands(words: list[str], line: int, raw: str) -> list[list[Cmd]]:
    """Pipelines (lists of commands) from the words of one line."""
    pipelines: list[list[Cmd]] = []
    current: list[Cmd] = []
    chunk: list[str] = []

    def flush() -> None:
        if chunk:
            current.append(_command(list(chunk), line, raw))
            chunk.clear()

    for word in words:
        if word in PIPES:
            flush()
        elif word in OPERATORS:
            flush()
            if current:
                pipelines.append(current)
                current = []
        else:
            chunk.append(word)
    flush()
    if current:
        pipelines.append(current)
    return pipelines


def _command(words: list[str], line: int, raw: str) -> Cmd:
    redirects: list[tuple[str, str]] = []
    kept: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        if _REDIRECT.match(word):
            target = words[i + 1] if i + 1 < len(words) else ""
            if kept and kept[-1].isdigit():
                kept.pop()
            if not (word == ">&" and (target.isdigit() or target == "-")):
                redirects.append((word, target))
            i += 2
            continue
        kept.append(word)
        i += 1
    sudo = False
    while kept:
        head = kept[0].lower()
        if _ASSIGNMENT.match(kept[0]):
            kept.pop(0)
        elif head in ("sudo", "doas"):
            sudo = True
            kept.pop(0)
            while kept and kept[0].startswith("-"):
                option = kept.pop(0)
                if option in ("-u", "-g", "-p", "-C") and kept:
                    kept.pop(0)
        elif head in ("env", "timeout", "nice", "stdbuf", "xargs"):
            # `env` alone prints the environment; only a command after it makes it a prefix.
            j = 1
            while j < len(kept) and (
                kept[j].startswith("-") or _ASSIGNMENT.match(kept[j]) or kept[j].isdigit()
            ):
                j += 2 if kept[j] in ("-u", "-n", "-I", "-s") else 1
            if j >= len(kept):
                break
            del kept[:j]
        elif head in PREFIXES:
            kept.pop(0)
        else:
            break
    return Cmd(kept, redirects, line, raw, sudo)


def _line(text: str, line: int, col: Collector, state: _State, *, heredoc_body: str | None) -> None:
    """Analyse one logical line."""
    stripped = text.strip()
    if not stripped or stripped.startswith("#"):
        return
    stripped = re.sub(r"^\s*(\$|>|PS [^>]*>|%)\s+", "", stripped)  # prompts in pasted sessions
    # A comment starts at a `#` after a space; a `#` inside a URL or a word is kept.
    stripped = re.sub(r"(^|\s)#[^'\"]*$", "", stripped)
    raw = stripped
    lowered = raw.lower()
    if _FORK_BOMB.search(raw):
        col.hit("RES-FORK-BOMB", line, raw)
    if _REVERSE.search(raw) or (re.search(r"\bmkfifo\b", raw) and re.search(r"\b(nc|ncat|telnet)\b", raw)):
        col.hit("RCE-REVERSE-SHELL", line, raw)
        col.note(Fact.EXEC, line, raw)
    if "stratum+tcp://" in lowered or "stratum+ssl://" in lowered:
        col.hit("RES-MINER", line, raw)
    if _DEFENSE.search(raw):
        col.hit("PRIV-DEFENSE-EVASION", line, raw)
    if _ANTI_FORENSICS.search(raw):
        col.hit("BM-ANTI-FORENSICS", line, raw)
    if _DISK.search(raw):
        col.hit("DES-DISK", line, raw)
    if re.search(r"\b(sudo|doas)\s+(-\w*[is]\b|su\b)", raw):
        col.hit("PRIV-ROOT-SHELL", line, raw)
    replaced, subs = _extract_subs(stripped)
    base = len(state.kinds)
    for offset, sub in enumerate(subs):
        state.kinds[base + offset] = _sub_kinds(sub, col.child(pin_line=line))
    if base:
        replaced = _SUB.sub(lambda m: f"__SUB{int(m.group(1)) + base}__", replaced)
    for pipeline in _commands(tokens(replaced), line, raw):
        _pipeline(pipeline, col, state)
    if heredoc_body is not None:
        _heredoc(replaced, heredoc_body, line, col)


def _sub_kinds(sub: str, col: Collector) -> set[str]:
    """Analyse a substitution and say what it produces: fetch, decode, secret, env, sensitive."""
    analyse(sub, col)
    kinds: set[str] = set()
    for pipeline in _commands(tokens(_extract_subs(sub)[0]), 0, sub):
        for cmd in pipeline:
            kinds |= _produces(cmd)
    return kinds


def _produces(cmd: Cmd) -> set[str]:
    name, args = cmd.name, cmd.args
    kinds: set[str] = set()
    if name in FETCHERS or (name in ("nc", "ncat", "netcat") and not any(a in ("-l", "-lp") for a in args)):
        kinds.add("fetch")
    if _is_decoder(cmd):
        kinds.add("decode")
    if name in READERS and any(pat.is_secret_path(a) for a in args):
        kinds.add("secret")
    if name in ("env", "printenv", "set", "export", "declare") and not [
        a for a in args if not a.startswith("-")
    ]:
        kinds.add("env")
    if name == "security" and any(a.startswith(("find-", "dump-keychain", "export")) for a in args):
        kinds.add("secret")
    if name in SENSITIVE_TOOLS and not (name == "xclip" and "-o" not in args and "-out" not in args):
        kinds.add("sensitive")
    return kinds


def _is_decoder(cmd: Cmd) -> bool:
    name, args = cmd.name, cmd.args
    if name in ("base64", "base32", "basenc") and any(a in ("-d", "-D", "--decode") for a in args):
        return True
    if name == "xxd" and any(a.startswith("-r") for a in args):
        return True
    if name == "openssl" and ("-d" in args or "-base64" in args or "base64" in args) and "enc" in args:
        return True
    return name in ("uudecode", "b64decode")


def _kinds_of(words: Iterable[str], state: _State) -> set[str]:
    kinds: set[str] = set()
    for word in words:
        for match in _SUB.finditer(word):
            kinds |= state.kinds.get(int(match.group(1)), set())
    return kinds


def _is_interpreter(cmd: Cmd) -> bool:
    """A command that runs what arrives on its standard input."""
    name, args = cmd.name, cmd.args
    positional = [a for a in args if not a.startswith("-")]
    if name in SHELLS:
        return "-c" not in args and (not positional or args[0] == "-s" or positional[0] == "-")
    if name in SCRIPT_RUNNERS:
        return not positional or positional == ["-"]
    return name in ("iex", "invoke-expression", "source", ".") or (
        name in ("pwsh", "powershell") and "-" in args
    )


def _pipeline(pipeline: list[Cmd], col: Collector, state: _State) -> None:
    fetch_at = decode_at = secret_at = sensitive_at = -1
    for position, cmd in enumerate(pipeline):
        if not cmd.words:
            continue
        produced = _produces(cmd) | _kinds_of(cmd.words[:1], state)
        if cmd.name in ("echo", "printf", "cat") and position + 1 < len(pipeline):
            produced |= _kinds_of(cmd.args, state)
        if _is_interpreter(cmd) and position > 0:
            source = pipeline[fetch_at] if fetch_at >= 0 else None
            if fetch_at >= 0 and source is not None:
                url = next((u for u in _urls(source.args)), "")
                if url and is_vendor_installer(url):
                    col.hit("RCE-PIPE-SHELL-VENDOR", cmd.line, cmd.raw)
                else:
                    col.hit("RCE-PIPE-SHELL", cmd.line, cmd.raw)
                col.note(Fact.EXEC, cmd.line, cmd.raw)
            elif decode_at >= 0:
                col.hit("RCE-DECODE-EXEC", cmd.line, cmd.raw)
                col.note(Fact.EXEC, cmd.line, cmd.raw)
                _rescan_echoed(pipeline[:decode_at], col, cmd.line)
        if cmd.name in NET_TOOLS and position > 0:
            if secret_at >= 0:
                col.hit("EXF-SECRET-SEND", cmd.line, cmd.raw, detail="credential store piped to the network")
                col.note(Fact.NET_SEND, cmd.line, cmd.raw)
            elif sensitive_at >= 0:
                col.hit("EXF-COLLECT-SEND", cmd.line, cmd.raw)
                col.note(Fact.NET_SEND, cmd.line, cmd.raw)
        if "fetch" in produced:
            fetch_at = position
        if "decode" in produced:
            decode_at = position
        if "secret" in produced or "env" in produced:
            secret_at = position
        if "sensitive" in produced:
            sensitive_at = position
        _simple(cmd, col, state, piped_out=position + 1 < len(pipeline))


def _rescan_echoed(cmds: list[Cmd], col: Collector, line: int) -> None:
    """Decode the literal an `echo ... | base64 -d` pipeline carries and analyse what it says."""
    for cmd in cmds:
        for word in cmd.args:
            if len(word) < 16:
                continue
            payload = decode_token(word)
            if payload is None:
                continue
            from app.governance.dispatch import analyse_guess

            analyse_guess(payload.text, col.child(context=Context.DECODED, pin_line=line))


def _urls(words: Iterable[str]) -> Iterable[str]:
    for word in words:
        for match in URL.finditer(word):
            yield match.group()
        if not word.startswith("-") and re.match(r"^[\w.-]+\.[a-z]{2,}(/\S*)?$", word) and "/" in word:
            yield "http://" + word


def _simple(cmd: Cmd, col: Collector, state: _State, *, piped_out: bool) -> None:
    """Rules on one command."""
    name, args, line, raw = cmd.name, cmd.args, cmd.line, cmd.raw
    if not name:
        return
    if cmd.sudo:
        col.hit("PRIV-SUDO", line, raw)
    if (cmd.sudo and name in SHELLS) or name == "su":
        col.hit("PRIV-ROOT-SHELL", line, raw)
    _loops(cmd, col, state)
    if name in FETCHERS:
        _fetch(cmd, col, state)
    elif name in ("nc", "ncat", "netcat", "socat", "telnet"):
        col.note(Fact.NET_CALL, line, raw)
    if name in ("scp", "rsync", "sftp", "ftp") and any(pat.is_secret_path(a) for a in args):
        col.hit("EXF-SECRET-SEND", line, raw, detail="copies a credential store to another host")
    if name in MINERS:
        col.hit("RES-MINER", line, raw)
    if name in SHELLS or name in SCRIPT_RUNNERS or name in EVALUATORS or name.startswith("./"):
        _run(cmd, col, state)
    if name == "chmod":
        _chmod(cmd, col, state)
    if name == "xattr" and _QUARANTINE.search(raw):
        # Vendors of unsigned tools advise this too; on a file this script just downloaded it is the attack.
        fresh = any(posixpath.basename(a) in state.downloaded for a in args if not a.startswith("-"))
        col.hit(
            "PRIV-DEFENSE-EVASION", line, raw, detail="removes the quarantine flag", shift=0 if fresh else -2
        )
    if name == "rm" or name == "remove-item":
        _rm(cmd, col)
    if name == "find":
        _find(cmd, col)
    if name == "crontab":
        if any(a == "-" or not a.startswith("-") for a in args):
            col.hit("PER-CRON", line, raw)
        elif "-e" in args:
            col.hit("PER-CRON", line, raw, shift=-2)
    if name in ("launchctl",) and any(a in ("load", "bootstrap", "enable", "submit") for a in args):
        col.hit("PER-SERVICE", line, raw)
    if name in ("systemctl",) and "enable" in args:
        # Enabling a service is routine server setup; what the unit runs is what matters.
        col.hit("PER-SERVICE", line, raw, shift=-2)
    if name in ("schtasks",) and any(a.lower() == "/create" for a in args):
        col.hit("PER-SERVICE", line, raw)
    if name in ("reg",) and "add" in [a.lower() for a in args] and any("\\run" in a.lower() for a in args):
        col.hit("PER-SERVICE", line, raw)
    if name == "git" and "core.hookspath" in [a.lower() for a in args]:
        col.hit("PER-GIT-HOOK", line, raw)
    if name in ("security",) and any(
        a in ("find-generic-password", "find-internet-password", "dump-keychain") for a in args
    ):
        col.hit("EXF-SECRET-PATH", line, raw, detail="reads the keychain", shift=1)
        col.note(Fact.SECRET_ACCESS, line, raw)
    if name in SENSITIVE_TOOLS and "sensitive" in _produces(cmd):
        col.hit("EXF-SENSITIVE-COLLECT", line, raw, detail=SENSITIVE_TOOLS[name])
        col.note(Fact.SENSITIVE, line, raw)
    if name in READERS and name not in ("ls",):
        # A copy reads its sources, not its destination: `cp .env.example .env` reads no secret.
        sources = [a for a in args if not a.startswith("-")]
        if name in ("cp", "scp", "rsync", "copy-item") and len(sources) > 1:
            sources = sources[:-1]
        secret = next((a for a in sources if pat.is_secret_path(a)), None)
        if secret is not None:
            col.hit("EXF-SECRET-PATH", line, raw, detail=secret)
            col.note(Fact.SECRET_ACCESS, line, raw)
    if name in ("env", "printenv") and (piped_out or cmd.redirects) and not [a for a in args if "=" not in a]:
        col.hit("EXF-ENV-HARVEST", line, raw, shift=-1)
        col.note(Fact.ENV_HARVEST, line, raw)
    if (
        name == "osascript"
        and re.search(r"password", raw, re.I)
        and re.search(r"hidden answer|display dialog", raw, re.I)
    ):
        col.hit("BM-SOLICIT-SECRET", line, raw, detail="a fake password dialog")
    if name in ("pip", "pip3", "uv", "pipx", "npm", "pnpm", "yarn", "bun", "gem", "cargo") or (
        name.startswith("python") and args[:2] == ["-m", "pip"]
    ):
        _install(cmd, col, state)
    if name in ("powershell", "pwsh") and any(
        a.lower() in ("-enc", "-encodedcommand", "-e", "-ec") for a in args
    ):
        _encoded_powershell(cmd, col)
    _writes(cmd, col)
    _sql(cmd, col)


def _loops(cmd: Cmd, col: Collector, state: _State) -> None:
    words = cmd.words
    # `while true` / `until false` / `for ((;;))` open a loop; `done` closes the innermost.
    if words and words[0] == "done":
        if state.loops:
            state.loops.pop()
        return
    text = " ".join(words)
    if text in _INFINITE and _opens_loop(cmd.raw):
        state.loops.append(("infinite", " sleep " in f" {cmd.raw} "))
        return
    big = re.search(r"\{1\.\.(\d+)\}|\bseq\s+(?:\d+\s+)?(\d+)", cmd.raw)
    if re.match(r"\s*for\b", cmd.raw) and big and int(big.group(1) or big.group(2)) >= 500:
        state.loops.append(("long", " sleep " in f" {cmd.raw} "))
        return
    if words and words[0] == "sleep" and state.loops:
        kind, _ = state.loops[-1]
        state.loops[-1] = (kind, True)
        return
    if state.loops and (cmd.name in FETCHERS or cmd.name in ("nc", "ping", "hping3", "ab")):
        _, slept = state.loops[-1]
        if not slept and not re.search(r"\bsleep\b", cmd.raw):
            col.hit("RES-NET-FLOOD", cmd.line, cmd.raw)


def _opens_loop(raw: str) -> bool:
    return bool(re.match(r"\s*(while|until)\b", raw))


def _fetch(cmd: Cmd, col: Collector, state: _State) -> None:
    """curl, wget and friends: what they send, where, and what they save."""
    name, args, line, raw = cmd.name, cmd.args, cmd.line, cmd.raw
    method = ""
    data: list[str] = []
    uploads: list[str] = []
    output = ""
    remote_name = False
    positional: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        value = args[i + 1] if i + 1 < len(args) else ""
        if arg.startswith("--"):
            key, _, inline = arg.partition("=")
            takes = key in (
                "--data",
                "--data-raw",
                "--data-binary",
                "--data-urlencode",
                "--json",
                "--form",
                "--upload-file",
                "--output",
                "--request",
                "--header",
                "--user",
                "--url",
                "--post-data",
                "--post-file",
                "--body-data",
                "--body-file",
                "--method",
                "--output-document",
                "--form-string",
                "-OutFile",
                "--user-agent",
                "--cookie",
                "--referer",
                "--max-time",
                "--connect-timeout",
                "--retry",
            )
            got = inline if inline else (value if takes else "")
            if takes and not inline:
                i += 1
            if key in (
                "--data",
                "--data-raw",
                "--data-binary",
                "--data-urlencode",
                "--json",
                "--post-data",
                "--body-data",
            ):
                data.append(got)
            elif key in ("--form", "--form-string"):
                data.append(got)
                if "@" in got or "<" in got:
                    uploads.append(re.split(r"[@<]", got, maxsplit=1)[1].split(";")[0])
            elif key in ("--upload-file", "--post-file", "--body-file"):
                uploads.append(got)
            elif key in ("--output", "--output-document"):
                output = got
            elif key in ("--request", "--method"):
                method = got.upper()
            elif key == "--url":
                positional.append(got)
            elif key == "--remote-name":
                remote_name = True
        elif arg.startswith("-") and len(arg) > 1 and name in ("curl", "wget", "wget2", "http", "https"):
            letters = arg[1:]
            for k, letter in enumerate(letters):
                if name == "curl" and letter in _CURL_ARG:
                    got = letters[k + 1 :] or value
                    if not letters[k + 1 :]:
                        i += 1
                    if letter == "d":
                        data.append(got)
                    elif letter == "F":
                        data.append(got)
                        if "@" in got or "<" in got:
                            uploads.append(re.split(r"[@<]", got, maxsplit=1)[1].split(";")[0])
                    elif letter == "T":
                        uploads.append(got)
                    elif letter == "o":
                        output = got
                    elif letter == "X":
                        method = got.upper()
                    break
                if name == "curl" and letter == "O":
                    remote_name = True
                if name.startswith("wget") and letter == "O":
                    output = letters[k + 1 :] or value
                    if not letters[k + 1 :]:
                        i += 1
                    break
        else:
            positional.append(arg)
        i += 1
    uploads.extend(value[1:] for value in data if value.startswith("@") and value[1:] not in ("-", ""))
    sending = bool(data or uploads) or method in ("POST", "PUT", "PATCH")
    urls = list(_urls(positional)) or list(_urls(args))
    for url in urls:
        check_url(col, url, line, raw, sending=sending)
    if sending:
        col.note(Fact.NET_SEND, line, raw)
    kinds = _kinds_of(data + uploads + positional, state)
    if "secret" in kinds or "env" in kinds:
        col.hit("EXF-SECRET-SEND", line, raw, detail="sends a credential store or the environment")
    elif "sensitive" in kinds:
        col.hit("EXF-COLLECT-SEND", line, raw)
    for upload in uploads:
        if pat.is_secret_path(upload):
            col.hit("EXF-SECRET-SEND", line, raw, detail=f"uploads {upload}")
        elif upload not in ("-", ""):
            col.hit("EXF-UPLOAD-FILE", line, raw, detail=upload)
    vendor = bool(urls) and all(is_vendor_installer(u) for u in urls)
    saved: list[str] = []
    if output and output != "-":
        saved.append(output)
    if urls and (remote_name or (name.startswith("wget") and not output)):
        saved.append(posixpath.basename(urlsplit(urls[0]).path) or "index.html")
    for target_op, target in cmd.redirects:
        if target_op in (">", ">>", ">|", "&>"):
            saved.append(target)
    for path in saved:
        state.downloaded.add(posixpath.basename(path))
        if vendor:
            state.vendor.add(posixpath.basename(path))


def _run(cmd: Cmd, col: Collector, state: _State) -> None:
    """Interpreters and executed files: run inline code, or a file this script downloaded."""
    name, args, line, raw = cmd.name, cmd.args, cmd.line, cmd.raw
    from app.governance.dispatch import analyse_code

    kinds = _kinds_of(args, state)
    if "fetch" in kinds:
        col.hit("RCE-PIPE-SHELL", line, raw, detail="runs the output of a download")
    elif "decode" in kinds:
        col.hit("RCE-DECODE-EXEC", line, raw)
    if name in SHELLS and "-c" in args:
        index = args.index("-c")
        if index + 1 < len(args):
            analyse_code(args[index + 1], "shell", col.child(pin_line=line))
    elif name in ("python", "python2", "python3") and "-c" in args:
        index = args.index("-c")
        if index + 1 < len(args):
            analyse_code(args[index + 1], "python", col.child(pin_line=line))
    elif name in ("node", "deno", "bun") and any(a in ("-e", "--eval", "-p") for a in args):
        index = next(i for i, a in enumerate(args) if a in ("-e", "--eval", "-p"))
        if index + 1 < len(args):
            analyse_code(args[index + 1], "javascript", col.child(pin_line=line))
    elif name in ("perl", "ruby", "php") and "-e" in args:
        index = args.index("-e")
        if index + 1 < len(args):
            analyse_code(args[index + 1], "generic", col.child(pin_line=line))
    elif name == "eval":
        analyse_code(" ".join(args), "shell", col.child(pin_line=line))
    elif name in ("osascript",) and "-e" in args:
        script = " ".join(args)
        match = re.search(r"do shell script\s+\"([^\"]+)\"", script)
        if match:
            analyse_code(match.group(1), "shell", col.child(pin_line=line))
    # Running a file fetched earlier in the same script.
    target = name if name.startswith("./") else next((a for a in args if not a.startswith("-")), "")
    if name in ("source", ".") or name in SHELLS or name in SCRIPT_RUNNERS or name.startswith("./"):
        base = posixpath.basename(target)
        if base and base in state.downloaded:
            rule_id = "RCE-PIPE-SHELL-VENDOR" if base in state.vendor else "RCE-DOWNLOAD-EXEC"
            col.hit(rule_id, line, raw, detail=f"runs downloaded {base}")
            col.note(Fact.EXEC, line, raw)
    col.note(Fact.EXEC, line, raw)


def _chmod(cmd: Cmd, col: Collector, state: _State) -> None:
    args, line, raw = cmd.args, cmd.line, cmd.raw
    modes = [a for a in args if re.fullmatch(r"[0-7]{3,4}|[ugoa]*[+=-][rwxXst]+", a)]
    for mode in modes:
        if re.fullmatch(r"0?[0-7]?777|[0-7]?[0-7][0-7][2367]", mode) or re.search(
            r"(o|a)\+\w*w|\+\w*s|u\+s", mode
        ):
            col.hit("PRIV-CHMOD", line, raw)
        if mode[:1] in "4267" and len(mode) == 4 and mode[0] in "46":
            col.hit("PRIV-CHMOD", line, raw, detail="setuid")
    if any("x" in m for m in modes if not m[0].isdigit()) or any(
        m[-1] in "1357" for m in modes if m[0].isdigit()
    ):
        for target in (a for a in args if a not in modes and not a.startswith("-")):
            base = posixpath.basename(target)
            if base in state.downloaded and base not in state.vendor:
                col.hit("RCE-DOWNLOAD-EXEC", line, raw, detail=f"makes downloaded {base} executable")


def _rm(cmd: Cmd, col: Collector) -> None:
    args, line, raw = cmd.args, cmd.line, cmd.raw
    flags = "".join(a[1:] for a in args if a.startswith("-") and not a.startswith("--"))
    long_flags = [a for a in args if a.startswith("--")]
    recursive = "r" in flags.lower() or "--recursive" in long_flags or "-recurse" in [a.lower() for a in args]
    targets = [a for a in args if not a.startswith("-")]
    if "--no-preserve-root" in long_flags:
        col.hit("DES-RM-BROAD", line, raw, shift=1)
        return
    for target in targets:
        lowered = target.lower().rstrip()
        if recursive and lowered in pat.BROAD_TARGETS:
            col.hit("DES-RM-BROAD", line, raw, detail=target, shift=1 if lowered in pat.ROOT_TARGETS else 0)
            return
        if _SUB.search(target):
            col.hit(
                "DES-RM-BROAD",
                line,
                raw,
                detail="deletes whatever a command lists",
                shift=0 if recursive else -1,
            )
            return
        if "*" in target and pat.extension_of(target) in pat.USER_DATA_EXT:
            col.hit("DES-DELETE-USERDATA", line, raw, detail=target)
            return


def _find(cmd: Cmd, col: Collector) -> None:
    args, line, raw = cmd.args, cmd.line, cmd.raw
    deletes = "-delete" in args or any(
        a in ("-exec", "-execdir", "-ok") and i + 1 < len(args) and args[i + 1] in ("rm", "shred", "unlink")
        for i, a in enumerate(args)
    )
    if not deletes:
        if any(pat.is_secret_path(a) for a in args):
            col.hit("EXF-SECRET-PATH", line, raw)
            col.note(Fact.SECRET_ACCESS, line, raw)
        return
    names = [
        args[i + 1] for i, a in enumerate(args) if a in ("-name", "-iname", "-path") and i + 1 < len(args)
    ]
    root = next((a for a in args if not a.startswith("-")), ".")
    if any(pat.extension_of(n) in pat.USER_DATA_EXT for n in names):
        col.hit("DES-DELETE-USERDATA", line, raw)
    elif not names and root.lower() in pat.BROAD_TARGETS:
        col.hit("DES-DELETE-USERDATA", line, raw, detail=f"everything under {root}")


def _writes(cmd: Cmd, col: Collector) -> None:
    """Redirections, tee, cp and friends that write to persistence or privilege targets."""
    targets = [t for op, t in cmd.redirects if ">" in op]
    if cmd.name == "tee":
        targets += [a for a in cmd.args if not a.startswith("-")]
    if cmd.name in ("cp", "mv", "ln", "install", "copy-item", "move-item") and len(cmd.args) >= 2:
        targets.append(cmd.args[-1])
    if cmd.name in ("add-content", "set-content", "out-file"):
        targets += [a for a in cmd.args if not a.startswith("-")][:1]
    content = " ".join(cmd.words)
    for target in targets:
        _write_target(target, content, cmd.line, cmd.raw, col)


def _write_target(target: str, content: str, line: int, raw: str, col: Collector) -> None:
    risky = bool(
        re.search(
            r"\b(curl|wget|nc|ncat|base64|python[23]?\s+-c|eval|bash\s+-i|/dev/tcp)\b|https?://", content
        )
    )
    if pat.AUTHORIZED_KEYS.search(target):
        col.hit("PER-SSH-KEY", line, raw)
    elif pat.RC_FILE.search(target):
        # `export PATH=...` in ~/.bashrc is every installer's advice; a download or a shell there is not.
        col.hit("PER-SHELL-RC", line, raw, detail=target, shift=0 if risky else -2)
    elif pat.CRON_PATH.search(target):
        col.hit("PER-CRON", line, raw)
    elif pat.SERVICE_PATH.search(target):
        col.hit("PER-SERVICE", line, raw, shift=0 if risky else -1)
    elif pat.GIT_HOOK.search(target):
        col.hit("PER-GIT-HOOK", line, raw, shift=1 if risky else 0)
    elif pat.AGENT_MEMORY.search(target):
        col.hit("PER-AGENT-MEMORY", line, raw, detail=target)
    elif pat.SUDOERS.search(target):
        col.hit("PRIV-ROOT-SHELL", line, raw, shift=1 if "nopasswd" in content.lower() else 0)


def _heredoc(text: str, body: str, line: int, col: Collector) -> None:
    words = tokens(text)
    pipelines = _commands(words, line, text)
    for pipeline in pipelines:
        for cmd in pipeline:
            if cmd.name in SHELLS or cmd.name in EVALUATORS:
                analyse(body, col.child(line_offset=line + 1))
            elif cmd.name in ("python", "python3", "python2"):
                from app.governance.dispatch import analyse_code

                analyse_code(body, "python", col.child(line_offset=line + 1))
            for op, target in cmd.redirects:
                if ">" in op:
                    _write_target(target, body, line, text, col)


def _install(cmd: Cmd, col: Collector, state: _State) -> None:
    """Package installs: typosquats, custom indexes, URLs, unpinned versions."""
    name, args, line, raw = cmd.name, cmd.args, cmd.line, cmd.raw
    words = args[2:] if name.startswith("python") else args
    if name == "uv" and words[:1] == ["pip"]:
        words = words[1:]
    if not words or words[0] not in ("install", "i", "add", "ci"):
        return
    ecosystem = "npm" if name in ("npm", "pnpm", "yarn", "bun") else "pypi"
    unpinned: list[str] = []
    skip_next = False
    for k, word in enumerate(words[1:], 1):
        if skip_next:
            skip_next = False
            continue
        if word in (
            "-i",
            "--index-url",
            "--extra-index-url",
            "--registry",
            "--trusted-host",
            "-f",
            "--find-links",
        ):
            value = words[k + 1] if k + 1 < len(words) else ""
            skip_next = True
            host = host_of(value)
            if host and host not in (
                "pypi.org",
                "files.pythonhosted.org",
                "registry.npmjs.org",
                "download.pytorch.org",
            ):
                col.hit("SUP-CUSTOM-INDEX", line, raw, detail=host)
            continue
        if word.startswith("-") or word in (".", "..") or word.startswith(("./", "../", "/")):
            if word in ("-r", "--requirement", "-c", "-e", "--editable", "--target", "-t", "--prefix"):
                skip_next = True
            continue
        if re.match(r"^(git\+|https?://|ftp://)", word) or word.endswith((".whl", ".tar.gz", ".tgz", ".zip")):
            host = host_of(word.removeprefix("git+"))
            shift = 2 if word.startswith("http://") or public_ip(host) or is_collector(host) else 0
            col.hit("SUP-URL-INSTALL", line, raw, detail=word, shift=shift)
            continue
        package = re.split(r"[=<>!~\[;@ ]", word.lstrip("@"), maxsplit=1)[0]
        if word.startswith("@"):
            package = "@" + word[1:].split("@", 1)[0]
        squat = pat.typosquat_of(package, ecosystem) if package else None
        if squat:
            col.hit("SUP-TYPOSQUAT", line, raw, detail=f"{package} looks like {squat}")
        if not _VERSION.search(word.lstrip("@")):
            unpinned.append(package)
    if unpinned and not state.unpinned_reported:
        state.unpinned_reported = True
        col.hit("SUP-UNPINNED", line, raw, detail=", ".join(unpinned[:5]))


def _encoded_powershell(cmd: Cmd, col: Collector) -> None:
    args = cmd.args
    index = next(i for i, a in enumerate(args) if a.lower() in ("-enc", "-encodedcommand", "-e", "-ec"))
    if index + 1 >= len(args):
        return
    try:
        text = base64.b64decode(args[index + 1]).decode("utf-16-le")
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return
    col.hit("RCE-DECODE-EXEC", cmd.line, cmd.raw, detail="PowerShell -EncodedCommand")
    from app.governance.dispatch import analyse_code

    analyse_code(text, "generic", col.child(context=Context.DECODED, pin_line=cmd.line))


def _sql(cmd: Cmd, col: Collector) -> None:
    text = " ".join(cmd.words).lower()
    if re.search(r"\b(drop\s+(table|database|schema)|truncate\s+table)\b", text):
        col.hit("DES-SQL-DROP", cmd.line, cmd.raw)
