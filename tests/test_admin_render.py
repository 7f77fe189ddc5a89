"""What the admin UI shows of untrusted text: sanitised Markdown, escaped code, invisible Unicode made
visible, charts and diffs that escape their labels, and signed session tokens (no database, no browser)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from markupsafe import Markup
from pydantic import SecretStr

from app.admin import charts, diff, render
from app.admin.auth import SECRET_FILE, Signer, load_secret
from app.config import Settings

HOSTILE_MARKDOWN = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>',
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](vbscript:msgbox(1))",
    "![x](https://evil.example/beacon.png)",
    '![x](x" onerror="alert(1))',
    "<svg onload=alert(1)>",
    "<iframe src=https://evil.example></iframe>",
    "<style>body{display:none}</style>",
    '<div style="background:url(javascript:alert(1))">x</div>',
    "<form action=https://evil.example><button>go</button></form>",
    '<a href="/admin/keys" hx-post="/admin/keys" hx-trigger="load">x</a>',
    "<details open ontoggle=alert(1)>",
    "```js onerror=alert(1)\n<script>alert(1)</script>\n```",
    "`<img src=x onerror=alert(1)>`",
    "    <script>alert(1)</script>",
    "<!-- <script>alert(1)</script> -->",
    '[x](https://a.example/\u200b"onmouseover="alert(1))',
    '[x](https://a.example "t\u202e" onmouseover="alert(1)")',
    "| a |\n|---|\n| <script>alert(1)</script> |",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "<scr<script>ipt>alert(1)</script>",
]
INVISIBLE = {
    "\u200b": "ZERO WIDTH SPACE",
    "\u200d": "ZERO WIDTH JOINER",
    "\u2060": "WORD JOINER",
    "\ufeff": "ZERO WIDTH NO-BREAK SPACE",
    "\u202e": "RIGHT-TO-LEFT OVERRIDE",
    "\u2066": "LEFT-TO-RIGHT ISOLATE",
    "\u200f": "RIGHT-TO-LEFT MARK",
    "\U000e0041": "TAG LATIN CAPITAL LETTER A",
    "\U000e007f": "CANCEL TAG",
    "\ufe0f": "VARIATION SELECTOR-16",
    "\U000e0100": "VARIATION SELECTOR-17",
    "\u00ad": "SOFT HYPHEN",
    "\u3164": "HANGUL FILLER",
    "\x1b": "",
    "\u2028": "LINE SEPARATOR",
}
DANGEROUS = re.compile(
    r"<(script|img|iframe|svg|style|form|math|object|embed)\b|\bon\w+\s*=|javascript:|hx-|style=", re.I
)


def tags_and_attributes(html: str) -> list[str]:
    """Every tag as written in `html` (attributes included); text between tags is left out."""
    return re.findall(r"<[^>]*>", html)


class TestMarkdown:
    @pytest.mark.parametrize("source", HOSTILE_MARKDOWN)
    def test_hostile_markdown_yields_no_active_markup(self, source: str) -> None:
        html = str(render.markdown(source))
        for tag in tags_and_attributes(html):
            assert not DANGEROUS.search(tag), (source, html)

    def test_raw_html_is_shown_as_text(self) -> None:
        html = str(render.markdown("<script>alert(1)</script>"))
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html

    def test_ordinary_markdown_survives(self) -> None:
        html = str(render.markdown("# Title\n\n1. **step** `code`\n\n[docs](https://example.org/a?b=1)"))
        assert "<h1>Title</h1>" in html
        assert "<strong>step</strong>" in html and "<code>code</code>" in html
        assert '<a href="https://example.org/a?b=1" rel="noopener noreferrer nofollow">docs</a>' in html

    def test_images_are_named_not_loaded(self) -> None:
        html = str(render.markdown("![chart](https://evil.example/beacon.png)"))
        assert "<img" not in html
        assert "[image: chart → https://evil.example/beacon.png]" in html

    def test_invisible_characters_in_text_code_and_links_are_marked(self) -> None:
        html = str(
            render.markdown(
                'a\u200bb `c\u202ed`\n\n```\ne\U000e0041f\n```\n\n[g\u2066h](https://x.example "t\u200bt")'
            )
        )
        assert html.count('class="invisible-char"') == 4
        assert 'title="t⟨U+200B⟩t"' in html  # an attribute gets the marker as plain text
        assert not any(render.is_invisible(c) for c in html)

    def test_fence_info_string_is_dropped(self) -> None:
        html = str(render.markdown('```python" onmouseover="alert(1)\nx = 1\n```'))
        assert html.startswith("<pre><code>x = 1")


class TestInvisible:
    @pytest.mark.parametrize(("char", "name"), INVISIBLE.items())
    def test_each_is_replaced_by_a_visible_marker(self, char: str, name: str) -> None:
        shown = str(render.reveal(f"a{char}b"))
        assert char not in shown
        assert f"⟨U+{ord(char):04X}⟩" in shown
        if name:
            assert f'title="{name}"' in shown

    def test_ordinary_text_is_escaped_and_kept(self) -> None:
        assert render.reveal("Grüße, 東京 <b>&</b>\tok\nnext") == Markup(
            "Grüße, 東京 &lt;b&gt;&amp;&lt;/b&gt;\tok\nnext"
        )

    def test_trojan_source_is_flattened(self) -> None:
        line = 'access_level = "user\u202e \u2066// Check if admin\u2069 \u2066"'
        shown = str(render.reveal(line))
        assert not any(c in shown for c in "\u202e\u2066\u2069")
        assert shown.count("invisible-char") == 4

    def test_markup_passes_through_untouched(self) -> None:
        trusted = Markup("<em>ok</em>")
        assert render.reveal(trusted) is trusted

    def test_lone_surrogates_cannot_break_the_page(self) -> None:
        shown = str(render.reveal("a\udc80b"))
        shown.encode("utf-8")  # would raise if the surrogate survived

    @given(st.text())
    def test_any_text_comes_out_escaped_and_visible(self, text: str) -> None:
        shown = str(render.reveal(text))
        stripped = re.sub(
            r'<span class="invisible-char" title="[^"<>]*">⟨U\+[0-9A-F]{4,6}⟩</span>', "", shown
        )
        assert "<" not in stripped and ">" not in stripped
        assert not any(render.is_invisible(c) for c in shown)


class TestCode:
    def test_lines_are_numbered_as_the_scanner_counts_and_flagged(self) -> None:
        lines = render.code_lines("#!/bin/sh\r\n<script>x</script>\n\u200bcurl", {2: ("R1",)}, {3: ("R2",)})
        assert [line.number for line in lines] == [1, 2, 3]
        assert lines[0].html == Markup("#!/bin/sh")
        assert lines[1].html == Markup("&lt;script&gt;x&lt;/script&gt;") and lines[1].flagged
        assert lines[2].waived == ("R2",) and not lines[2].flagged
        assert "⟨U+200B⟩" in lines[2].html

    def test_json_values_are_escaped(self) -> None:
        shown = str(render.pretty_json({"reason": "</pre><script>alert(1)</script>\u200b"}))
        assert "<script>" not in shown and "&lt;/pre&gt;" in shown and "⟨U+200B⟩" in shown
        assert "<script>" not in str(render.compact_json({"a": "<script>"}))


class TestCharts:
    HOSTILE = '</text><script>alert(1)</script><text x="'

    def test_labels_and_notes_are_escaped(self) -> None:
        bars = [charts.Bar(self.HOSTILE, 3.0, self.HOSTILE), charts.Bar("b\u200b", 1.0)]
        for svg in (
            charts.columns(bars, label=self.HOSTILE),
            charts.hbars(bars, label="x", maximum=3.0),
            charts.diverging([charts.Bar(self.HOSTILE, -0.5)], label="x"),
            charts.stacked([(self.HOSTILE, [1.0, 2.0])], [("T0", "t0"), (self.HOSTILE, "t1")], label="x"),
            charts.lines([self.HOSTILE, "b"], [charts.Series(self.HOSTILE, "p50", [1.0, None])], label="x"),
        ):
            assert "<script>" not in svg
            assert svg.startswith("<svg") and svg.endswith("</svg>")
            assert "style=" not in svg

    def test_empty_and_zero_data_draw(self) -> None:
        assert "<rect" not in charts.columns([], label="none")
        assert 'height="0.0"' in charts.columns([charts.Bar("a", 0.0)], label="zero")


class TestDiff:
    def test_side_by_side_rows_mark_changes_and_escape(self) -> None:
        rows = diff.side_by_side("a\nb\nc", "a\n<b>\nc\nd")
        kinds = [r.kind for r in rows]
        assert kinds == ["equal", "replace", "equal", "insert"]
        assert rows[1].left == Markup("b") and rows[1].right == Markup("&lt;b&gt;")
        assert rows[3].left_no is None and rows[3].right_no == 4

    def test_far_apart_changes_are_split_by_a_gap(self) -> None:
        old = "\n".join(str(n) for n in range(40))
        new = old.replace("\n5\n", "\nfive\n").replace("\n35\n", "\nthirty-five\n")
        assert [r.kind for r in diff.side_by_side(old, new)].count("gap") == 1

    def test_files_added_removed_and_unchanged(self) -> None:
        files = diff.versions(
            {"SKILL.md": "x", "a.sh": "1", "b.sh": "2"}, {"SKILL.md": "y", "b.sh": "2", "c.sh": "3"}
        )
        assert [(f.path, f.status) for f in files] == [
            ("SKILL.md", "changed"), ("a.sh", "removed"), ("b.sh", "unchanged"), ("c.sh", "added"),
        ]  # fmt: skip
        added = files[3].rows
        assert [(r.kind, r.left_no, r.right_no) for r in added] == [("insert", None, 1)]


class TestSigner:
    def test_round_trip_and_tampering(self) -> None:
        signer = Signer(b"k" * 32)
        token = signer.sign("session", {"k": "key", "i": 1})
        assert signer.unsign("session", token) == {"k": "key", "i": 1}
        assert signer.unsign("login", token) is None  # bound to its purpose
        assert Signer(b"j" * 32).unsign("session", token) is None
        payload, _, mac = token.partition(".")
        assert (
            signer.unsign("session", payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + mac) is None
        )
        assert signer.unsign("session", "") is None
        assert signer.unsign("session", "garbage") is None

    def test_secret_is_made_once_and_kept_private(self, tmp_path: Path) -> None:
        settings = Settings(home=tmp_path / "home")
        first = load_secret(settings)
        assert len(first) >= 32 and load_secret(settings) == first
        assert (tmp_path / "home" / SECRET_FILE).stat().st_mode & 0o777 == 0o600

    def test_a_set_secret_wins_and_a_short_one_is_refused(self, tmp_path: Path) -> None:
        secret = "s" * 40
        assert load_secret(Settings(home=tmp_path, admin_secret=SecretStr(secret))) == secret.encode()
        with pytest.raises(ValueError, match="at least 32"):
            Settings(admin_secret=SecretStr("changethis"))
        (tmp_path / SECRET_FILE).write_text("short")
        with pytest.raises(RuntimeError, match="shorter than 32"):
            load_secret(Settings(home=tmp_path))
