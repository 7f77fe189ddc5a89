"""Uploaded skill packages (a zip, multipart files, a folder) into validated in-memory text files (pure).

Hostile input is refused with `InvalidArchive`, whose `code` says why. Sizes are measured by
streaming decompression in chunks, never taken from zip headers, and reading stops as soon as a
limit is passed. Paths are checked before anything is decompressed; storage is text only.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import stat
import struct
import unicodedata
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from app.errors import InvalidArchive
from app.governance.scanner import SKILL_FILE, SKIP_DIRS

_CHUNK = 64 * 1024
_RATIO_FLOOR = 1_000_000  # the compression ratio is only judged above this many bytes unpacked
_JUNK_DIRS = SKIP_DIRS | {"__MACOSX"}
_JUNK_FILES = frozenset({".DS_Store", "Thumbs.db"})
_BAD_CATEGORIES = frozenset({"Cc", "Cf", "Cs"})  # control, format (bidi, zero-width), surrogate
_LOCAL_HEADER = b"PK\x03\x04"
_ENCRYPTED = 0x1 | 0x40  # traditional and strong encryption flag bits
_TOO_LARGE = frozenset({"archive_too_large", "file_too_large", "zip_bomb"})
_DRIVE = re.compile(r"[A-Za-z]:")
_CORRUPT = (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, EOFError, struct.error,
            zlib.error)  # fmt: skip


@dataclass(frozen=True)
class ArchiveLimits:
    """What an import accepts; the file limits match the scanner's."""

    max_archive_bytes: int = 10_000_000
    max_total_bytes: int = 8_000_000
    max_file_bytes: int = 1_000_000
    max_files: int = 400
    max_ratio: int = 100
    max_path_chars: int = 512
    max_depth: int = 8


@dataclass(frozen=True)
class SkillPackage:
    """One skill as uploaded: its folder name, its SKILL.md and every other file as text."""

    folder: str
    skill_md: str
    files: dict[str, str]


def _refuse(code: str, message: str, **detail: object) -> InvalidArchive:
    return InvalidArchive(message, code=code, status_code=413 if code in _TOO_LARGE else None, detail=detail)


def _safe_path(name: str, limits: ArchiveLimits) -> str:
    """`name` checked as a relative POSIX path and NFC-normalised, or refused as unsafe."""
    problem = None
    parts = name.split("/")
    if len(name) > limits.max_path_chars:
        problem = f"is longer than {limits.max_path_chars} characters"
    elif any(unicodedata.category(char) in _BAD_CATEGORIES for char in name):
        problem = "contains a NUL, control or invisible formatting character"
    elif "\\" in name:
        problem = "contains a backslash; use '/' between folders"
    elif name.startswith("/") or _DRIVE.match(name):
        problem = "is absolute; paths must be relative to the skill folder"
    elif ":" in name:
        problem = "contains ':' (a drive letter or a Windows stream)"
    elif any(part in ("", ".", "..") for part in parts):
        problem = "has an empty, '.' or '..' component"
    elif len(parts) > limits.max_depth:
        problem = f"is nested deeper than {limits.max_depth} folders"
    if problem:
        shown = name[:200] + ("..." if len(name) > 200 else "")
        raise _refuse("unsafe_path", f"The path {shown!r} {problem}.", path=shown)
    return unicodedata.normalize("NFC", name)


def _is_junk(path: str) -> bool:
    parts = path.split("/")
    return parts[-1] in _JUNK_FILES or any(part in _JUNK_DIRS for part in parts[:-1])


def _is_skill_file(path: str) -> bool:
    return posixpath.basename(path).lower() == SKILL_FILE


class _Unique:
    """Refuses a path seen before (after NFC; SKILL.md by case too), or one that is a file and a folder."""

    def __init__(self) -> None:
        self.files: set[str] = set()
        self.folders: set[str] = set()

    def add(self, path: str) -> None:
        """Remember `path`, or refuse it as a duplicate."""
        key = path.lower() if _is_skill_file(path) else path
        parts = path.split("/")
        folders = {"/".join(parts[:i]) for i in range(1, len(parts))}
        if key in self.files or path in self.folders or folders & self.files:
            raise _refuse("duplicate_path", f"The path {path!r} appears twice in the upload.", path=path)
        self.files.add(key)
        self.folders |= folders


def _group(paths: Sequence[str], limits: ArchiveLimits) -> dict[str, list[str]]:
    """Outermost folders holding a SKILL.md -> the paths inside each; refused if there is none."""
    homes = {posixpath.dirname(path) for path in paths if _is_skill_file(path)}
    groups: dict[str, list[str]] = {}
    for path in sorted(paths):
        parts = path.split("/")
        home = next((h for h in ("/".join(parts[:i]) for i in range(len(parts))) if h in homes), None)
        if home is not None:
            groups.setdefault(home, []).append(path)
    if not groups:
        raise _refuse("no_skill_md", "No SKILL.md found; a skill is a folder with a SKILL.md in it.")
    _check_counts(groups, limits)
    return dict(sorted(groups.items()))


