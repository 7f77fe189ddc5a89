"""The SKILL.md format: render, parse, validate, hash, diff, patch, write (pure, plus tmp folders)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from skills_ref.parser import parse_frontmatter  # type: ignore[import-untyped]
from skills_ref.validator import validate as reference_validate  # type: ignore[import-untyped]

from app.skill_md import (
    EVIDENCE,
    MAX_BODY_TOKENS,
    PITFALLS,
    PROCEDURE,
    WHEN_TO_USE,
    PatchError,
    PatchOp,
    Section,
    SectionPatch,
    SkillDocument,
    SkillFormatError,
    apply_patches,
    changed_share,
    content_hash,
    estimate_tokens,
    parse,
    render,
    slugify,
    unified_diff,
    validate,
    write_folder,
)

TRICKY = "Use when: the task says \"boil\" # not a comment\n--- and 'quotes', café ☕ 😀 \\ \t end"


def make_doc(**overrides: object) -> SkillDocument:
    fields: dict[str, object] = {
        "name": "boil-water",
        "description": "Boil water on a stove. Use when a task asks to heat or boil a liquid.",
        "metadata": {"level": "1", "domain": "scienceworld", "evidence_success": "12"},
        "sections": (
            Section(WHEN_TO_USE, "- The task names water and heat."),
            Section(PROCEDURE, "1. focus on <task:object>\n2. activate stove\n3. wait"),
            Section(PITFALLS, "- Do not pick up the pot while it is hot."),
            Section(EVIDENCE, "12 successes, 2 failures."),
        ),
    }
    fields.update(overrides)
    return SkillDocument(**fields)  # type: ignore[arg-type]


ROUND_TRIP_DOCS = [
    make_doc(),
    make_doc(title="Boil Water Safely"),
    make_doc(description=TRICKY, metadata={"note": TRICKY, "we ird key": "x", "empty": ""}),
    make_doc(metadata={"yes": "yes", "null": "null", "num": "1.0", "oct": "007", "tilde": "~"}),
    make_doc(metadata={}, sections=()),
    make_doc(
        sections=(
            Section("", "Text under the title, before any section."),
            Section(PROCEDURE, "```bash\n## not a heading\n# nor this\n```\n\n---\n\nafter a rule"),
            Section("Notes: extra", "   indented code kept\n\n  * nested"),
        )
    ),
    make_doc(name="x", description=" leading and trailing spaces ", license="MIT", allowed_tools="Bash Read"),
    make_doc(compatibility="Needs python3 >= 3.11: and bash", extra={"version": "1.0.0"}),
]


class TestRoundTrip:
    @pytest.mark.parametrize("doc", ROUND_TRIP_DOCS)
    def test_parse_inverts_render(self, doc: SkillDocument) -> None:
        """What render writes, parse reads back unchanged, tricky strings included."""
        assert parse(render(doc)) == doc

    @pytest.mark.parametrize("doc", ROUND_TRIP_DOCS)
    def test_reference_parser_reads_the_same_frontmatter(self, doc: SkillDocument) -> None:
        """skills_ref's strictyaml reads exactly the values we meant to write."""
        metadata, _ = parse_frontmatter(render(doc))
        assert metadata["name"] == doc.name
        assert metadata["description"] == doc.description
        assert metadata.get("metadata", {}) == dict(doc.metadata)

    def test_render_is_deterministic_and_sorts_metadata(self) -> None:
        """Metadata order does not change the bytes; the text ends with one newline."""
        a = render(make_doc(metadata={"b": "2", "a": "1"}))
        b = render(make_doc(metadata={"a": "1", "b": "2"}))
        assert a == b
        assert a.index("  a: 1") < a.index("  b: 2")
        assert a.endswith("\n") and not a.endswith("\n\n")

    def test_render_layout(self) -> None:
        """Frontmatter, `# title` defaulting to the name, then `## section` blocks."""
        text = render(make_doc(sections=(Section(PROCEDURE, "do it"),)))
        assert text.startswith("---\nname: boil-water\n")
        assert "\n---\n\n# boil-water\n\n## Procedure\n\ndo it\n" in text

    def test_no_triple_hyphen_in_frontmatter(self) -> None:
        """The reference splits on the first `---`s, so a value may never contain one."""
        text = render(make_doc(description="a --- b ---- c", metadata={"k---": "----"}))
        frontmatter = text.split("\n---\n", 1)[0].removeprefix("---\n")
        assert "---" not in frontmatter
        assert parse(text).description == "a --- b ---- c"


