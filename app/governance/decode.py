"""Find encoded payloads (base64, base32, base85, hex) in text and decode the readable ones (pure).

Only payloads that decode to readable text are returned: images, hashes and keys decode to bytes
and are dropped. The scanner rescans what comes back, so a bounded depth and size keep a payload
that decodes to another payload from running away.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass

MAX_DEPTH = 2
MAX_DECODED = 64 * 1024
MAX_PAYLOADS = 40

_B64 = re.compile(r"(?<![A-Za-z0-9+/=_-])[A-Za-z0-9+/_-]{20,}={0,2}(?![A-Za-z0-9+/=_-])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){12,}(?![0-9A-Fa-f])")
_HEX_ESCAPES = re.compile(r"(?:\\x[0-9A-Fa-f]{2}){6,}")
_B32 = re.compile(r"(?<![A-Z2-7=])[A-Z2-7]{24,}={0,6}(?![A-Z2-7=])")
# Base85 uses almost every printable character, so it is only looked for where the text says so.
_B85 = re.compile(r"[0-9A-Za-z!#$%&()*+\-;<=>?@^_`{|}~]{20,}")
_B85_HINT = re.compile(r"b85|a85|base85|ascii85|base-85", re.I)


@dataclass(frozen=True)
class Payload:
    """A decoded payload: how it was encoded, where it started, and the text it decodes to."""

    encoding: str
    start: int
    text: str


def readable(data: bytes) -> str | None:
    """The bytes as text if they are UTF-8 and nearly all printable, else None."""
    if len(data) < 8:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    printable = sum(1 for c in text if c.isprintable() or c in "\n\r\t")
    letters = sum(1 for c in text if c.isalpha())
    if printable / len(text) < 0.95 or letters / len(text) < 0.3:
        return None
    # Real text or code has separators; a decoded identifier or key is one long word.
    if not re.search(r"[\s/.;(]", text):
        return None
    return text[:MAX_DECODED]


def decode_token(token: str, *, allow85: bool = False) -> Payload | None:
    """Decode one token as base64, hex, base32 or (when allowed) base85, if it reads as text."""
    token = token.strip().strip("'\"`")
    candidates: list[tuple[str, bytes]] = []
    if _HEX_ESCAPES.fullmatch(token):
        candidates.append(("hex", bytes(int(h, 16) for h in re.findall(r"\\x([0-9A-Fa-f]{2})", token))))
    if re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", token):
        candidates.append(("hex", bytes.fromhex(token)))
    if re.fullmatch(r"[A-Za-z0-9+/_-]+={0,2}", token):
        padded = token + "=" * (-len(token) % 4)
        for name, decoder in (("base64", base64.b64decode), ("base64", base64.urlsafe_b64decode)):
            try:
                candidates.append((name, decoder(padded)))
            except (binascii.Error, ValueError):
                continue
    if re.fullmatch(r"[A-Z2-7]+=*", token):
        try:
            candidates.append(("base32", base64.b32decode(token + "=" * (-len(token) % 8))))
        except (binascii.Error, ValueError):
            pass
    if allow85:
        for name in ("base85", "ascii85"):
            try:
                data = base64.b85decode(token) if name == "base85" else base64.a85decode(token)
            except (binascii.Error, ValueError):
                continue
            candidates.append((name, data))
    for name, data in candidates:
        text = readable(data)
        if text is not None:
            return Payload(name, 0, text)
    return None


def _mixed(token: str) -> bool:
    """Base64 of text mixes upper case, lower case and digits; slugs and words do not."""
    return (
        any(c.isupper() for c in token)
        and any(c.islower() for c in token)
        and any(c.isdigit() for c in token)
    )


# The commonest letter pairs of English: text made of words is full of them, scrambled text is not.
_BIGRAMS = frozenset(
    "th he in er an re on at en nd ti es or te of ed is it al ar st to nt ng se ha as ou io le ve co "
    "me de hi ri ro ic ne ea ra ce li ch ll be ma si om ur ca el ta la ns di fo ho pe ec pr no ct us "
    "ac ot il tr ly".split()
)
_INTS = re.compile(r"\s*\d{1,3}(?:\s*,\s*\d{1,3}){19,}\s*,?\s*")
_COMPACT = re.compile(r"[A-Za-z0-9+/=_!#$%&()*;<>?@^`{|}~-]{40,}")


def naturalness(text: str) -> float:
    """The share of letter pairs that are common in English (about 0.6 for prose, under 0.3 scrambled)."""
    letters = re.sub(r"[^a-z]+", " ", text.lower())
    pairs = [w[i : i + 2] for w in letters.split() for i in range(len(w) - 1)]
    return sum(1 for p in pairs if p in _BIGRAMS) / len(pairs) if pairs else 0.0


def opaque(value: str) -> bool:
    """A blob that is not meant to be read: encoded, a long list of byte values, or scrambled text."""
    text = value.strip()
    if len(text) < 40 or "://" in text:
        return False
    if _INTS.fullmatch(text):
        return True
    if _COMPACT.fullmatch(text):
        return _mixed(text) or bool(re.fullmatch(r"[0-9A-Fa-f]+", text))
    letters = sum(1 for c in text if c.isalpha())
    words = [w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 2]
    vowelless = sum(1 for w in words if not re.search("[aeiouy]", w))
    # Scrambled text: few common English letter pairs, and many "words" without a vowel.
    return (
        letters / len(text) > 0.5
        and len(words) >= 8
        and naturalness(text) < 0.35
        and vowelless / len(words) >= 0.25
    )


def payloads(text: str) -> Iterator[Payload]:
    """Every readable encoded payload in `text`, at most `MAX_PAYLOADS`."""
    allow85 = bool(_B85_HINT.search(text))
    found = 0
    seen: set[int] = set()
    patterns = [_HEX_ESCAPES, _HEX, _B32, _B64] + ([_B85] if allow85 else [])
    for pattern in patterns:
        for match in pattern.finditer(text):
            token = match.group()
            if match.start() in seen or (pattern is _B64 and not _mixed(token)):
                continue
            decoded = decode_token(match.group(), allow85=pattern is _B85)
            if decoded is None:
                continue
            seen.add(match.start())
            yield Payload(decoded.encoding, match.start(), decoded.text)
            found += 1
            if found >= MAX_PAYLOADS:
                return
