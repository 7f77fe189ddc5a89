"""Observation normalisation: situation keys from text games, shells, web pages and tool JSON."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.evolver.normalize import DEFAULT_MAX_CHARS, mask_text, normalize_observation
from app.evolver.situations import KEY_CACHE_MAX_CHARS, _remembered_key, situation_key

KITCHEN = """This room is called the kitchen. In it, you see:
\tthe agent
\ta substance called air
\ta stove, which is turned off. On the stove is: nothing.
\ta thermometer, currently reading a temperature of 23 degrees celsius
\ta pot (containing water at 18 degrees celsius)
\ta sink, which is turned off. In the sink is: nothing.
You also see:
\tA door to the hallway (that is open)
\tA door to the outside (that is open)"""

KITCHEN_LATER = KITCHEN.replace("23 degrees", "-4 degrees").replace("18 degrees", "96.5 degrees")

BATHROOM = """This room is called the bathroom. In it, you see:
\tthe agent
\ta substance called air
\ta bathtub, which is turned off. In the bathtub is: nothing.
\ta toilet. In the toilet is: A drain, which is open, a substance called water.
You also see:
\tA door to the kitchen (that is open)"""

LS_LISTING = """total 48
drwxr-xr-x  5 alice staff   160 Mar  3 09:15 .
drwxr-xr-x 12 alice staff   384 Feb 28 17:02 ..
-rw-r--r--  1 alice staff  4096 Mar  3 09:15 notes.txt
-rw-r--r--  1 alice staff 12288 Jan  5  2023 data.csv"""

GIT_PUSH_REJECTED = """To github.com:acme/widgets.git
 ! [rejected]        main -> main (fetch first)
