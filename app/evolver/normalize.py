"""Observation normalisation: a raw agent observation becomes a stable situation key.

Two observations of the same situation differ in incidental details (ids, numbers, timestamps,
paths, hashes, the length of a log). The key masks those with readable placeholders, keeps the
words that carry meaning ("stove", "denied", "not found"), folds whitespace and case, and cuts
long outputs to the lines that carry signal, so that the keys of the same situation are equal or
nearly so once embedded and clustered by cosine similarity.

Rules, in the order they apply:

1. ANSI escapes and control characters are dropped (terminal colour is not content).
2. A whole text that parses as a JSON object or array becomes a structural summary: keys in their
   order, string values masked and shortened, numbers `<num>`, arrays as a length bucket
   (`one`, `few`, `many`) and the shape of their first element. A single line that parses as
   JSON (NDJSON logs) is summarised the same way.
3. Otherwise the text is split into lines (newlines, and " | " so that keys split as they were
   joined) and each line is masked, in this order, because earlier patterns contain the
   characters later ones look for: URLs and emails (contain paths, dots and digits), UUIDs
   (contain hex runs and numbers), IP addresses (dotted numbers), ISO datetimes, dates, clock
   times (contain numbers and slashes), Windows and unix paths (may contain all of the above),
   `0x` hex literals, hex hashes of 7+ digits, ids mixing letters and digits, and last numbers.
   Runs of the same placeholder ("<num>, <num>, <num>") fold into one, since how many of them
   appear is as incidental as their values.
4. Whitespace folds to single spaces and everything is lowercased.
5. Consecutive lines that are equal after masking collapse into one marked `(xN)`; from ten up the
   marker is `(x10+)`, since 400 progress lines and 300 are the same situation.
6. If the joined lines exceed `max_chars`, the first line, the last line, the lines with error
   words, and the next head and tail lines are kept, in that priority and in document order,
   with "..." standing for the dropped lines; the result is cut to `max_chars` on a word boundary.

Numbers: every free-standing number is masked, small counts included ("3 apples" and "5 apples"
are both "<num> apples"). One rule is easier to predict than a threshold, and the meaning of a
number usually sits in the word beside it ("404 not found", "23 degrees celsius"). Digits glued
to the end of a word are part of a name and kept ("python3", "sha256", "ipv4", the `(x5)` marker).
Digits after "-" or "_" are masked ("job_<num>", "utf-<num>") because such suffixes are mostly
ids.

The key is idempotent: normalising a key again returns it unchanged. Cutting and masking can
expose new matches, so the function repeats on its own (short) output until it is a fixed point.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_CHARS", "LINE_SEPARATOR", "PLACEHOLDERS", "mask_text", "normalize_observation"]

DEFAULT_MAX_CHARS = 600
LINE_SEPARATOR = " | "
GAP_MARKER = "..."
ELLIPSIS = "..."

PLACEHOLDERS = ("url", "email", "uuid", "ip", "date", "time", "path", "hex", "hash", "id", "num")

# Beyond this the middle of a huge log is noise for a situation key; head and tail stay.
MAX_INPUT_CHARS = 100_000
# JSON is parsed whole (fast, in C) up to this size; larger texts take the line path.
MAX_JSON_CHARS = 1_000_000
# Masking and normalising repeat until nothing changes; real text settles in one or two rounds, and
# the bound only guards against a surprise.
MAX_MASK_ROUNDS = 5
REPEAT_EXACT_BELOW = 10
HEAD_LINES = 3
TAIL_LINES = 2
MAX_SIGNAL_LINES = 32
JSON_MAX_DEPTH = 4
JSON_MAX_KEYS = 12
JSON_MAX_STRING = 80

Replacement = str | Callable[[re.Match[str]], str]


@dataclass(frozen=True, slots=True)
class MaskRule:
    """One masking step: what it finds, and what it puts instead."""

    name: str
    pattern: re.Pattern[str]
    replacement: Replacement


_H = r"[0-9A-Fa-f]{1,4}"
_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?"
    r"|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)\b\.?"
)
_WEEKDAY = r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*\.?,?\s+)?"
_ORDINAL = r"(?:st|nd|rd|th)?"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:\s?[AaPp][Mm](?![A-Za-z]))?"
_ZONE = r"(?:\s?(?:[Zz]|UTC|GMT|[+-]\d{2}:?\d{2})(?![\w:]))?"
# A path segment; a dot counts only inside it, so a sentence's full stop is not swallowed.
_SEG = r"(?:\.{1,2}(?=/)|(?:[\w@+~$-]|<[a-z]+>|\.(?=[\w<@+~$-]))+)"
_WIN_SEG = r"(?:[^\\/\s:*?\"'<>|,;()]|<[a-z]+>)+"
_EXTENSION = re.compile(r"\.[A-Za-z][A-Za-z0-9]{0,5}$")
_MIXED = re.compile(r"[A-Za-z]\d+[A-Za-z]|\d[A-Za-z]+\d")


def _relative_path(match: re.Match[str]) -> str:
    # "and/or", "origin/main", "TCP/IP" are words, not paths: require a file extension or a trailing slash.
    token = match.group(0)
    return "<path>" if token.endswith("/") or _EXTENSION.search(token) else token


def _mixed_id(match: re.Match[str]) -> str:
    # Letters and digits interleaved ("a1b2c3", "req_8f3k2") are generated; a trailing version is a name.
    token = match.group(0)
    return "<id>" if _MIXED.search(token) else token


MASK_RULES: tuple[MaskRule, ...] = (
    MaskRule(
        "url",
        re.compile(
            r"(?:(?<![\w+.-])[A-Za-z][A-Za-z0-9+.-]{0,15}://|(?<![\w+.-])[Ww]{3}\.)[^\s<>\"'`]*[^\s<>\"'`.,;:!?)\]}]",
        ),
        "<url>",
    ),
    MaskRule(
        "email",
        re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        "<email>",
    ),
    MaskRule(
        "uuid",
        re.compile(
            r"(?<![\w-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}(?![\w-])"
        ),
        "<uuid>",
    ),
    MaskRule(
        "ipv4",
        re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?:/\d{1,2})?(?::\d{1,5})?(?!\w)(?!\.\d)"),
        "<ip>",
    ),
    MaskRule(
        "ipv6",
        # The digit look-ahead keeps hex-looking words joined by "::" ("Add::Bad") out.
        re.compile(
            rf"(?<![\w:])(?=[0-9A-Fa-f:]*\d)(?:(?:{_H}:){{7}}{_H}|(?:{_H}:){{1,6}}(?::{_H}){{1,6}})(?![\w:])"
        ),
        "<ip>",
    ),
    MaskRule(
        "iso-datetime",
        re.compile(rf"(?<![\w.])\d{{4}}-\d{{2}}-\d{{2}}[Tt ]{_CLOCK}{_ZONE}(?!\d)"),
        "<date> <time>",
    ),
    MaskRule(
        "date",
        re.compile(
            r"(?<![\w.])(?:"
            r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"
            r"|\d{1,2}[-/.]\d{1,2}[-/.]\d{4}"
            r"|\d{1,2}/\d{1,2}/\d{2}"
            rf"|{_WEEKDAY}\d{{1,2}}{_ORDINAL}\s+{_MONTH},?(?:\s+\d{{4}})?"
            rf"|{_WEEKDAY}{_MONTH}\s+\d{{1,2}}{_ORDINAL}(?:,?\s+\d{{4}})?"
            rf"|{_MONTH}\s+\d{{4}}"
            r")(?![\w/])"
        ),
        "<date>",
    ),
    MaskRule("time", re.compile(rf"(?<![\w:.]){_CLOCK}{_ZONE}(?![\w:])"), "<time>"),
    MaskRule(
        "windows-path",
        re.compile(
            r"(?<!\w)(?:[A-Za-z]:[\\/]+|\\\\|\.{1,2}\\)"
            rf"(?:{_WIN_SEG}(?: {_WIN_SEG})*[\\/]+)*(?:{_WIN_SEG})?"
        ),
        "<path>",
    ),
    MaskRule("unix-path", re.compile(rf"(?<![\w.~/>$@+-])(?:~|\.{{1,2}})?(?:/{_SEG})+/?"), "<path>"),
    MaskRule("relative-path", re.compile(rf"(?<![\w.~/>$@+-])(?:{_SEG}/)+{_SEG}/?"), _relative_path),
    MaskRule("hex", re.compile(r"(?<!\w)0[xX][0-9A-Fa-f]+(?!\w)"), "<hex>"),
    MaskRule(
        "hash",
        # sha256, sha1, md5 and short git hashes; a letter and a digit are required so words stay.
        re.compile(r"(?<!\w)(?=[0-9A-Fa-f]*[A-Fa-f])(?=[0-9A-Fa-f]*\d)[0-9A-Fa-f]{7,}(?!\w)"),
        "<hash>",
    ),
    MaskRule("id", re.compile(r"(?<![\w-])[\w-]{5,}(?![\w-])"), _mixed_id),
    MaskRule("num", re.compile(r"(?:(?<=\b[vV])|(?<![A-Za-z0-9.]))[-+]?\d+(?:[.,]\d+)*"), "<num>"),
)

_DIGIT = re.compile(r"\d")
# What a text must contain for each rule to change it: a rule whose needs are missing is skipped, with
# the same result. Replacements only ever put placeholders ("<num>") in place of what they match, so
# what a text lacks before the rules it still lacks after any of them: the needs are checked once.
Need = str | re.Pattern[str]
_NEEDS: dict[str, tuple[Need, ...]] = {
    "url": (re.compile(r"://|[Ww]{3}\."),),
    "email": ("@",),
    "uuid": ("-",),
    "ipv4": (_DIGIT, "."),
    "ipv6": (_DIGIT, ":"),
    "iso-datetime": (_DIGIT, "-", ":"),
    "date": (_DIGIT,),
    "time": (_DIGIT, ":"),
    "windows-path": (re.compile(r"[:\\]"),),
    "unix-path": ("/",),
    "relative-path": ("/",),
    "hex": (re.compile(r"0[xX]"),),
    "hash": (_DIGIT,),
    # `_mixed_id` leaves a token without a digit as it is.
    "id": (_DIGIT,),
    "num": (_DIGIT,),
}
_RULES = tuple((rule, _NEEDS[rule.name]) for rule in MASK_RULES)

_PLACEHOLDER_RUN = re.compile(rf"<({'|'.join(PLACEHOLDERS)})>(?:[\s,;]+<\1>)+")
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")
_PIPE_SPLIT = re.compile(r"\s\|\s")
_SIGNAL = re.compile(
    r"error|exception|traceback|warn|fail|fatal|panic|denied|forbidden|unauthori[sz]ed|refused|rejected"
    r"|not found|no such|cannot|can't|could not|unable|invalid|timeout|timed out|abort|missing|permission"
)


def mask_text(text: str) -> str:
    """Replace the incidental details of a text with placeholders (no case or whitespace folding)."""
    # A later rule can expose text to an earlier one ("1www.x" becomes "<num>www.x", now a URL at a
    # word start); repeating to a fixed point is what makes normalising a key leave it unchanged.
    for _ in range(MAX_MASK_ROUNDS):
        masked = _mask_once(text)
        if masked == text:
            break
        text = masked
    return text


def _mask_once(text: str) -> str:
    found: dict[Need, bool] = {}

    def has(need: Need) -> bool:
        if need not in found:
            found[need] = need in text if isinstance(need, str) else need.search(text) is not None
        return found[need]

    masked = text
    for rule, needs in _RULES:
        if all(has(need) for need in needs):
            masked = rule.pattern.sub(rule.replacement, masked)
    return _PLACEHOLDER_RUN.sub(r"<\1>", masked)


def _mask_once_every_rule(text: str) -> str:
    """`_mask_once` without the needs check (tests compare the two)."""
    for rule in MASK_RULES:
        text = rule.pattern.sub(rule.replacement, text)
    return _PLACEHOLDER_RUN.sub(r"<\1>", text)


def normalize_observation(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """Turn a raw observation into a short, lowercase situation key with incidental details masked."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    key = _normalize_once(text, max_chars)
    # Cutting can expose a new match ("a/b/c.txt" cut to "a/b/..."); a key short enough to fit is
    # cheap to normalise again, and its fixed point is what callers rely on.
    for _ in range(MAX_MASK_ROUNDS):
        again = _normalize_once(key, max_chars)
        if again == key:
            break
        key = again
    return key