def _check_counts(groups: dict[str, list[str]], limits: ArchiveLimits) -> None:
    for folder, members in groups.items():
        if len(members) > limits.max_files:
            raise _refuse(
                "too_many_files",
                f"The skill {folder or '(root)'!r} has {len(members)} files; at most {limits.max_files}.",
                folder=folder,
                count=len(members),
                limit=limits.max_files,
            )


def _text(path: str, data: bytes) -> str:
    try:
        if b"\x00" in data:
            raise UnicodeError
        return data.decode("utf-8")
    except UnicodeError:
        raise _refuse(
            "binary_file",
            f"{path!r} is a binary file (not UTF-8 text); binary files are not supported, remove it.",
            path=path,
        ) from None


def _package(folder: str, members: dict[str, bytes]) -> SkillPackage:
    """The package of `folder` from its members (paths relative to the upload's root)."""
    skill_md, files = "", {}
    for path, data in sorted(members.items()):
        inner = path[len(folder) + 1 :] if folder else path
        text = _text(path, data)
        if inner.lower() == SKILL_FILE:
            skill_md = text.removeprefix("\ufeff")
        else:
            files[inner] = text
    return SkillPackage(folder=folder, skill_md=skill_md, files=files)


class _Tally:
    """Bytes unpacked against bytes packed: of one file (counted into `whole` too), or of the upload."""

    def __init__(self, limits: ArchiveLimits, whole: _Tally | None = None) -> None:
        self.limits, self.whole, self.size, self.packed = limits, whole, 0, 0

    def add(self, path: str, size: int, packed: int) -> None:
        """Count `size` bytes unpacked from `packed`; refuse as soon as a limit is passed."""
        self.size, self.packed = self.size + size, self.packed + packed
        where, ratio = ("the upload" if self.whole is None else repr(path)), self.limits.max_ratio
        if self.size > _RATIO_FLOOR and self.size > ratio * max(self.packed, 1):
            message = f"{where} unpacks to over {ratio} times its packed size; refused as a zip bomb."
            raise _refuse("zip_bomb", message, path=path, limit=ratio)
        limit = self.limits.max_total_bytes if self.whole is None else self.limits.max_file_bytes
        if self.size > limit:
            code = "archive_too_large" if self.whole is None else "file_too_large"
            raise _refuse(
                code,
                f"{where} is over {limit} bytes uncompressed; shrink or split it.",
                path=path,
                limit=limit,
            )
        if self.whole is not None:
            self.whole.add(path, size, packed)


def _unpack(data: bytes, info: zipfile.ZipInfo, path: str, whole: _Tally) -> bytes:
    """The member's bytes, decompressed in chunks from its raw data; sizes in headers are ignored."""
    offset = info.header_offset
    if offset < 0 or data[offset : offset + 4] != _LOCAL_HEADER:
        raise _refuse("not_a_zip", f"The zip is corrupt: no local header for {path!r}.", path=path)
    name_len, extra_len = struct.unpack_from("<HH", data, offset + 26)
    start = offset + 30 + name_len + extra_len
    raw = data[start : start + info.compress_size]
    tally, out = _Tally(whole.limits, whole), bytearray()
    if info.compress_type == zipfile.ZIP_STORED:
        for pos in range(0, len(raw), _CHUNK):
            piece = raw[pos : pos + _CHUNK]
            tally.add(path, len(piece), len(piece))
            out += piece
    elif info.compress_type == zipfile.ZIP_DEFLATED:
        inflate, pos, tail = zlib.decompressobj(-zlib.MAX_WBITS), 0, b""
        while not inflate.eof:
            if not tail:
                tail, pos = raw[pos : pos + _CHUNK], pos + _CHUNK
            fed = len(tail)
            piece = inflate.decompress(tail, _CHUNK)
            tail = inflate.unconsumed_tail
            tally.add(path, len(piece), fed - len(tail))
            out += piece
            if not piece and fed == len(tail):
                break
        if not inflate.eof:
            raise _refuse("not_a_zip", f"The zip is corrupt: {path!r} is truncated.", path=path)
    else:
        raise _refuse(
            "not_a_zip",
            f"{path!r} uses zip compression method {info.compress_type}; re-zip with deflate.",
            path=path,
        )
    if len(out) != info.file_size or zlib.crc32(out) != info.CRC:
        raise _refuse("not_a_zip", f"The zip is corrupt: {path!r} fails its size or CRC check.", path=path)
    return bytes(out)


