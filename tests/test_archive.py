"""Skill packages from zips, uploaded files and folders: happy paths, every refusal, and fuzzing."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.errors import InvalidArchive
from app.governance.archive import ArchiveLimits, SkillPackage, from_files, from_path, from_zip, to_zip

SKILL = "---\nname: helper\ndescription: Helps.\n---\n\n# Helper\n"


def make_zip(
    members: Iterable[tuple[str | zipfile.ZipInfo, bytes]], *, method: int = zipfile.ZIP_DEFLATED
) -> bytes:
    """A zip of (name or ZipInfo, data) members, duplicates allowed."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Duplicate name" is what some tests want
        with zipfile.ZipFile(buffer, "w", compression=method) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return buffer.getvalue()


def patch(data: bytes, *, local: int, central: int, fmt: str, value: int) -> bytes:
    """`data` with a field of the first member's local and central headers overwritten."""
    out = bytearray(data)
    struct.pack_into(fmt, out, data.index(b"PK\x03\x04") + local, value)
    struct.pack_into(fmt, out, data.index(b"PK\x01\x02") + central, value)
    return bytes(out)


def refused(code: str, call: object, *args: object, **kwargs: object) -> InvalidArchive:
    """The InvalidArchive that `call(*args)` raises, checked to carry `code`."""
    assert callable(call)
    with pytest.raises(InvalidArchive) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value.message
    return caught.value


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            target.write_text(content, encoding="utf-8")
        else:
            target.write_bytes(content)
    return root


class TestFromZip:
    def test_reads_one_skill_folder_as_exported(self) -> None:
        data = make_zip([("helper/SKILL.md", SKILL.encode()), ("helper/scripts/run.sh", b"echo hi\n")])
        assert from_zip(data) == [
            SkillPackage(folder="helper", skill_md=SKILL, files={"scripts/run.sh": "echo hi\n"})
        ]

    def test_reads_skill_md_at_the_root_and_strips_its_bom(self) -> None:
        data = make_zip([("SKILL.md", b"\xef\xbb\xbf" + SKILL.encode()), ("notes.md", b"\xef\xbb\xbfhi")])
        [package] = from_zip(data)
        assert package.folder == ""
        assert package.skill_md == SKILL
        assert package.files == {"notes.md": "\ufeffhi"}

    def test_every_outermost_skill_folder_is_a_package(self) -> None:
        data = make_zip([
            ("pack/a/SKILL.md", b"A"),
            ("pack/a/examples/SKILL.md", b"nested"),
            ("pack/b/SKILL.md", b"B"),
            ("pack/b/ref.md", b"ref"),
            ("pack/README.md", b"outside every skill"),
        ])  # fmt: skip
        assert from_zip(data) == [
            SkillPackage(folder="pack/a", skill_md="A", files={"examples/SKILL.md": "nested"}),
            SkillPackage(folder="pack/b", skill_md="B", files={"ref.md": "ref"}),
        ]

    def test_stored_members_and_lowercase_skill_md(self) -> None:
        data = make_zip([("s/skill.md", b"S"), ("s/a.txt", b"a")], method=zipfile.ZIP_STORED)
        assert from_zip(data) == [SkillPackage(folder="s", skill_md="S", files={"a.txt": "a"})]

    def test_skips_directories_and_os_litter(self) -> None:
        data = make_zip([
            ("s/", b""),
            ("s/sub/", b""),
            ("s/SKILL.md", b"S"),
            ("__MACOSX/s/._SKILL.md", b"\x00\x05\x16\x07binary"),
            ("s/.DS_Store", b"\x00\x00\x00\x01Bud1"),
            ("s/Thumbs.db", b"\xd0\xcf\x11\xe0"),
            ("s/__pycache__/x.cpython-311.pyc", b"\x00\x01"),
        ])  # fmt: skip
        assert from_zip(data) == [SkillPackage(folder="s", skill_md="S", files={})]

    @pytest.mark.parametrize("folder", ["", "helper", "pack/helper"])
    def test_to_zip_round_trips(self, folder: str) -> None:
        package = SkillPackage(folder=folder, skill_md=SKILL, files={"a.md": "a", "sub/SKILL.md": "n"})
        back = folder.rpartition("/")[2] or "skill"
        data = to_zip(package)
        assert from_zip(data) == [SkillPackage(folder=back, skill_md=SKILL, files=package.files)]

    def test_paths_come_back_nfc(self) -> None:
        data = make_zip([("s/SKILL.md", b"S"), ("s/cafe\u0301.md", b"x")])
        assert from_zip(data)[0].files == {"caf\u00e9.md": "x"}