error: failed to push some refs to 'git@github.com:acme/widgets.git'
hint: Updates were rejected because the remote contains work that you do
hint: not have locally."""

TRACEBACK = """Traceback (most recent call last):
  File "/home/alice/project/app/main.py", line 42, in <module>
    main()
  File "/usr/lib/python3.11/json/__init__.py", line 293, in load
    return loads(fp.read(),
json.decoder.JSONDecodeError: Expecting value: line 1 column 1 (char 0)"""

WINDOWS_TRACEBACK = """Traceback (most recent call last):
  File "C:\\Users\\bob\\My Projects\\app.py", line 7, in <module>
FileNotFoundError: [Errno 2] No such file or directory: '/tmp/run-8812/data.csv'"""

WEB_PAGE = """Acme Store - Cheap Kettles
Posted on March 3, 2024 by admin@acme-store.com
Steel kettle 1.7L   $24.99 (was $39.99). See https://acme-store.com/kettles/steel?ref=home for details.
Updated 2024-03-05T14:22:10Z"""

TOOL_JSON = json.dumps(
    {
        "id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
        "status": "error",
        "message": "rate limit exceeded",
        "retry_after": 30,
        "items": [{"sku": "KT-1001", "qty": 2}, {"sku": "KT-1002", "qty": 1}],
    }
)

SYSLOG = "May  1 12:34:56 web01 sshd[1234]: Failed password for root from 192.168.0.7 port 52311 ssh2"

SAMPLES = {
    "kitchen": KITCHEN,
    "bathroom": BATHROOM,
    "ls": LS_LISTING,
    "git-push": GIT_PUSH_REJECTED,
    "traceback": TRACEBACK,
    "windows-traceback": WINDOWS_TRACEBACK,
    "web-page": WEB_PAGE,
    "tool-json": TOOL_JSON,
    "syslog": SYSLOG,
}


MODULES = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"]


def build_log(*, jobs: int, failing_job: int) -> str:
    """A long build log: a header, many distinct progress lines, one failure in the middle, a summary."""
    lines = ["$ make build", "Building widgets v2.3.1 on 2024-05-01T08:00:00Z"]
    for job in range(jobs):
        lines.append(f"[{job + 1}/{jobs}] Compiling {MODULES[job % len(MODULES)]} module")
        if job == failing_job:
            lines.append(f"src/widgets/module_{job}.c:17:5: error: 'count' undeclared (first use here)")
    lines += ["make: *** [Makefile:12: build] Error 1", f"Build finished in {jobs * 0.25:.2f}s"]
    return "\n".join(lines)


class TestTextGame:
    def test_kitchen_key(self) -> None:
        assert normalize_observation(KITCHEN) == (
            "this room is called the kitchen. in it, you see: | the agent | a substance called air"
            " | a stove, which is turned off. on the stove is: nothing."
            " | a thermometer, currently reading a temperature of <num> degrees celsius"
            " | a pot (containing water at <num> degrees celsius)"
            " | a sink, which is turned off. in the sink is: nothing. | you also see:"
            " | a door to the hallway (that is open) | a door to the outside (that is open)"
        )

    def test_temperatures_are_incidental(self) -> None:
        assert normalize_observation(KITCHEN_LATER) == normalize_observation(KITCHEN)

    def test_another_room_is_another_situation(self) -> None:
        bathroom = normalize_observation(BATHROOM)
        assert bathroom != normalize_observation(KITCHEN)
        assert "bathtub" in bathroom
        assert "toilet" in bathroom

    def test_state_words_survive(self) -> None:
        """An open door and a closed one are different situations."""
        closed = normalize_observation(KITCHEN.replace("hallway (that is open)", "hallway (that is closed)"))
        assert "hallway (that is closed)" in closed
        assert closed != normalize_observation(KITCHEN)


class TestShell:
    def test_ls_listing_keeps_permissions_and_names(self) -> None:
        assert normalize_observation(LS_LISTING) == (
            "total <num> | drwxr-xr-x <num> alice staff <num> <date> <time> ."
            " | drwxr-xr-x <num> alice staff <num> <date> <time> .."
            " | -rw-r--r-- <num> alice staff <num> <date> <time> notes.txt"
            " | -rw-r--r-- <num> alice staff <num> <date> data.csv"
        )

    def test_ls_sizes_and_dates_are_incidental(self) -> None:
        later = LS_LISTING.replace("4096 Mar  3 09:15", "8192 Apr 11 23:59").replace("total 48", "total 52")
        assert normalize_observation(later) == normalize_observation(LS_LISTING)

    def test_git_push_rejection(self) -> None:
        assert normalize_observation(GIT_PUSH_REJECTED) == (
            "to github.com:<path> | ! [rejected] main -> main (fetch first)"
            " | error: failed to push some refs to '<email>:<path>'"
            " | hint: updates were rejected because the remote contains work that you do"
            " | hint: not have locally."
        )

    def test_git_push_to_another_repository_is_the_same_situation(self) -> None:
        other = GIT_PUSH_REJECTED.replace("acme/widgets.git", "bob/dotfiles.git")
        assert normalize_observation(other) == normalize_observation(GIT_PUSH_REJECTED)

    def test_python_traceback(self) -> None:
        assert normalize_observation(TRACEBACK) == (
            'traceback (most recent call last): | file "<path>", line <num>, in <module> | main()'
            ' | file "<path>", line <num>, in load | return loads(fp.read(),'
            " | json.decoder.jsondecodeerror: expecting value: line <num> column <num> (char <num>)"
        )

    def test_traceback_paths_and_line_numbers_are_incidental(self) -> None:
        moved = TRACEBACK.replace("/home/alice/project", "/srv/ci/build-77").replace("line 42", "line 58")
        assert normalize_observation(moved) == normalize_observation(TRACEBACK)

    def test_another_exception_is_another_situation(self) -> None:
        other = TRACEBACK.replace(
            "JSONDecodeError: Expecting value", "UnicodeDecodeError: invalid start byte"
        )
        assert normalize_observation(other) != normalize_observation(TRACEBACK)

    def test_windows_traceback(self) -> None:
        assert normalize_observation(WINDOWS_TRACEBACK) == (
            'traceback (most recent call last): | file "<path>", line <num>, in <module>'
            " | filenotfounderror: [errno <num>] no such file or directory: '<path>'"
        )

    def test_syslog_line(self) -> None:
        assert normalize_observation(SYSLOG) == (
            "<date> <time> web01 sshd[<num>]: failed password for root from <ip> port <num> ssh2"
        )

    def test_ansi_colours_are_dropped(self) -> None:
        assert normalize_observation("\x1b[31merror:\x1b[0m permission denied") == "error: permission denied"


class TestWebPage:
    def test_page_key(self) -> None:
        assert normalize_observation(WEB_PAGE) == (
            "acme store - cheap kettles | posted on <date> by <email>"
            " | steel kettle <num>l $<num> (was $<num>). see <url> for details. | updated <date> <time>"
        )

    def test_prices_dates_and_links_are_incidental(self) -> None:
        other = (
            WEB_PAGE.replace("$24.99", "$19.50")
            .replace("March 3, 2024", "April 17, 2025")
            .replace("ref=home", "ref=search&q=kettle")
        )
        assert normalize_observation(other) == normalize_observation(WEB_PAGE)

    def test_http_status_phrase_survives(self) -> None:
        # A run of numbers folds into one placeholder; the phrase carries the meaning of the code.
        assert normalize_observation("HTTP/1.1 404 Not Found") == "http/<num> not found"


class TestToolJson:
    def test_structural_summary(self) -> None:
        assert normalize_observation(TOOL_JSON) == (
            "{id: <uuid>, status: error, message: rate limit exceeded, retry_after: <num>,"
            " items: [few of {sku: kt-<num>, qty: <num>}]}"
        )

    def test_ids_and_numbers_are_incidental(self) -> None:
        other = json.loads(TOOL_JSON)
        other.update(id="0f9e8d7c-6b5a-4321-8fed-cba987654321", retry_after=5)
        other["items"] = [{"sku": "KT-77", "qty": 9}, {"sku": "KT-78", "qty": 3}, {"sku": "KT-79", "qty": 1}]
        assert normalize_observation(json.dumps(other)) == normalize_observation(TOOL_JSON)

    def test_another_status_is_another_situation(self) -> None:
        ok = json.dumps({"id": "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "status": "ok", "items": []})
        assert normalize_observation(ok) == "{id: <uuid>, status: ok, items: []}"

    def test_arrays_by_length_bucket_and_first_element(self) -> None:
        assert normalize_observation("[1]") == "[one of <num>]"
        assert normalize_observation(json.dumps(list(range(5)))) == "[few of <num>]"
        rows = [{"name": f"row-{i}", "ok": True, "note": None} for i in range(250)]
        assert normalize_observation(json.dumps(rows)) == "[many of {name: row-<num>, ok: true, note: null}]"

    def test_depth_and_key_count_are_capped(self) -> None:
        deep = json.dumps({"a": {"b": {"c": {"d": {"e": 1}}}}})
        assert normalize_observation(deep) == "{a: {b: {c: {d: {...}}}}}"
        wide = normalize_observation(json.dumps({f"key{i}": i for i in range(20)}))
        assert wide.endswith("key11: <num>, ...}")
        assert "key12" not in wide

    def test_pretty_printed_json_is_one_summary(self) -> None:
        pretty = json.dumps(json.loads(TOOL_JSON), indent=2)
        assert normalize_observation(pretty) == normalize_observation(TOOL_JSON)

    def test_json_lines_are_summarised_and_collapsed(self) -> None:
        ndjson = "\n".join(json.dumps({"level": "info", "msg": "tick", "seq": i}) for i in range(4))
        assert normalize_observation(ndjson) == "{level: info, msg: tick, seq: <num>} (x4)"

    def test_long_string_values_are_cut(self) -> None:
        value = "word " * 100
        summary = normalize_observation(json.dumps({"stdout": value}))
        assert summary.startswith("{stdout: word word")
        assert summary.endswith("...}")
        assert len(summary) < 100

    def test_text_that_is_not_json_stays_text(self) -> None:
        assert normalize_observation("[ERROR] disk full") == "[error] disk full"
        assert normalize_observation("{not json}") == "{not json}"


class TestMasking:
    @pytest.mark.parametrize(
        ("raw", "masked"),
        [
            ("2024-05-01T12:34:56.789Z", "<date> <time>"),
            ("2024-05-01 12:34:56+02:00", "<date> <time>"),
            ("May  1 12:34:56", "<date> <time>"),
            ("Mon, 01 May 2024 12:00:00 GMT", "<date> <time>"),
            ("Jan  5  2023", "<date>"),
            ("due 05/01/2024", "due <date>"),
            ("at 9:05 pm", "at <time>"),
            ("id 123e4567-e89b-12d3-a456-426614174000", "id <uuid>"),
            ("sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "sha256 <hash>"),
            ("commit 3f786850e387550fdab836ed7e6dc881de23001b", "commit <hash>"),
            ("HEAD is now at 3f78685 fix", "HEAD is now at <hash> fix"),
            ("object at 0x7ffee4b2c9a0", "object at <hex>"),
            ("mail alice.smith+test@example.co.uk", "mail <email>"),
            ("connect 10.0.0.12:8080", "connect <ip>"),
            ("via fe80::1ff:fe23:4567:890a", "via <ip>"),
            ("see https://example.com/a/b?c=1.", "see <url>."),
            ("open /var/log/app/2024-05-01.log", "open <path>"),
            ("key ~/.ssh/id_rsa", "key <path>"),
            ("run ./scripts/run.sh", "run <path>"),
            ("edit src/app/main.py", "edit <path>"),
            ("exe C:\\Program Files\\Python311\\python.exe", "exe <path>"),
            ("share \\\\server\\share\\file.txt", "share <path>"),
            ("request req_8f3k2x9 done", "request <id> done"),
            ("job_8812 at -5 degrees", "job_<num> at <num> degrees"),
            ("HTTP/1.1 404", "HTTP/<num>"),
            ("total 1,234.56 in 30s", "total <num> in <num>s"),
            ("values 1, 2, 3, 4", "values <num>"),
            ("release v2.3.1", "release v<num>"),
        ],
    )
    def test_masks(self, raw: str, masked: str) -> None:
        assert mask_text(raw) == masked

    @pytest.mark.parametrize(
        "kept",
        ["and/or", "origin/main", "python3", "sha256", "ipv4", "deadbeef", "stove", "permission denied"],
    )
    def test_meaningful_words_are_kept(self, kept: str) -> None:
        assert mask_text(kept) == kept

    def test_order_keeps_compound_tokens_whole(self) -> None:
        """A URL, UUID, timestamp or path is one placeholder, not a row of numbers and hashes."""
        assert mask_text("GET https://api.example.com/v1/users/42?page=3") == "GET <url>"
        assert mask_text("trace a1b2c3d4-e5f6-7890-abcd-ef1234567890") == "trace <uuid>"
        assert mask_text("at 2024-05-01T12:34:56Z") == "at <date> <time>"
        assert mask_text("host 192.168.1.20") == "host <ip>"
        assert mask_text("read /data/run-42/ab12cd34ef/out.txt") == "read <path>"

    def test_placeholders_are_stable(self) -> None:
        text = "<url> <email> <uuid> <ip> <date> <time> <path> <hex> <hash> <id> <num>"
        assert mask_text(text) == text

    def test_whitespace_and_case_fold(self) -> None:
        assert normalize_observation("  You SEE:\r\n\t\ta   Stove\r\n\r\n") == "you see: | a stove"

    def test_empty_input(self) -> None:
        assert normalize_observation("") == ""
        assert normalize_observation(" \n\t \n") == ""


class TestLongOutputs:
    def test_consecutive_repeats_collapse(self) -> None:
        progress = "\n".join(f"Downloading layer {i}0%" for i in range(1, 6)) + "\nDone"
        assert normalize_observation(progress) == "downloading layer <num>% (x5) | done"

    def test_build_log_keeps_head_error_and_tail(self) -> None:
        key = normalize_observation(build_log(jobs=400, failing_job=250))
        assert len(key) <= DEFAULT_MAX_CHARS
        assert key.startswith("$ make build | building widgets v<num> on <date> <time>")
        assert "error: 'count' undeclared (first use here)" in key
        assert "make: *** [makefile:<num>: build] error <num>" in key
        assert key.endswith("build finished in <num>s")
        assert " | ... | " in key

    def test_failing_job_and_log_length_are_incidental(self) -> None:
        assert normalize_observation(build_log(jobs=400, failing_job=250)) == normalize_observation(
            build_log(jobs=300, failing_job=12)
        )

    def test_long_paragraph_is_cut_on_a_word_boundary(self) -> None:
        page = " ".join(["The quick brown fox jumps over the lazy dog."] * 40)
        key = normalize_observation(page, max_chars=100)
        assert len(key) <= 100
        assert key.endswith("...")
        full = normalize_observation(page, max_chars=10_000)
        kept = key.removesuffix("...")
        assert full.startswith(kept)
        assert full[len(kept)] == " "

    @pytest.mark.parametrize("max_chars", [1, 3, 4, 10, 40, 100, 250, 600, 2000])
    def test_length_is_capped(self, max_chars: int) -> None:
        for text in [*SAMPLES.values(), build_log(jobs=500, failing_job=3)]:
            assert len(normalize_observation(text, max_chars=max_chars)) <= max_chars

    def test_many_repeats_get_one_marker(self) -> None:
        """Nine repeats are counted; from ten up the count is as incidental as the values."""
        assert normalize_observation("tick 1\n" * 9) == "tick <num> (x9)"
        assert normalize_observation("tick 1\n" * 10) == "tick <num> (x10+)"
        assert normalize_observation("tick 1\n" * 3000) == "tick <num> (x10+)"

    def test_huge_input_keeps_head_and_tail(self) -> None:
        """Past the input cap the middle of the log goes; its last line still reaches the key."""
        log = (
            "\n".join(f"GET /static/app.{i}.js 200 {i * 7}ms" for i in range(50_000))
            + "\nFATAL: out of memory"
        )
        assert normalize_observation(log) == (
            "get <path> <num>ms (x10+) | ... | get <path> <num>ms (x10+) | fatal: out of memory"
        )

    def test_max_chars_must_be_positive(self) -> None:
        with pytest.raises(ValueError, match="max_chars"):
            normalize_observation("x", max_chars=0)


class TestStability:
    @pytest.mark.parametrize("name", sorted(SAMPLES))
    def test_idempotent(self, name: str) -> None:
        key = normalize_observation(SAMPLES[name])
        assert normalize_observation(key) == key

    @pytest.mark.parametrize("max_chars", [20, 60, 150])
    def test_idempotent_when_cut(self, max_chars: int) -> None:
        for text in [*SAMPLES.values(), build_log(jobs=200, failing_job=50)]:
            key = normalize_observation(text, max_chars=max_chars)
            assert normalize_observation(key, max_chars=max_chars) == key

    def test_samples_have_distinct_keys(self) -> None:
        keys = {normalize_observation(text) for text in SAMPLES.values()}
        assert len(keys) == len(SAMPLES)

    def test_situation_key_is_the_key_remembered_for_short_texts(self) -> None:
        """The worker's per-process memory of keys returns what normalising returns, and skips long texts."""
        assert situation_key(KITCHEN) == normalize_observation(KITCHEN)
        before = _remembered_key.cache_info()
        assert situation_key(KITCHEN) == normalize_observation(KITCHEN)
        assert _remembered_key.cache_info().hits == before.hits + 1
        log = build_log(jobs=400, failing_job=123)
        assert len(log) > KEY_CACHE_MAX_CHARS
        assert situation_key(log) == normalize_observation(log)
        assert _remembered_key.cache_info().currsize == before.currsize


class TestRuleSkipping:
    """Rules are skipped when a text lacks what they need; the masks are those of running every rule."""

    def texts(self) -> list[str]:
        import random

        from app.bench.ingest import make_trajectory

        rng = random.Random(3)  # noqa: S311 - test data
        generated = [s["observation"] for _ in range(10) for s in make_trajectory(rng)["steps"]]
        lines = [line for text in SAMPLES.values() for line in text.splitlines()]
        return [*generated, *lines, *(normalize_observation(t) for t in [*generated, *SAMPLES.values()])]

    def test_same_masks_on_samples_and_their_keys(self) -> None:
        from app.evolver.normalize import _mask_once, _mask_once_every_rule

        for text in self.texts():
            assert _mask_once(text) == _mask_once_every_rule(text)

    @given(
        st.text(
            alphabet=st.sampled_from(list("aAbcdefFxXwW0123456789٣:/\\.-_@+ <>#,;|~$T\n")),
            max_size=80,
        )
    )
    def test_same_masks_on_any_text(self, text: str) -> None:
        from app.evolver.normalize import _mask_once, _mask_once_every_rule

        assert _mask_once(text) == _mask_once_every_rule(text)