class TestParse:
    def test_hand_written_file(self) -> None:
        """Flow-style lists, CRLF, a BOM, preamble text and `##` headings are all read."""
        text = (
            "\ufeff---\r\nname: pdf\r\ndescription: Work with PDFs\r\nallowed-tools: [Bash, Read]\r\n"
            "version: 2\r\nmetadata: {author: me, tags: [a, b]}\r\n---\r\n"
            "Intro before the title.\r\n\r\n## Usage\r\nrun it\r\n\r\n### Sub\r\nmore\r\n## Notes  \r\n"
        )
        doc = parse(text)
        assert doc.allowed_tools == "Bash Read"
        assert doc.extra == {"version": "2"}
        assert doc.metadata == {"author": "me", "tags": "a, b"}
        assert doc.title == ""
        assert doc.sections == (
            Section("", "Intro before the title."),
            Section("Usage", "run it\n\n### Sub\nmore"),
            Section("Notes", ""),
        )

    def test_title_line_is_read_and_name_title_means_none(self) -> None:
        """`# Title` becomes the title; a title equal to the name reads back as no title."""
        base = "---\nname: a\ndescription: d\n---\n"
        assert parse(base + "# Nice Title\n\n## S\nx\n").title == "Nice Title"
        assert parse(base + "# a\n").title == ""

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("# no frontmatter\n", "must start with"),
            ("---\nname: a\ndescription: d\n", "not closed"),
            ("---\nname: [a\n---\n", "not valid YAML"),
            ("---\n- a\n- b\n---\n", "mapping"),
            ("---\n---\n", "mapping"),
            ("---\ndescription: d\n---\n", "no 'name'"),
            ("---\nname: a\n---\n", "no 'description'"),
            ("---\nname: [a]\ndescription: d\n---\n", "'name' must be a string"),
            ("---\nname: a\ndescription: d\nmetadata: text\n---\n", "'metadata' must be a mapping"),
        ],
    )
    def test_broken_frontmatter_raises(self, text: str, message: str) -> None:
        """Missing or broken frontmatter is a SkillFormatError that says what is wrong."""
        with pytest.raises(SkillFormatError, match=message):
            parse(text)

    def test_format_error_is_a_value_error(self) -> None:
        """Callers that catch ValueError catch it too."""
        assert issubclass(SkillFormatError, ValueError)
        assert issubclass(PatchError, ValueError)


def agentskills_validate(folder: Path) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).parent / "agentskills"
    return subprocess.run([str(cli), "validate", str(folder)], capture_output=True, text=True, check=False)


class TestReferenceValidator:
    def test_written_folder_passes_reference_validate(self, tmp_path: Path) -> None:
        """The reference validator accepts our rendering of a tricky document."""
        doc = make_doc(description=TRICKY.replace("\n", " "), metadata={"note": TRICKY, "level": "2"})
        folder = write_folder(tmp_path, doc, {"scripts/run.sh": "#!/bin/sh\necho hi\n"})
        assert folder == tmp_path / "boil-water"
        assert reference_validate(folder) == []
        assert (folder / "scripts" / "run.sh").read_text() == "#!/bin/sh\necho hi\n"

    def test_written_folder_passes_agentskills_cli(self, tmp_path: Path) -> None:
        """The `agentskills validate` command exits 0 on a folder we wrote."""
        folder = write_folder(tmp_path, make_doc(description=TRICKY))
        result = agentskills_validate(folder)
        assert result.returncode == 0, result.stderr
        assert "Valid skill" in result.stdout

    def test_cli_rejects_a_bad_name(self, tmp_path: Path) -> None:
        """The CLI check can fail: an uppercase name does not pass."""
        folder = write_folder(tmp_path, make_doc(name="Bad-Name"))
        result = agentskills_validate(folder)
        assert result.returncode == 1


