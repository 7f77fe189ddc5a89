"""Shapes shared by every endpoint."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class ErrorBody(BaseModel):
    code: str
    message: str
    detail: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in {
        400: "Malformed request (`invalid_json`, `invalid_cursor`, `bad_request`).",
        401: "Missing or invalid API key (`unauthorized`).",
        403: "The key lacks the scope (`forbidden`).",
        413: "Over a size limit (`payload_too_large`, `too_many_trajectories`, `too_many_steps`, "
        "`field_too_long`, `too_many_items`).",
        422: "Does not match the schema (`validation_error`).",
        429: "Rate limit for this key (`rate_limited`); see Retry-After.",
    }.items()
}
