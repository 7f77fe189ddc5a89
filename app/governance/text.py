"""Text helpers for the scanner: invisible Unicode, look-alike letters, URLs and host classes (pure)."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

SNIPPET_CHARS = 160

TAG_RANGE = range(0xE0000, 0xE0080)
# Zero-width and filler characters that render as nothing.
ZERO_WIDTH = frozenset(
    "\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff\u180e\u034f\u115f\u1160\u3164\uffa0"
)
# Embeddings, overrides and isolates: they reorder what a reviewer sees (Trojan Source).
BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
# Direction marks and soft hyphens have honest uses; they are only stripped before matching.
QUIET = frozenset("\u200e\u200f\u061c\u00ad")
_STRIP: dict[int, None] = {ord(c): None for c in ZERO_WIDTH | BIDI | QUIET} | dict.fromkeys(TAG_RANGE)

# Cyrillic and Greek letters that look like Latin ones (a subset of Unicode's confusables).
CONFUSABLES = {
    "а": "a", "е": "e", "о": "o", "р": "p", "с": "c", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s",
    "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w", "ь": "b", "ɡ": "g", "ı": "i", "ɑ": "a",
    "А": "A", "В": "B", "Е": "E", "К": "K", "М": "M", "Н": "H", "О": "O", "Р": "P", "С": "C", "Т": "T",
    "Х": "X", "У": "Y", "І": "I", "Ј": "J", "Ѕ": "S",
    "α": "a", "ο": "o", "ν": "v", "ρ": "p", "ι": "i", "κ": "k", "τ": "t", "υ": "u",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M", "Ν": "N", "Ο": "O",
    "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
}  # fmt: skip
_FOLD = str.maketrans(CONFUSABLES)
_CONFUSABLE_CHARS = frozenset(CONFUSABLES)

_TAGS = re.compile("[\U000e0000-\U000e007f]")
URL = re.compile(r"\b(?:https?|ftp|wss?)://[^\s\"'<>`()\[\]{}\\|^]+", re.I)
WORD = re.compile(r"[^\W\d_]{3,}")

# Services that exist to receive data from anywhere or to tunnel to a private machine: the usual
# drop points of exfiltration. Ordinary webhooks of chat products are left out (bots use them).
_COLLECTORS = re.compile(
    r"(^|\.)(ngrok\.io|ngrok-free\.(app|dev)|ngrok\.(app|dev)|trycloudflare\.com|loca\.lt|localtunnel\.me"
    r"|serveo\.net|localhost\.run|lhr\.life|pagekite\.me|webhook\.site|requestbin\.\w+|pipedream\.net"
    r"|beeceptor\.com|hookbin\.com|requestcatcher\.com|interact\.sh|oast\.(pro|live|site|online|fun|me)"
    r"|burpcollaborator\.net|oastify\.com|canarytokens\.com|dnslog\.cn|pastebin\.com|paste\.ee|hastebin\.com"
    r"|ghostbin\.\w+|glot\.io|rentry\.(co|org)|transfer\.sh|file\.io|0x0\.st|temp\.sh|bashupload\.com"
    r"|anonfiles\.\w+|gofile\.io|termbin\.com)$"
)
# IP geolocation lookups: the host name says what they are for.
_GEO = re.compile(
    r"(ipapi|ip-api|ipinfo|ipgeolocation|ipstack|ipwho|ipdata|geoip|freegeoip|ipregistry|db-ip|geojs"
    r"|extreme-ip-lookup|geolocation-db|ip2location|iplocation)"
)
# Installers that vendors publish as `curl ... | sh`; piping them is common advice, not an attack.
VENDOR_INSTALLERS = frozenset({
    "sh.rustup.rs", "get.docker.com", "install.python-poetry.org", "astral.sh", "bun.sh", "deno.land",
    "get.pnpm.io", "deb.nodesource.com", "rpm.nodesource.com", "sdk.cloud.google.com", "cli.github.com",
    "get.helm.sh", "ollama.com", "tailscale.com", "claude.ai", "get.volta.sh", "pyenv.run",
    "install.determinate.systems", "fnm.vercel.app", "raw.githubusercontent.com/homebrew",
    "raw.githubusercontent.com/nvm-sh", "sh.brew.sh", "get.sdkman.io", "starship.rs", "mise.run",
})  # fmt: skip


def clip(text: str, limit: int = SNIPPET_CHARS) -> str:
    """One line of at most `limit` characters, invisible characters written as escapes."""
    out: list[str] = []
    for char in " ".join(text.split()):
        code = ord(char)
        if char in ZERO_WIDTH or char in BIDI or code in TAG_RANGE or char in QUIET:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
        if len(out) >= limit:
            out.append("…")
            break
    return "".join(out)


def normalise(text: str) -> str:
    """NFKC, invisible characters dropped and look-alike letters folded to Latin, lower case."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", text).translate(_STRIP).translate(_FOLD).lower()


def fold_code(text: str) -> str:
    """Code with invisible characters dropped and look-alike letters made Latin, so `сurl` is `curl`."""
    if text.isascii():
        return text
    return text.translate(_STRIP).translate(_FOLD)


