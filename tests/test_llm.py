"""The LLM polisher against a real HTTP server on loopback that speaks the chat-completions protocol.

The server answers `POST /v1/chat/completions` from a scripted queue of replies and records every
request, so the tests exercise the real OpenAI client: its HTTP, its retries and its timeouts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


def completion(content: str) -> dict[str, Any]:
    """A chat-completions response body whose answer is `content`."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def answer(text: str) -> dict[str, Any]:
    """A response body whose answer is the JSON object `{"text": text}`."""
    return completion(json.dumps({"text": text}))


@dataclass
class Reply:
    """One scripted reply: status, JSON body (or raw bytes), extra headers, and a delay before it."""

    body: dict[str, Any] | bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    content_type: str = "application/json"


def error(status: int, **headers: str) -> Reply:
    """An OpenAI-style error reply."""
    body = {"error": {"message": f"scripted {status}", "type": "server_error", "param": None, "code": None}}
    return Reply(body, status=status, headers=headers)


class FakeOpenAI(ThreadingHTTPServer):
    """A chat-completions server on 127.0.0.1 that replays `replies` and records `requests`."""

    # Handler threads are joined on close, so that no test leaves one behind.
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.replies: deque[Reply] = deque()
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        # Set on teardown: a handler that is still delaying its reply gives up at once.
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05})

    @property
    def url(self) -> str:
        """The base URL a client is configured with."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def script(self, *replies: Reply | dict[str, Any]) -> None:
        """Queue replies, in order; a plain dict is a 200 with that body."""
        with self.lock:
            self.replies.extend(reply if isinstance(reply, Reply) else Reply(reply) for reply in replies)

    def next_reply(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """Record a request and take the next scripted reply (a 500 the client won't retry if none)."""
        with self.lock:
            self.requests.append(body)
            self.headers.append(headers)
            if path != "/v1/chat/completions":
                return error(404, **{"x-should-retry": "false"})
            if not self.replies:
                return error(500, **{"x-should-retry": "false"})
            return self.replies.popleft()

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving, release delayed handlers, and join every thread."""
        self.stopping.set()
        self.shutdown()
        self.thread.join()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI

    # http.server dispatches POST requests to this name.
    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length) or b"{}")
        reply = self.server.next_reply(self.path, body, {k.lower(): v for k, v in self.headers.items()})
        if reply.delay_s and self.server.stopping.wait(reply.delay_s):
            return
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            # The client timed out and hung up: nobody is left to answer.
            pass

    def log_message(self, format: str, *args: Any) -> None:
        # Quiet: a request log on stderr would only clutter test output.
        pass


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    """A running fake server, stopped afterwards; fails the test if any thread outlives it."""
    before = set(threading.enumerate())
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()
    leaked = [thread for thread in threading.enumerate() if thread not in before]
    assert not leaked, f"threads left running: {leaked}"


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
    client = polisher._client
    polisher.polish(draft())

    assert client is not None
    assert polisher._client is client
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
    assert polisher._client is None


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