class TestValidate:
    def test_good_document_has_no_problems(self) -> None:
        """A generated skill with resolvable links is valid."""
        body = (
            "Run [the script](scripts/run.sh), read [notes](./references/x.md#part), "
            "see [the spec](https://agentskills.io), [below](#procedure), [scripts](scripts/) "
            "and [its parent](../boil-liquid/SKILL.md).\n\n[ref]: references/x.md"
        )
        doc = make_doc(sections=(Section(PROCEDURE, body),))
        files = {"scripts/run.sh": "", "references/x.md": ""}
        assert validate(doc, files=files, known_skills={"boil-liquid"}) == []

    @pytest.mark.parametrize("name", ["Boil-Water", "boil--water", "-boil", "boil_water", "a" * 65])
    def test_bad_name(self, name: str) -> None:
        """The reference validator's name rules are reported."""
        problems = validate(make_doc(name=name))
        assert any("name" in p.lower() for p in problems), problems

    def test_too_long_description(self) -> None:
        """Descriptions over 1024 characters are reported."""
        problems = validate(make_doc(description="x" * 1025))
        assert any("1024" in p for p in problems), problems

    def test_empty_description(self) -> None:
        """A blank description is reported."""
        assert any("description" in p for p in validate(make_doc(description="  ")))

    def test_non_string_metadata_value(self) -> None:
        """Metadata values must be strings, though strictyaml would read them back as such."""
        problems = validate(make_doc(metadata={"level": 2, "ok": "x"}))
        assert problems == ["metadata 'level' must map a string to a string, not int"]

    def test_fields_outside_the_spec(self) -> None:
        """Extra frontmatter fields are reported by the reference validator."""
        problems = validate(make_doc(extra={"version": "1"}))
        assert any("Unexpected fields" in p and "version" in p for p in problems), problems

    def test_oversize_body(self) -> None:
        """A body over MAX_BODY_TOKENS is reported; one just under is not."""
        under = make_doc(sections=(Section(PROCEDURE, "word " * 3000),))
        over = make_doc(sections=(Section(PROCEDURE, "word " * MAX_BODY_TOKENS),))
        assert validate(under) == []
        assert any("tokens" in p for p in validate(over))

    def test_broken_file_link(self) -> None:
        """A link to a file the skill does not ship is reported, with the path."""
        doc = make_doc(sections=(Section(PROCEDURE, "Run [it](scripts/missing.sh)."),))
        assert validate(doc, files={"scripts/run.sh": ""}) == [
            "link 'scripts/missing.sh' points to 'scripts/missing.sh', which is not a file of the skill"
        ]
        assert validate(doc, files={"scripts/missing.sh": ""}) == []

    def test_file_link_without_files(self) -> None:
        """With no files given, any link to a file is broken."""
        doc = make_doc(sections=(Section(PROCEDURE, "![diagram](assets/a.png)"),))
        assert len(validate(doc)) == 1

    def test_unknown_skill_link(self) -> None:
        """A link to a sibling skill must name a known one; None skips the check."""
        doc = make_doc(sections=(Section(PROCEDURE, "Then [light it](../light-stove/SKILL.md)."),))
        assert validate(doc, known_skills={"other"}) == [
            "link '../light-stove/SKILL.md' names unknown skill 'light-stove'"
        ]
        assert validate(doc, known_skills={"light-stove"}) == []
        assert validate(doc) == []

    @pytest.mark.parametrize(
        "target", ["../../etc/passwd", "/etc/passwd", "../other/notes.md", "file:///etc/x"]
    )
    def test_links_leaving_the_folder(self, target: str) -> None:
        """Absolute paths, odd schemes and `..` paths other than a sibling SKILL.md are reported."""
        doc = make_doc(sections=(Section(PROCEDURE, f"[x]({target})"),))
        assert len(validate(doc, files={"etc/passwd": ""}, known_skills=set())) == 1

    def test_links_in_code_are_ignored(self) -> None:
        """Link syntax inside code is code, not a reference."""
        body = "```python\nx = a[0](b)\n```\n\nUse `[x](missing.md)` literally."
        assert validate(make_doc(sections=(Section(PROCEDURE, body),))) == []

    def test_heading_inside_a_section_body(self) -> None:
        """A `## ` line in a body would split the section on the next parse."""
        problems = validate(make_doc(sections=(Section(PROCEDURE, "a\n## B\nc"),)))
        assert problems == ["section 'Procedure' holds a '## ' heading, which would split it"]