class TestZipRefusals:
    @pytest.mark.parametrize("data", [b"", b"hello, not a zip", b"PK\x03\x04" + b"\x00" * 40])
    def test_not_a_zip(self, data: bytes) -> None:
        refused("not_a_zip", from_zip, data)

    def test_truncated_zip(self) -> None:
        data = make_zip([("s/SKILL.md", SKILL.encode() * 50)])
        refused("not_a_zip", from_zip, data[: len(data) // 2])

    def test_bad_crc(self) -> None:
        data = patch(make_zip([("s/SKILL.md", b"S")]), local=14, central=16, fmt="<I", value=12345)
        refused("not_a_zip", from_zip, data)

    def test_unsupported_compression(self) -> None:
        refused("not_a_zip", from_zip, make_zip([("s/SKILL.md", b"S")], method=zipfile.ZIP_BZIP2))

    def test_encrypted_member(self) -> None:
        data = patch(make_zip([("s/SKILL.md", b"S")]), local=6, central=8, fmt="<H", value=0x1)
        error = refused("encrypted_archive", from_zip, data)
        assert error.status_code == 422
        assert error.detail == {"path": "s/SKILL.md"}

    def test_archive_too_large(self) -> None:
        data = make_zip([("s/SKILL.md", SKILL.encode())])
        error = refused("archive_too_large", from_zip, data, limits=ArchiveLimits(max_archive_bytes=50))
        assert error.status_code == 413

    def test_file_too_large(self) -> None:
        data = make_zip([("s/SKILL.md", b"S"), ("s/big.md", b"x" * 2000)], method=zipfile.ZIP_STORED)
        error = refused("file_too_large", from_zip, data, limits=ArchiveLimits(max_file_bytes=1000))
        assert error.status_code == 413
        assert error.detail == {"path": "s/big.md", "limit": 1000}

    def test_total_too_large(self) -> None:
        data = make_zip([("s/SKILL.md", b"S")] + [(f"s/{i}.md", b"x" * 400) for i in range(5)])
        error = refused("archive_too_large", from_zip, data, limits=ArchiveLimits(max_total_bytes=1000))
        assert error.status_code == 413

    def test_zip_bomb(self) -> None:
        data = make_zip([("s/SKILL.md", b"S"), ("s/bomb.md", bytes(50_000_000))])
        assert len(data) < 100_000
        error = refused("zip_bomb", from_zip, data)
        assert error.status_code == 413

    def test_zip_bomb_spread_over_many_small_members(self) -> None:
        members = [("s/SKILL.md", b"S")] + [(f"s/{i}.md", b" " * 900_000) for i in range(5)]
        refused("zip_bomb", from_zip, make_zip(members))

    def test_bomb_whose_header_lies_about_its_size(self) -> None:
        data = make_zip([("s/bomb.md", bytes(50_000_000)), ("s/SKILL.md", b"S")])
        lying = patch(data, local=22, central=24, fmt="<I", value=10)
        assert zipfile.ZipFile(io.BytesIO(lying)).getinfo("s/bomb.md").file_size == 10
        refused("zip_bomb", from_zip, lying)

    def test_big_file_whose_header_lies_about_its_size(self) -> None:
        text = os.urandom(1_500_000).hex().encode()  # 3 MB that deflates only about 2:1
        data = patch(
            make_zip([("big.md", text), ("SKILL.md", b"S")]), local=22, central=24, fmt="<I", value=10
        )
        refused("file_too_large", from_zip, data)

    def test_too_many_files(self) -> None:
        data = make_zip([("s/SKILL.md", b"S")] + [(f"s/{i}.md", b"x") for i in range(3)])
        error = refused("too_many_files", from_zip, data, limits=ArchiveLimits(max_files=3))
        assert error.detail == {"folder": "s", "count": 4, "limit": 3}

    @pytest.mark.parametrize(
        "name",
        [
            "/etc/passwd",
            "../evil.md",
            "s/../../evil.md",
            "s/./a.md",
            "s//a.md",
            "s\\..\\evil.md",
            "C:/Windows/evil.md",
            "C:evil.md",
            "s/a.md:stream",
            "s/a\nb.md",
            "s/\u202egnp.md",
            "s/" + "a" * 600,
            "s/" + "d/" * 8 + "deep.md",
        ],
    )
    def test_unsafe_path(self, name: str) -> None:
        error = refused("unsafe_path", from_zip, make_zip([("s/SKILL.md", b"S"), (name, b"x")]))
        assert len(error.detail["path"]) <= 203

    def test_nul_in_a_member_name(self) -> None:
        # zipfile cuts names at NUL when writing, so write a stand-in and patch the bytes.
        data = make_zip([("s/SKILL.md", b"S"), ("s/aXb.md", b"x")]).replace(b"s/aXb.md", b"s/a\x00b.md")
        refused("unsafe_path", from_zip, data)

    def test_symlink_member(self) -> None:
        link = zipfile.ZipInfo("s/passwd")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        error = refused(
            "symlink_in_archive", from_zip, make_zip([("s/SKILL.md", b"S"), (link, b"/etc/passwd")])
        )
        assert error.detail == {"path": "s/passwd"}

    @pytest.mark.parametrize(
        "names",
        [
            ("s/a.md", "s/a.md"),
            ("s/caf\u00e9.md", "s/cafe\u0301.md"),
            ("s/SKILL.md", "s/skill.md"),
            ("s/a", "s/a/b.md"),
            ("s/a/b.md", "s/a"),
        ],
    )
    def test_duplicate_path(self, names: tuple[str, str]) -> None:
        members = [("s/SKILL.md", b"S")] if "s/SKILL.md" not in names else []
        refused("duplicate_path", from_zip, make_zip(members + [(name, b"x") for name in names]))

    @pytest.mark.parametrize("data", [b"\x89PNG\r\n\x1a\n\x00\x00", b"caf\xe9 in latin-1"])
    def test_binary_file(self, data: bytes) -> None:
        error = refused("binary_file", from_zip, make_zip([("s/SKILL.md", b"S"), ("s/logo.png", data)]))
        assert "s/logo.png" in error.message
        assert "not supported" in error.message

    def test_no_skill_md(self) -> None:
        refused("no_skill_md", from_zip, make_zip([("s/README.md", b"hi"), ("__MACOSX/SKILL.md", b"x")]))
        refused("no_skill_md", from_zip, make_zip([]))


class TestFromFiles:
    def test_skill_md_at_the_root(self) -> None:
        package = from_files([("SKILL.md", SKILL.encode()), ("scripts/run.py", b"print(1)\n")])
        assert package == SkillPackage(folder="", skill_md=SKILL, files={"scripts/run.py": "print(1)\n"})

    def test_all_under_one_folder(self) -> None:
        package = from_files([("helper/SKILL.md", b"S"), ("helper/a.md", b"a"), ("helper/.DS_Store", b"\0")])
        assert package == SkillPackage(folder="helper", skill_md="S", files={"a.md": "a"})

    @pytest.mark.parametrize(
        "names",
        [("a.md",), ("a/SKILL.md", "b/x.md"), ("a/SKILL.md", "README.md"), ("a/b/SKILL.md", "a/c.md"), ()],
    )
    def test_no_skill_md(self, names: tuple[str, ...]) -> None:
        refused("no_skill_md", from_files, [(name, b"x") for name in names])

    def test_refusals(self) -> None:
        limits = ArchiveLimits(max_file_bytes=10, max_total_bytes=15, max_files=2)
        refused("unsafe_path", from_files, [("SKILL.md", b"S"), ("../x", b"x")])
        refused("duplicate_path", from_files, [("SKILL.md", b"S"), ("Skill.md", b"S")])
        refused("binary_file", from_files, [("SKILL.md", b"S"), ("a.bin", b"\x00")])
        refused("file_too_large", from_files, [("SKILL.md", b"x" * 11)], limits=limits)
        refused("archive_too_large", from_files, [("SKILL.md", b"x" * 9), ("a", b"x" * 9)], limits=limits)
        refused("too_many_files", from_files, [("SKILL.md", b"S"), ("a", b""), ("b", b"")], limits=limits)


class TestFromPath:
    def test_a_skill_folder(self, tmp_path: Path) -> None:
        root = write(
            tmp_path / "helper", {"SKILL.md": SKILL, "scripts/run.sh": "echo hi\n", ".git/HEAD": b"\0"}
        )
        assert from_path(root) == [
            SkillPackage(folder="", skill_md=SKILL, files={"scripts/run.sh": "echo hi\n"})
        ]

    def test_a_folder_of_skill_folders(self, tmp_path: Path) -> None:
        write(tmp_path, {
            "a/SKILL.md": "A",
            "a/ref/SKILL.md": "nested",
            "group/b/SKILL.md": "B",
            "group/b/notes.md": "n",
            "README.md": "outside",
        })  # fmt: skip
        assert from_path(tmp_path) == [
            SkillPackage(folder="a", skill_md="A", files={"ref/SKILL.md": "nested"}),
            SkillPackage(folder="group/b", skill_md="B", files={"notes.md": "n"}),
        ]

    def test_a_zip_file(self, tmp_path: Path) -> None:
        target = tmp_path / "helper.zip"
        target.write_bytes(make_zip([("helper/SKILL.md", b"S")]))
        assert from_path(target) == [SkillPackage(folder="helper", skill_md="S", files={})]
        refused("archive_too_large", from_path, target, limits=ArchiveLimits(max_archive_bytes=10))

    def test_a_file_that_is_not_a_zip(self, tmp_path: Path) -> None:
        refused("not_a_zip", from_path, write(tmp_path, {"SKILL.md": SKILL}) / "SKILL.md")

    @pytest.mark.parametrize("kind", ["file", "folder"])
    def test_symlinks_are_refused(self, tmp_path: Path, kind: str) -> None:
        outside = write(tmp_path / "outside", {"secret.md": "secret"})
        root = write(tmp_path / "skill", {"SKILL.md": SKILL})
        target = outside / "secret.md" if kind == "file" else outside
        (root / "link").symlink_to(target)
        error = refused("symlink_in_archive", from_path, root)
        assert error.detail == {"path": "link"}

    def test_symlinks_in_skipped_folders_are_ignored(self, tmp_path: Path) -> None:
        root = write(tmp_path / "skill", {"SKILL.md": SKILL})
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / ".venv" / "bin" / "python").symlink_to("/usr/bin/python3")
        assert from_path(root)[0].files == {}

    def test_limits_and_binaries(self, tmp_path: Path) -> None:
        root = write(tmp_path / "skill", {"SKILL.md": SKILL, "big.md": "x" * 2000})
        refused("file_too_large", from_path, root, limits=ArchiveLimits(max_file_bytes=1000))
        refused("too_many_files", from_path, root, limits=ArchiveLimits(max_files=1))
        write(root, {"logo.png": b"\x89PNG\x00"})
        refused("binary_file", from_path, root)

    def test_no_skill_md(self, tmp_path: Path) -> None:
        refused("no_skill_md", from_path, write(tmp_path, {"README.md": "hi"}))


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SMALL = ArchiveLimits(max_archive_bytes=200_000, max_total_bytes=50_000, max_file_bytes=20_000, max_files=20)
NAMES = st.one_of(
    st.sampled_from(
        ["SKILL.md", "skill.md", "s/SKILL.md", "s/a.md", "../x", "/abs", "a//b", "C:x", "__MACOSX/x"]
    ),
    st.lists(
        st.one_of(st.sampled_from(["s", "SKILL.md", "..", ".", "", ".DS_Store"]), st.text(max_size=6)),
        min_size=1,
        max_size=4,
    ).map("/".join),
).filter(lambda name: name.split("\x00")[0] != "")  # zipfile cannot write an empty name


def is_safe(path: str) -> bool:
    pure = PurePosixPath(path)
    return (
        bool(path)
        and not pure.is_absolute()
        and str(pure) == path
        and all(part not in ("", ".", "..") for part in path.split("/"))
        and not any(char in path for char in "\\:\x00\n\r")
    )


class TestFuzz:
    @FUZZ
    @given(st.binary(max_size=2000))
    def test_random_bytes_only_raise_invalid_archive(self, data: bytes) -> None:
        try:
            from_zip(data, limits=SMALL)
        except InvalidArchive:
            pass

    @FUZZ
    @given(
        st.binary(max_size=300), st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=8)
    )
    def test_corrupted_zips_only_raise_invalid_archive(self, tail: bytes, at: int, junk: bytes) -> None:
        data = bytearray(make_zip([("s/SKILL.md", SKILL.encode()), ("s/a.md", tail)]))
        at %= len(data)
        data[at : at + len(junk)] = junk
        try:
            from_zip(bytes(data), limits=SMALL)
        except InvalidArchive:
            pass

    @FUZZ
    @given(
        st.lists(st.tuples(NAMES, st.one_of(st.binary(max_size=50), st.text(max_size=50).map(str.encode)))),
        st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]),
    )
    def test_random_zips_give_safe_paths_or_invalid_archive(
        self, members: list[tuple[str, bytes]], method: int
    ) -> None:
        try:
            packages = from_zip(make_zip(members, method=method), limits=SMALL)
        except InvalidArchive:
            return
        assert packages
        for package in packages:
            assert package.folder == "" or is_safe(package.folder)
            assert all(is_safe(path) for path in package.files)
            assert all(is_safe(f"{package.folder}/{path}".lstrip("/")) for path in package.files)

    @FUZZ
    @given(st.lists(st.tuples(NAMES, st.binary(max_size=50))))
    def test_random_uploads_give_safe_paths_or_invalid_archive(self, items: list[tuple[str, bytes]]) -> None:
        try:
            package = from_files(items, limits=SMALL)
        except InvalidArchive:
            return
        assert all(is_safe(path) for path in package.files)
