"""Side-by-side diffs of two skill versions, file by file (pure)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass

from markupsafe import Markup

from app.admin.render import reveal

CONTEXT_LINES = 3


@dataclass(frozen=True)
class Row:
    """One row of a side-by-side diff: a line on the left, on the right, or both; or a gap."""

    kind: str  # equal / replace / delete / insert / gap
    left_no: int | None = None
    left: Markup = Markup("")
    right_no: int | None = None
    right: Markup = Markup("")


@dataclass(frozen=True)
class FileDiff:
    """The rows of one file's diff; `status` says whether it was added, removed, changed or unchanged."""

    path: str
    status: str
    rows: tuple[Row, ...]


def side_by_side(old: str, new: str, *, context: int = CONTEXT_LINES) -> tuple[Row, ...]:
    """Changed lines of `old` against `new` with `context` lines around them; gaps mark what was skipped."""
    a, b = (old.split("\n") if old else []), (new.split("\n") if new else [])
    rows: list[Row] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for number, group in enumerate(matcher.get_grouped_opcodes(context)):
        if number > 0:
            rows.append(Row("gap"))
        for tag, i1, i2, j1, j2 in group:
            left, right = range(i1, i2), range(j1, j2)
            for k in range(max(len(left), len(right))):
                i = left[k] if k < len(left) else None
                j = right[k] if k < len(right) else None
                kind = (
                    tag
                    if tag == "equal" or (i is not None and j is not None)
                    else ("delete" if j is None else "insert")
                )
                rows.append(
                    Row(
                        kind,
                        None if i is None else i + 1,
                        reveal(a[i]) if i is not None else Markup(""),
                        None if j is None else j + 1,
                        reveal(b[j]) if j is not None else Markup(""),
                    )
                )
    return tuple(rows)


def versions(old: Mapping[str, str], new: Mapping[str, str]) -> list[FileDiff]:
    """Every file of two versions (SKILL.md first), each with its side-by-side rows."""
    paths = sorted(set(old) | set(new), key=lambda p: (p != "SKILL.md", p))
    out = []
    for path in paths:
        if path not in old:
            status = "added"
        elif path not in new:
            status = "removed"
        else:
            status = "unchanged" if old[path] == new[path] else "changed"
        rows = () if status == "unchanged" else side_by_side(old.get(path, ""), new.get(path, ""))
        out.append(FileDiff(path, status, rows))
    return out