class TestEstimateTokens:
    def test_rule(self) -> None:
        """The larger of 4/3 per word and a quarter per character, rounded up."""
        assert estimate_tokens("") == 0
        assert estimate_tokens("one two three") == 4  # 3 words -> 4; 13 chars -> 4
        assert estimate_tokens("x" * 400) == 100  # one word, 400 chars
        assert estimate_tokens("a " * 30) == 40  # 30 words -> 40; 60 chars -> 15


class TestSlugify:
    @pytest.mark.parametrize(
        ("text", "slug"),
        [
            ("Boil Water on the Stove!", "boil-water-on-the-stove"),
            ("  --Heat__a  liquid--  ", "heat-a-liquid"),
            ("!!!???", "skill"),
            ("", "skill"),
            ("Café Crème brûlée", "cafe-creme-brulee"),
            ("日本語", "skill"),
            ("step 2: use the 3rd tool", "step-2-use-the-3rd-tool"),
        ],
    )
    def test_cases(self, text: str, slug: str) -> None:
        """Lowercase ASCII words joined by single hyphens, never empty."""
        assert slugify(text) == slug

    def test_long_text_is_cut_at_a_hyphen(self) -> None:
        """A long name is cut at a word boundary within the limit."""
        slug = slugify("alpha beta gamma delta " * 10)
        assert len(slug) <= 64
        assert slug.endswith(("alpha", "beta", "gamma", "delta"))
        assert slugify("abc defgh", max_len=6) == "abc"
        assert slugify("abcdefghij", max_len=4) == "abcd"

    @pytest.mark.parametrize("text", ["Boil Water!", "x" * 200, "a-" * 50, "ÄÖÜ 1 2 3", "?"])
    def test_result_passes_the_reference_name_rules(self, text: str) -> None:
        """Whatever the input, the slug is a valid skill name."""
        assert validate(make_doc(name=slugify(text))) == []