def from_zip(data: bytes, *, limits: ArchiveLimits = ArchiveLimits()) -> list[SkillPackage]:
    """Every skill in a zip: SKILL.md at its root, or each outermost folder holding one."""
    if len(data) > limits.max_archive_bytes:
        raise _refuse(
            "archive_too_large",
            f"The zip is {len(data)} bytes; the limit is {limits.max_archive_bytes}.",
            size=len(data),
            limit=limits.max_archive_bytes,
        )
    try:
        return _read_zip(data, limits)
    except _CORRUPT as exc:
        raise _refuse("not_a_zip", f"This is not a readable zip file ({exc}).") from exc


def _read_zip(data: bytes, limits: ArchiveLimits) -> list[SkillPackage]:
    infos: dict[str, zipfile.ZipInfo] = {}
    unique = _Unique()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            if info.orig_filename.endswith("/"):
                continue
            path = _safe_path(info.orig_filename, limits)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise _refuse("symlink_in_archive", f"{path!r} is a symlink; zip the file itself.", path=path)
            if info.flag_bits & _ENCRYPTED:
                raise _refuse(
                    "encrypted_archive", f"{path!r} is encrypted; zip it without a password.", path=path
                )
            if not _is_junk(path):
                unique.add(path)
                infos[path] = info
    whole = _Tally(limits)
    return [
        _package(folder, {p: _unpack(data, infos[p], p, whole) for p in paths})
        for folder, paths in _group(list(infos), limits).items()
    ]


def from_files(
    items: Sequence[tuple[str, bytes]], *, limits: ArchiveLimits = ArchiveLimits()
) -> SkillPackage:
    """One skill from uploaded (relative path, bytes) pairs: SKILL.md at the root or under one top folder."""
    members: dict[str, bytes] = {}
    unique, whole = _Unique(), _Tally(limits)
    for name, data in items:
        path = _safe_path(name, limits)
        if _is_junk(path):
            continue
        unique.add(path)
        _Tally(limits, whole).add(path, len(data), len(data))
        members[path] = data
    top = min(members, default="").split("/")[0]
    inside = [path[len(top) + 1 :] for path in members if path.startswith(top + "/")]
    if any(path.lower() == SKILL_FILE for path in members):
        folder = ""
    elif len(inside) == len(members) and any(path.lower() == SKILL_FILE for path in inside):
        folder = top
    else:
        raise _refuse(
            "no_skill_md",
            "No SKILL.md found; send it at the root, or every file under one folder with SKILL.md in it.",
        )
    _check_counts({folder: list(members)}, limits)
    return _package(folder, members)


def from_path(path: Path, *, limits: ArchiveLimits = ArchiveLimits()) -> list[SkillPackage]:
    """Every skill in a .zip file, a skill folder, or a folder of skill folders; symlinks are refused."""
    if path.is_file():
        size = path.stat().st_size
        if size > limits.max_archive_bytes:
            raise _refuse(
                "archive_too_large",
                f"{path.name} is {size} bytes; the limit is {limits.max_archive_bytes}.",
                size=size,
                limit=limits.max_archive_bytes,
            )
        return from_zip(path.read_bytes(), limits=limits)
    found: dict[str, str] = {}
    unique = _Unique()
    for current, dirs, names in os.walk(path, onerror=_raise):
        dirs[:] = sorted(d for d in dirs if d not in _JUNK_DIRS)
        for name in [*dirs, *sorted(names)]:
            full = os.path.join(current, name)
            rel = _safe_path(Path(full).relative_to(path).as_posix(), limits)
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                raise _refuse(
                    "symlink_in_archive", f"{rel!r} is a symlink; copy the file in instead.", path=rel
                )
            if stat.S_ISDIR(mode) or _is_junk(rel):
                continue
            if not stat.S_ISREG(mode):
                raise _refuse("unsafe_path", f"{rel!r} is not a regular file.", path=rel)
            unique.add(rel)
            found[rel] = full
    whole = _Tally(limits)
    return [
        _package(folder, {p: _read(found[p], p, whole) for p in paths})
        for folder, paths in _group(list(found), limits).items()
    ]


def _raise(error: OSError) -> None:
    raise error


def _read(full: str, path: str, whole: _Tally) -> bytes:
    """At most one byte over the file limit of a regular file, never through a symlink."""
    fd = os.open(full, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(whole.limits.max_file_bytes + 1)
    _Tally(whole.limits, whole).add(path, len(data), len(data))
    return data


def to_zip(package: SkillPackage) -> bytes:
    """A package as a zip of one folder (its own name, or `skill`), as `from_zip` reads it back."""
    folder = package.folder.rsplit("/", 1)[-1] or "skill"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{folder}/SKILL.md", package.skill_md.encode("utf-8"))
        for path, text in sorted(package.files.items()):
            archive.writestr(f"{folder}/{path}", text.encode("utf-8"))
    return buffer.getvalue()
