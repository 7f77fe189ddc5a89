"""A real HTTP server on loopback that speaks the OpenAI chat-completions protocol, for LLM tests.

It answers `POST /v1/chat/completions` from a scripted queue of replies (then from `responder`, if
set) and records every request, so tests exercise the real OpenAI client: its HTTP, its retries and
its timeouts.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def completion(content: str, *, total_tokens: int = 2) -> dict[str, Any]:
    """A chat-completions response body whose answer is `content`."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": total_tokens - 1, "total_tokens": total_tokens},
    }


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
        # Answers a request when no scripted reply is left (a 500 the client won't retry if unset).
        self.responder: Callable[[dict[str, Any]], Reply | dict[str, Any]] | None = None
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
            self.replies.extend(_reply(reply) for reply in replies)

    def next_reply(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> Reply:
        """Record a request and take the next scripted reply, else ask the responder."""
        with self.lock:
            self.requests.append(body)
            self.headers.append(headers)
            if path != "/v1/chat/completions":
                return error(404, **{"x-should-retry": "false"})
            if self.replies:
                return self.replies.popleft()
            responder = self.responder
        if responder is None:
            return error(500, **{"x-should-retry": "false"})
        return _reply(responder(body))

    def start(self) -> None:
        """Serve in a background thread."""
        self.thread.start()

    def stop(self) -> None:
        """Stop serving, release delayed handlers, and join every thread."""
        self.stopping.set()
        self.shutdown()
        self.thread.join()
        self.server_close()


@contextmanager
def running() -> Iterator[FakeOpenAI]:
    """A running fake server, stopped afterwards; fails if any thread outlives it."""
    before = set(threading.enumerate())
    server = FakeOpenAI()
    server.start()
    try:
        yield server
    finally:
        server.stop()
    # The server's threads are not daemons; daemons others start meanwhile (tqdm's monitor) are not ours.
    leaked = [thread for thread in threading.enumerate() if thread not in before and not thread.daemon]
    assert not leaked, f"threads left running: {leaked}"


def _reply(reply: Reply | dict[str, Any]) -> Reply:
    return reply if isinstance(reply, Reply) else Reply(reply)


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
