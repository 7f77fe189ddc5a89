"""The LLM polisher against a real HTTP server on loopback that speaks the chat-completions protocol.

The server (tests/openai_server.py) answers from a scripted queue of replies and records every
request, so the tests exercise the real OpenAI client: its HTTP, its retries and its timeouts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from app.config import Settings
from app.evolver.llm import (
    Draft,
    InvalidAnswer,
    OpenAIPolisher,
    Polished,
    get_polisher,
    parse_answer,
    prompt_hash,
    task_slot_fillers,
)
from tests.openai_server import FakeOpenAI, Reply, completion, error, running

MODEL = "test-model"
GOOD_TEXT = (
    "When the task names a substance and it is in view, do `focus on` that substance first, "
    "because focusing on it raised the score."
)


def draft(polarity: str = "do", **changes: str) -> Draft:
    """A draft whose action has a task slot filled by "water"."""
    fields = {
        "text": "When you see the substance, do `focus on water` because it raised the score.",
        "polarity": polarity,
        "action_template": "focus on <task:substance>",
        "action_example": "focus on water",
        "situation": "this room is called the kitchen. you see a sink, a stove, a cup containing water.",
        "task": "Your task is to boil water. First, focus on the substance.",
        "reason": "reward_rose",
    }
    fields.update(changes)
    return Draft(**fields)


def answer(text: str) -> dict[str, Any]:
    """A response body whose answer is the JSON object `{"text": text}`."""
    return completion(json.dumps({"text": text}))


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A running fake server, stopped afterwards; fails the test if any thread outlives it."""
    with running() as server:
        yield server


@pytest.fixture
def make_polisher() -> Iterator[Callable[..., OpenAIPolisher]]:
    """Build polishers (fast retries and timeouts by default) and close their clients afterwards."""
    made: list[OpenAIPolisher] = []

    def make(base_url: str, **options: Any) -> OpenAIPolisher:
        options = {"api_key": "test-key", "model": MODEL, "timeout_s": 5.0, "max_retries": 0} | options
        polisher = OpenAIPolisher(base_url, **options)
        made.append(polisher)
        return polisher

    yield make
    for polisher in made:
        polisher.close()