def _normalize_once(text: str, max_chars: int) -> str:
    text = _CONTROL.sub("", _ANSI.sub("", text))
    summary = _json_summary(text) if len(text) <= MAX_JSON_CHARS else None
    if summary is not None:
        return _cut(summary, max_chars)
    lines = [line for line in (_normalize_line(piece) for piece in _split_lines(_cap_input(text))) if line]
    return _cut(_select_lines(_collapse_repeats(lines), max_chars), max_chars)


def _cap_input(text: str) -> str:
    if len(text) <= MAX_INPUT_CHARS:
        return text
    half = MAX_INPUT_CHARS // 2
    # Cut at line breaks where there are any, so no half line enters the key.
    head, tail = text[:half], text[-half:]
    head = head[: head.rfind("\n")] if "\n" in head else head
    tail = tail[tail.find("\n") + 1 :] if "\n" in tail else tail
    return f"{head}\n{GAP_MARKER}\n{tail}"


def _split_lines(text: str) -> list[str]:
    # " | " splits too, so that a key read back splits into the lines it was joined from.
    return [piece for line in text.splitlines() for piece in _PIPE_SPLIT.split(line)]


def _normalize_line(line: str) -> str:
    summary = _json_summary(line)
    if summary is not None:
        return summary
    folded = _WHITESPACE.sub(" ", mask_text(line)).strip().lower()
    # Lowercasing can make JSON of what was not ("[TRUE]"); summarise it now, as a second pass would.
    summary = _json_summary(folded)
    return folded if summary is None else summary


