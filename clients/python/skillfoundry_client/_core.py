"""What the sync and async clients share: calls as data, the retry policy, answers to results or errors."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from skillfoundry_client import errors

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 30.0
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-correlation-id")


@dataclass(frozen=True)
class RetryPolicy:
    """When and how long to wait before trying a request again.

    429 and failures to connect are always retried (the server did nothing). 502/503/504 and
    connections lost mid-request are retried only for requests that are safe to repeat: reads,
    deletes, `/v1/retrieve`, and trajectory posts (which carry an Idempotency-Key).
    """

    max_retries: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    # A Retry-After longer than this is not waited for: the error is raised at once.
    max_retry_after_s: float = 60.0
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def backoff(self, attempt: int) -> float:
        """Seconds before retry number `attempt + 1`: exponential, capped, with jitter (half to all of it)."""
        cap = min(self.max_backoff_s, self.backoff_s * 2.0**attempt)
        return cap / 2 + random.uniform(0, cap / 2)  # noqa: S311 - jitter, not a secret

    def wait_for(self, call: Call[Any], attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying after `response`, or None to give up."""
        status = response.status_code
        if attempt >= self.max_retries or status not in self.statuses:
            return None
        if status != 429 and not call.retry_safe:
            return None
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        if retry_after is None:
            return self.backoff(attempt)
        return retry_after if retry_after <= self.max_retry_after_s else None

    def wait_after_error(self, call: Call[Any], attempt: int, exc: httpx.TransportError) -> float | None:
        """Seconds to wait before retrying after a transport error, or None to give up."""
        if attempt >= self.max_retries:
            return None
        # Nothing reached the server if the connection never opened; otherwise it may have acted.
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout) or call.retry_safe:
            return self.backoff(attempt)
        return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks for: a number of seconds or an HTTP date (None if neither)."""
    if value is None or not value.strip():
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API request and how to read its answer."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    # A raw body (a zip, say) or multipart files, instead of JSON.
    content: bytes | None = None
    files: list[tuple[str, tuple[str, bytes, str]]] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    # Statuses that are answers, not errors (/readyz answers 503 with its checks).
    ok: frozenset[int] = frozenset()
    safe: bool | None = None

    @property
    def retry_safe(self) -> bool:
        """Whether repeating the request cannot do anything twice."""
        return self.safe if self.safe is not None else self.method in IDEMPOTENT_METHODS

    def query(self) -> dict[str, Any] | None:
        """The query parameters as sent: None values dropped, booleans and datetimes as text."""
        return _params(self.params)

    def result(self, response: httpx.Response, request_id: str) -> T:
        """The parsed answer, or the error it stands for."""
        if response.is_success or response.status_code in self.ok:
            return self.parse(response)
        raise error_from(response, request_id)


def path(*parts: str | int) -> str:
    """A /v1 path with each part escaped."""
    return "/v1/" + "/".join(quote(str(p), safe="") for p in parts)


def _params(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if params is None:
        return None
    out: dict[str, Any] = {}
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif hasattr(value, "isoformat"):
            out[name] = value.isoformat()
        else:
            out[name] = value
    return out


def body(response: httpx.Response) -> Any:
    """The JSON of an answer."""
    return response.json()


def error_from(response: httpx.Response, request_id: str | None) -> errors.SkillfoundryError:
    """The exception for an error answer, from the server's `{"error": {code, message, detail}}`."""
    status = response.status_code
    code, message, detail = f"http_{status}", response.reason_phrase or "error", None
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        # A proxy's HTML page, say: keep the start of it as the message.
        text = response.text.strip()
        message = text[:500] or message
    else:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            code = str(error.get("code") or code)
            message = str(error.get("message") or message)
            detail = error.get("detail")
        else:
            detail = payload
    echoed = next((response.headers[h] for h in REQUEST_ID_HEADERS if h in response.headers), None)
    return errors.error_class(status)(
        status, code, message, detail, echoed or request_id, dict(response.headers)
    )


def connection_error(exc: httpx.TransportError, request_id: str) -> errors.APIConnectionError:
    """The exception for a request that got no answer."""
    if isinstance(exc, httpx.TimeoutException):
        return errors.APITimeoutError(None, "timeout", f"No answer in time: {exc!r}", None, request_id)
    return errors.APIConnectionError(None, "connection_error", f"No answer: {exc!r}", None, request_id)