class TestPatches:
    def test_replace(self) -> None:
        """REPLACE swaps one section's body and leaves the rest."""
        doc = make_doc()
        new = apply_patches(doc, [SectionPatch(PatchOp.REPLACE, PITFALLS, "- Wear gloves.\n\n")])
        assert new.section(PITFALLS) == Section(PITFALLS, "- Wear gloves.")
        assert [s.title for s in new.sections] == [s.title for s in doc.sections]
        assert new.sections[0] == doc.sections[0]

    def test_append_to_existing(self) -> None:
        """APPEND adds lines under the existing body."""
        new = apply_patches(make_doc(), [SectionPatch(PatchOp.APPEND, PITFALLS, "- Also this.")])
        assert new.section(PITFALLS) == Section(
            PITFALLS, "- Do not pick up the pot while it is hot.\n- Also this."
        )

    def test_append_creates_at_canonical_position(self) -> None:
        """A missing canonical section is created where SECTION_ORDER puts it."""
        doc = make_doc(sections=(Section(WHEN_TO_USE, "w"), Section("Notes", "n"), Section(EVIDENCE, "e")))
        new = apply_patches(doc, [SectionPatch(PatchOp.APPEND, "pitfalls", "- p")])
        assert [s.title for s in new.sections] == [WHEN_TO_USE, "Notes", PITFALLS, EVIDENCE]
        new = apply_patches(doc, [SectionPatch(PatchOp.APPEND, "Extra", "- x")])
        assert [s.title for s in new.sections][-1] == "Extra"

    def test_add(self) -> None:
        """ADD creates a new section in canonical order."""
        doc = make_doc(sections=(Section(WHEN_TO_USE, "w"), Section(EVIDENCE, "e")))
        new = apply_patches(doc, [SectionPatch(PatchOp.ADD, PROCEDURE, "1. go")])
        assert [s.title for s in new.sections] == [WHEN_TO_USE, PROCEDURE, EVIDENCE]

    def test_delete(self) -> None:
        """DELETE removes the section."""
        new = apply_patches(make_doc(), [SectionPatch(PatchOp.DELETE, EVIDENCE)])
        assert new.section(EVIDENCE) is None
        assert len(new.sections) == 3

    def test_description(self) -> None:
        """DESCRIPTION replaces the frontmatter description and ignores the title."""
        new = apply_patches(make_doc(), [SectionPatch(PatchOp.DESCRIPTION, "", "Heat water.\n")])
        assert new.description == "Heat water."
        assert new.sections == make_doc().sections

    @pytest.mark.parametrize(
        ("patch", "message"),
        [
            (SectionPatch(PatchOp.REPLACE, "Missing", "x"), "no such section"),
            (SectionPatch(PatchOp.DELETE, "Missing"), "no such section"),
            (SectionPatch(PatchOp.ADD, PROCEDURE, "x"), "already exists"),
            (SectionPatch(PatchOp.APPEND, PROCEDURE, "  \n"), "nothing to append"),
            (SectionPatch(PatchOp.DESCRIPTION, "", " "), "description is empty"),
            (SectionPatch(PatchOp.REPLACE, PROCEDURE, "a\n## Sneaky\nb"), "'## ' heading"),
            (SectionPatch(PatchOp.ADD, "Two\nlines", "x"), "several lines"),
        ],
    )
    def test_impossible_patch_raises(self, patch: SectionPatch, message: str) -> None:
        """An impossible patch raises PatchError that says why."""
        with pytest.raises(PatchError, match=message):
            apply_patches(make_doc(), [patch])

    def test_error_names_the_patch_and_its_reason(self) -> None:
        """The message says which patch failed and the reason it was made for."""
        patches = [
            SectionPatch(PatchOp.DELETE, EVIDENCE),
            SectionPatch(PatchOp.DELETE, EVIDENCE, reason="drop stale counts"),
        ]
        with pytest.raises(PatchError, match=r"patch 2 \(delete 'Evidence'\).*drop stale counts"):
            apply_patches(make_doc(), patches)

    def test_order_is_preserved(self) -> None:
        """Patches apply in order: a later one sees an earlier one's result."""
        patches = [
            SectionPatch(PatchOp.DELETE, PITFALLS),
            SectionPatch(PatchOp.ADD, PITFALLS, "- new"),
            SectionPatch(PatchOp.APPEND, PITFALLS, "- newer"),
        ]
        new = apply_patches(make_doc(), patches)
        assert new.section(PITFALLS) == Section(PITFALLS, "- new\n- newer")
        assert [s.title for s in new.sections] == [WHEN_TO_USE, PROCEDURE, PITFALLS, EVIDENCE]
        with pytest.raises(PatchError):
            apply_patches(make_doc(), list(reversed(patches)))

    def test_input_document_is_untouched(self) -> None:
        """Patching returns a new document."""
        doc = make_doc()
        apply_patches(doc, [SectionPatch(PatchOp.DELETE, PROCEDURE)])
        assert doc == make_doc()

    def test_patched_document_round_trips(self) -> None:
        """Patch bodies are normalised so the result still parses back to itself."""
        new = apply_patches(make_doc(), [SectionPatch(PatchOp.REPLACE, PROCEDURE, "\n\n1. a  \n2. b\n\n")])
        assert parse(render(new)) == new


class TestChangedShare:
    def test_identical(self) -> None:
        """No change, no share."""
        assert changed_share(make_doc(), make_doc()) == 0.0
        assert changed_share(make_doc(sections=()), make_doc(sections=())) == 0.0

    def test_small_edit(self) -> None:
        """One line of six changed is a small share."""
        new = apply_patches(make_doc(), [SectionPatch(PatchOp.APPEND, PITFALLS, "- one more")])
        share = changed_share(make_doc(), new)
        assert 0.0 < share < 0.2

    def test_total_rewrite(self) -> None:
        """Nothing in common is a share of one, even with the same section titles."""
        old = make_doc()
        new = make_doc(sections=tuple(Section(s.title, f"entirely new {s.title}") for s in old.sections))
        assert changed_share(old, new) == 1.0

    def test_moving_a_line_between_sections_counts(self) -> None:
        """A line moved to another section is a change."""
        old = make_doc(sections=(Section(PROCEDURE, "a\nb"), Section(PITFALLS, "c")))
        new = make_doc(sections=(Section(PROCEDURE, "a"), Section(PITFALLS, "b\nc")))
        assert 0.0 < changed_share(old, new) < 1.0