def _collapse_repeats(lines: list[str]) -> list[str]:
    collapsed: list[str] = []
    count = 0
    for index, line in enumerate(lines):
        count += 1
        if index + 1 < len(lines) and lines[index + 1] == line:
            continue
        marker = f"x{count}" if count < REPEAT_EXACT_BELOW else f"x{REPEAT_EXACT_BELOW}+"
        collapsed.append(line if count == 1 else f"{line} ({marker})")
        count = 0
    return collapsed


def _select_lines(lines: list[str], max_chars: int) -> str:
    joined = LINE_SEPARATOR.join(lines)
    if len(joined) <= max_chars or len(lines) < 2:
        return joined
    # Each kept line gets at most a quarter of the budget so that head, error and tail all fit.
    per_line = max_chars // min(len(lines), 4)
    clipped = [_cut(line, per_line) for line in lines]
    last = len(lines) - 1
    signal = [i for i, line in enumerate(lines) if _SIGNAL.search(line)][:MAX_SIGNAL_LINES]
    head = list(range(1, min(HEAD_LINES, len(lines))))
    tail = list(range(max(last - TAIL_LINES + 1, 0), last))
    chosen: list[int] = []
    for index in dict.fromkeys([0, last, *signal, *head, *tail]):
        trial = sorted([*chosen, index])
        if len(_assemble(clipped, trial)) <= max_chars:
            chosen = trial
    return _assemble(clipped, chosen)