def test_valid_answer_is_polished(
    fake: FakeOpenAI, make_polisher: Callable[..., OpenAIPolisher], caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(answer(GOOD_TEXT))
    polisher = make_polisher(fake.url)
    subject = draft()

    with caplog.at_level(logging.WARNING, logger="app.evolver.llm"):
        result = polisher.polish(subject)

    assert result == Polished(text=GOOD_TEXT, model=MODEL)
    assert not caplog.records
    [request] = fake.requests
    assert request["model"] == MODEL
    assert request["response_format"] == {"type": "json_object"}
    assert request["temperature"] == 0
    assert [message["role"] for message in request["messages"]] == ["system", "user"]
    user = request["messages"][1]["content"]
    assert "focus on water" in user
    assert "focus on <task:substance>" in user
    assert subject.text in user
    assert fake.headers[0]["authorization"] == "Bearer test-key"
    # The hash callers store is the hash of exactly what went over the wire.
    sent = json.dumps(request["messages"], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert prompt_hash(subject) == hashlib.sha256(sent.encode()).hexdigest()
    assert polisher.prompt_hash(subject) == prompt_hash(subject)


def test_fenced_answer_is_accepted(fake: FakeOpenAI, make_polisher: Callable[..., OpenAIPolisher]) -> None:
    fake.script(completion("```json\n" + json.dumps({"text": GOOD_TEXT}) + "\n```"))

    assert make_polisher(fake.url).polish(draft()) == Polished(text=GOOD_TEXT, model=MODEL)


def test_client_is_built_once(fake: FakeOpenAI, make_polisher: Callable[..., OpenAIPolisher]) -> None:
    fake.script(answer(GOOD_TEXT), answer(GOOD_TEXT))
    polisher = make_polisher(fake.url)

    polisher.polish(draft())
    client = polisher._openai.current
    polisher.polish(draft())

    assert client is not None
    assert polisher._openai.current is client
    assert "test-key" not in repr(polisher)


@pytest.mark.parametrize(
    "reply",
    [
        completion("{not json"),
        completion("the stove is hot"),
        completion(json.dumps(["When", "do"])),
        completion(json.dumps({"answer": GOOD_TEXT})),
        completion(json.dumps({"text": 42})),
        Reply(b"{truncated", content_type="application/json"),
        Reply(b"plain words", content_type="text/plain"),
        {**completion(""), "choices": []},
    ],
    ids=["bad-json", "prose", "array", "no-text", "text-not-string", "body-json", "body-text", "no-choices"],
)
def test_malformed_answer_is_none(
    fake: FakeOpenAI,
    make_polisher: Callable[..., OpenAIPolisher],
    caplog: pytest.LogCaptureFixture,
    reply: Reply | dict[str, Any],
) -> None:
    fake.script(reply)

    with caplog.at_level(logging.WARNING, logger="app.evolver.llm"):
        assert make_polisher(fake.url).polish(draft()) is None

    assert len(fake.requests) == 1
    assert any("keeping the heuristic text" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("text", "polarity", "why"),
    [
        ("When " + "the stove is hot and " * 13 + "you do nothing.", "do", "more than 64"),
        ("Do `focus on` the substance when it is in view.", "do", 'start with "When"'),
        ("When the substance is in view, avoid focusing on anything else.", "do", 'word "do"'),
        ("When the substance is in view, don't wait, focus on it.", "do", 'word "do"'),
        ("When the substance is in view, do `focus on` it.", "avoid", 'word "avoid"'),
        ("When the kettle is in view, do `focus on water` first.", "do", 'object "water"'),
        ("When you see WATER, do focus on it.", "do", 'object "water"'),
        ("When it is in view, do ```focus on``` the substance.", "do", "code fence"),
    ],
    ids=["too-long", "not-when", "no-do", "dont-is-not-do", "no-avoid", "leak", "leak-case", "fence"],
)
def test_invalid_answer_is_none(
    fake: FakeOpenAI,
    make_polisher: Callable[..., OpenAIPolisher],
    caplog: pytest.LogCaptureFixture,
    text: str,
    polarity: str,
    why: str,
) -> None:
    fake.script(answer(text))

    with caplog.at_level(logging.WARNING, logger="app.evolver.llm"):
        assert make_polisher(fake.url).polish(draft(polarity)) is None

    [record] = caplog.records
    assert why in record.getMessage()


def test_rate_limit_then_success_is_retried(
    fake: FakeOpenAI, make_polisher: Callable[..., OpenAIPolisher]
) -> None:
    fake.script(error(429, **{"Retry-After": "0"}), answer(GOOD_TEXT))

    result = make_polisher(fake.url, max_retries=2).polish(draft())

    assert result == Polished(text=GOOD_TEXT, model=MODEL)
    assert len(fake.requests) == 2


def test_timeout_is_none_quickly(
    fake: FakeOpenAI, make_polisher: Callable[..., OpenAIPolisher], caplog: pytest.LogCaptureFixture
) -> None:
    fake.script(Reply(answer(GOOD_TEXT), delay_s=1.5))
    polisher = make_polisher(fake.url, timeout_s=0.5, max_retries=0)

    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="app.evolver.llm"):
        result = polisher.polish(draft())
    elapsed = time.monotonic() - started

    assert result is None
    assert elapsed < 1.2
    assert "APITimeoutError" in caplog.records[0].getMessage()


def test_server_errors_beyond_retries_are_none(
    fake: FakeOpenAI, make_polisher: Callable[..., OpenAIPolisher], caplog: pytest.LogCaptureFixture
) -> None:
    # retry-after-ms keeps the client's backoff short; the retries themselves still happen.
    fake.script(*(error(500, **{"retry-after-ms": "10"}) for _ in range(3)))

    with caplog.at_level(logging.WARNING, logger="app.evolver.llm"):
        result = make_polisher(fake.url, max_retries=2).polish(draft())

    assert result is None
    assert len(fake.requests) == 3
    assert "InternalServerError" in caplog.records[0].getMessage()


def test_client_error_is_none_without_retry(
    fake: FakeOpenAI, make_polisher: Callable[..., OpenAIPolisher]
) -> None:
    fake.script(error(400), answer(GOOD_TEXT))

    assert make_polisher(fake.url, max_retries=2).polish(draft()) is None
    assert len(fake.requests) == 1


def test_server_down_is_none(
    make_polisher: Callable[..., OpenAIPolisher], caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The port was free a moment ago and nothing listens on it now: the connection is refused.
    polisher = make_polisher(f"http://127.0.0.1:{port}/v1", max_retries=0)

    with caplog.at_level(logging.WARNING, logger="app.evolver.llm"):
        assert polisher.polish(draft()) is None

    assert "APIConnectionError" in caplog.records[0].getMessage()


def test_get_polisher_needs_a_base_url() -> None:
    assert get_polisher(Settings(llm_base_url=None)) is None
    assert get_polisher(Settings(llm_base_url="")) is None


def test_get_polisher_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKILLFOUNDRY_LLM_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("SKILLFOUNDRY_LLM_MODEL", "local-model")
    monkeypatch.setenv("SKILLFOUNDRY_LLM_TIMEOUT_S", "3.5")
    monkeypatch.setenv("SKILLFOUNDRY_LLM_MAX_RETRIES", "0")

    polisher = get_polisher(Settings())

    assert isinstance(polisher, OpenAIPolisher)
    assert (polisher.base_url, polisher.model, polisher.timeout_s, polisher.max_retries) == (
        "http://127.0.0.1:9/v1",
        "local-model",
        3.5,
        0,
    )
    # Nothing is contacted until the first polish.
    assert polisher._openai.current is None


@pytest.mark.parametrize(
    ("template", "example", "expected"),
    [
        ("focus on <task:substance>", "focus on water", ["water"]),
        ("pick up <task:object> from table", "pick up red ball from table", ["red ball"]),
        ("open door_<num> with <task:key>.", "Open door_3 with brass key.", ["brass key"]),
        ("activate stove", "activate stove", []),
        ("focus on <task:substance>", "look at water", ["look at water"]),
    ],
)
def test_task_slot_fillers(template: str, example: str, expected: list[str]) -> None:
    assert task_slot_fillers(template, example) == expected


def test_parse_answer_allows_other_objects_and_glue_words() -> None:
    subject = draft(
        action_template="pick up <task:object> from table", action_example="pick up the red ball from table"
    )
    text = "When the object named in the task is on the table, do `pick up` the object from the table."

    assert parse_answer(json.dumps({"text": text}), subject) == text
    with pytest.raises(InvalidAnswer, match="red"):
        parse_answer(json.dumps({"text": "When the red one is there, do pick it up."}), subject)