class TestUnifiedDiff:
    def test_empty_when_equal(self) -> None:
        """Equal texts have no diff."""
        assert unified_diff("a\nb\n", "a\nb\n") == ""

    def test_shows_changed_lines(self) -> None:
        """Removed lines start with -, added with +, under the labels."""
        diff = unified_diff("a\nb\nc\n", "a\nB\nc\n", old_label="old", new_label="new")
        lines = diff.splitlines()
        assert lines[:2] == ["--- old", "+++ new"]
        assert "-b" in lines and "+B" in lines

    def test_missing_final_newline_is_marked(self) -> None:
        """A last line without newline is flagged as git does, so lines never run together."""
        diff = unified_diff("a\n", "a\nb")
        assert diff.endswith("+b\n\\ No newline at end of file\n")


class TestContentHash:
    def test_stable(self) -> None:
        """Same content and files, same hash, whatever the mapping order."""
        a = content_hash("x", {"a.md": "1", "b.md": "2"})
        assert a == content_hash("x", {"b.md": "2", "a.md": "1"})
        assert len(a) == 64
        assert content_hash("x") == content_hash("x", {})

    def test_changes_with_any_part(self) -> None:
        """A changed SKILL.md, file content or file path gives a different hash."""
        base = content_hash("x", {"a.md": "1"})
        assert content_hash("y", {"a.md": "1"}) != base
        assert content_hash("x", {"a.md": "2"}) != base
        assert content_hash("x", {"b.md": "1"}) != base

    def test_framing_is_unambiguous(self) -> None:
        """Moving bytes between a path and its content, or into SKILL.md, changes the hash."""
        assert content_hash("x", {"ab": "c"}) != content_hash("x", {"a": "bc"})
        assert content_hash("xa", {"b": ""}) != content_hash("x", {"ab": ""})


class TestWriteFolder:
    def test_writes_skill_and_files(self, tmp_path: Path) -> None:
        """SKILL.md is the rendering; files land at their relative paths, bytes as given."""
        doc = make_doc()
        folder = write_folder(tmp_path, doc, {"references/x.md": "line\r\n"})
        assert (folder / "SKILL.md").read_text(encoding="utf-8") == render(doc)
        assert (folder / "references" / "x.md").read_bytes() == b"line\r\n"
        assert parse((folder / "SKILL.md").read_text(encoding="utf-8")) == doc

    @pytest.mark.parametrize("path", ["../x", "a/../../x", "/etc/x", "a\\..\\x", "C:/x", "", "SKILL.md"])
    def test_refuses_paths_outside_the_folder(self, tmp_path: Path, path: str) -> None:
        """Escaping paths are refused before anything is written."""
        with pytest.raises(SkillFormatError):
            write_folder(tmp_path / "root", make_doc(), {"ok.md": "", path: "x"})
        assert not (tmp_path / "root").exists()
        assert not (tmp_path / "x").exists()

    @pytest.mark.parametrize("name", ["", "..", "a/b"])
    def test_refuses_names_that_are_not_a_folder(self, tmp_path: Path, name: str) -> None:
        """The skill name must be one folder name."""
        with pytest.raises(SkillFormatError):
            write_folder(tmp_path, make_doc(name=name))


def test_frontmatter_is_plain_block_yaml() -> None:
    """No flow style, anchors or tags: both PyYAML and strictyaml read it the same."""
    text = render(make_doc(description=TRICKY, metadata={"a": "[1, 2]", "b": "{x: y}", "c": "&anchor"}))
    frontmatter = text.split("\n---\n", 1)[0].removeprefix("---\n")
    assert yaml.load(frontmatter, Loader=yaml.BaseLoader) == parse_frontmatter(text)[0]  # noqa: S506