def tag_text(text: str) -> str:
    """The ASCII hidden in Unicode tag characters (emoji flag sequences excepted)."""
    if text.isascii() or not _TAGS.search(text):
        return ""
    out: list[str] = []
    previous = ""
    in_flag = False
    for char in text:
        code = ord(char)
        if code in TAG_RANGE:
            # A subdivision flag is U+1F3F4 followed by tags and a cancel tag: a real emoji.
            if previous == "\U0001f3f4":
                in_flag = True
            if not in_flag and 0xE0020 <= code <= 0xE007E:
                out.append(chr(code - 0xE0000))
            if code == 0xE007F:
                in_flag = False
        else:
            in_flag = False
        previous = char
    return "".join(out)


@dataclass(frozen=True)
class Invisible:
    """Where invisible characters sit in one line."""

    zero_width_in_word: int
    zero_width_run: int
    bidi: int


_INVISIBLE = re.compile("[" + "".join(sorted(ZERO_WIDTH | BIDI)) + "]")
_CONFUSABLE_RE = re.compile("[" + "".join(sorted(CONFUSABLES)) + "]")


def invisibles(line: str) -> Invisible | None:
    """Zero-width characters between Latin letters or in runs, and bidi controls; None if clean."""
    if line.isascii() or not _INVISIBLE.search(line):
        return None
    in_word = run = longest = bidi = 0
    for index, char in enumerate(line):
        if char in ZERO_WIDTH:
            run += 1
            longest = max(longest, run)
            before = line[index - 1] if index else ""
            after = line[index + 1] if index + 1 < len(line) else ""
            if before.isascii() and before.isalpha() and after.isascii() and after.isalpha():
                in_word += 1
            continue
        run = 0
        if char in BIDI:
            bidi += 1
    if in_word or longest >= 4 or bidi:
        return Invisible(in_word, longest, bidi)
    return None


def zero_width_bits(line: str) -> str | None:
    """Text hidden as a binary code in a run of two kinds of zero-width characters, if it decodes."""
    if line.isascii():
        return None
    runs = re.findall(r"[\u200b\u200c\u200d\u2060\ufeff]{16,}", line)
    for run in runs:
        kinds = sorted(set(run))
        if len(kinds) != 2:
            continue
        for zero, one in ((kinds[0], kinds[1]), (kinds[1], kinds[0])):
            bits = "".join("0" if c == zero else "1" for c in run if c in (zero, one))
            data = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8))
            decoded = data.decode("ascii", errors="replace")
            if decoded and sum(c.isprintable() for c in decoded) / len(decoded) > 0.9:
                return decoded
    return None


def mixed_script_word(line: str) -> str | None:
    """A word that mixes ASCII letters with Cyrillic or Greek look-alikes, if any."""
    if line.isascii() or not _CONFUSABLE_RE.search(line):
        return None
    for match in WORD.finditer(line):
        word = match.group()
        if any(c in _CONFUSABLE_CHARS for c in word) and any(c.isascii() for c in word):
            return word
    return None


def urls(text: str) -> Iterator[tuple[str, int]]:
    """The URLs in `text` with their offsets."""
    for match in URL.finditer(text):
        yield match.group().rstrip(".,;:!?*_'\""), match.start()


def host_of(url: str) -> str:
    """The host of a URL (lower case, no port), or '' when it has none."""
    try:
        return (urlsplit(url if "://" in url else f"http://{url}").hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


def is_collector(host: str) -> bool:
    """A tunnel, paste, file-drop or request-collector service."""
    return bool(_COLLECTORS.search(host))


def is_geolocation(host: str) -> bool:
    """An IP geolocation lookup service."""
    return bool(_GEO.search(host))


def public_ip(host: str) -> bool:
    """A literal, globally routable IP address (documentation and private ranges are not)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_global
    except ValueError:
        return False


def is_vendor_installer(url: str) -> bool:
    """An HTTPS installer a vendor documents piping into a shell."""
    if not url.lower().startswith("https://"):
        return False
    host = host_of(url)
    path = urlsplit(url).path.lower()
    first = path.strip("/").split("/", 1)[0]
    return (
        host in VENDOR_INSTALLERS
        or f"{host}/{first}" in VENDOR_INSTALLERS
        or any(host.endswith("." + name) for name in VENDOR_INSTALLERS if "/" not in name)
    )


def host_problem(host: str) -> str | None:
    """'homoglyph' for a host with look-alike letters, 'punycode' for an xn-- host, else None."""
    if not host:
        return None
    if not host.isascii():
        return "homoglyph" if any(c in _CONFUSABLE_CHARS for c in host) or _mixed(host) else "punycode"
    if "xn--" in host:
        try:
            decoded = host.encode("ascii").decode("idna")
        except UnicodeError:
            return "punycode"
        return "homoglyph" if any(c in _CONFUSABLE_CHARS for c in decoded) else "punycode"
    return None


def _mixed(host: str) -> bool:
    scripts = {unicodedata.name(c, "?").split(" ")[0] for c in host if c.isalpha()}
    return len(scripts) > 1