def _assemble(lines: list[str], indices: list[int]) -> str:
    parts: list[str] = []
    previous = -1
    for index in [*indices, len(lines)]:
        pieces = [GAP_MARKER] if index > previous + 1 else []
        pieces += [lines[index]] if index < len(lines) else []
        for piece in pieces:
            # Equal neighbours (a clipped line beside its twin, a gap beside a "..." line) would read
            # back as a repeat and collapse into "(x2)"; one of them says the same.
            if not parts or piece != parts[-1]:
                parts.append(piece)
        previous = index
    return LINE_SEPARATOR.join(parts)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return text[:limit]
    head = text[: limit - len(ELLIPSIS)]
    if not text[len(head)].isspace():
        space = head.rfind(" ")
        # Without a space in the latter half, a word boundary would waste too much of the budget.
        if space >= len(head) // 2:
            head = head[:space]
    return head.rstrip(" |") + ELLIPSIS


def _json_summary(text: str) -> str | None:
    stripped = text.strip()
    if not stripped or (stripped[0], stripped[-1]) not in {("{", "}"), ("[", "]")}:
        return None
    try:
        value = json.loads(stripped)
    except (ValueError, RecursionError):
        return None
    # Joining keys and values can line up text for a rule ("a/" and "b.py"), so the whole is masked too.
    return _WHITESPACE.sub(" ", mask_text(_json_shape(value, 0))).strip().lower()


def _json_shape(value: object, depth: int) -> str:
    if isinstance(value, dict):
        if not value:
            return "{}"
        if depth >= JSON_MAX_DEPTH:
            return "{...}"
        items = [
            f"{_json_text(str(key))}: {_json_shape(item, depth + 1)}"
            for key, item in list(value.items())[:JSON_MAX_KEYS]
        ]
        if len(value) > JSON_MAX_KEYS:
            items.append("...")
        return "{" + ", ".join(items) + "}"
    if isinstance(value, list):
        if not value:
            return "[]"
        if depth >= JSON_MAX_DEPTH:
            return "[...]"
        return f"[{_length_bucket(len(value))} of {_json_shape(value[0], depth + 1)}]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return "<num>"
    if value is None:
        return "null"
    return _json_text(str(value))


def _json_text(text: str) -> str:
    # A " | " inside a value would read back as a line break; ";" keeps the key idempotent.
    folded = _PIPE_SPLIT.sub(" ; ", _WHITESPACE.sub(" ", mask_text(text)).strip())
    return _cut(folded, JSON_MAX_STRING) if folded else '""'


def _length_bucket(length: int) -> str:
    if length == 1:
        return "one"
    return "few" if length < 10 else "many"
