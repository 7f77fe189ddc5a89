"""Exceptions: one per kind of failure, each carrying the server's error `code`."""

from __future__ import annotations

from typing import Any


class SkillfoundryError(Exception):
    """A request that failed: the HTTP status (None if no answer came), the server's code and message."""

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        detail: Any = None,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status or '-'} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.request_id = request_id
        self.headers = headers or {}


class BadRequestError(SkillfoundryError):
    """400: malformed request (`invalid_json`, `invalid_cursor`, `invalid_version`, ...)."""


class AuthenticationError(SkillfoundryError):
    """401: missing, unknown or revoked API key."""


class PermissionDeniedError(SkillfoundryError):
    """403: the key lacks the scope."""


class NotFoundError(SkillfoundryError):
    """404: no such object in this tenant (`skill_not_found`, `trajectory_not_found`, ...)."""


class ConflictError(SkillfoundryError):
    """409: `version_conflict`, `idempotency_key_reused`, `feedback_exists`, ..."""


class PayloadTooLargeError(SkillfoundryError):
    """413: over a size limit (`too_many_steps`, `field_too_long`, ...)."""


class ValidationError(SkillfoundryError):
    """422: the request does not match the schema; `detail` lists the fields."""


class RateLimitError(SkillfoundryError):
    """429: the key's rate limit; `retry_after` is the wait in seconds the server asked for."""

    @property
    def retry_after(self) -> float | None:
        """Seconds from the Retry-After header, if it held a number."""
        try:
            return float(self.headers.get("retry-after", ""))
        except ValueError:
            return None


class ServerError(SkillfoundryError):
    """5xx: the service or a proxy in front of it failed."""


class APIConnectionError(SkillfoundryError):
    """No answer: the connection failed or timed out (after the retries)."""


class APITimeoutError(APIConnectionError):
    """No answer within the timeout."""


_BY_STATUS: dict[int, type[SkillfoundryError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ValidationError,
    429: RateLimitError,
}


def error_class(status: int) -> type[SkillfoundryError]:
    """The exception class for an HTTP status."""
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, SkillfoundryError)
