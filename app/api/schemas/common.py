"""Shapes shared by every endpoint."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, Strict, StrictBool, StrictInt, model_validator
from pydantic_core import PydanticCustomError


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
        403: "The key lacks the scope (`forbidden`), or the tier withholds it (`tier_withholds_body`).",
        404: "No such object for this key's tenant (`*_not_found`), or no such endpoint.",
        409: "Conflicts with the current state (`version_conflict`, `review_state_conflict`, ...).",
        413: "Over a size limit (`payload_too_large`, `too_many_trajectories`, `too_many_steps`, "
        "`field_too_long`, `too_many_items`).",
        422: "Does not match the schema (`validation_error`).",
        429: "Rate limit for this key (`rate_limited`); see Retry-After.",
        503: "A backing service is down (`database_unavailable`); retry shortly.",
    }.items()
}


def _iso_only(value: object) -> object:
    # Pydantic reads a bare number as seconds since 1970; a query parameter documented as ISO 8601 should
    # not silently mean 1970 when someone passes `0.5`.
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        raise ValueError("use an ISO 8601 date-time such as 2026-11-30T12:00:00Z")
    return value


_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# A time in a query parameter: ISO 8601 only.
Timestamp = Annotated[datetime, BeforeValidator(_iso_only)]


def no_nul(value: Any) -> Any:
    """Refuse U+0000 anywhere in a string or JSON value: PostgreSQL text and JSONB cannot hold it."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PydanticCustomError("nul_in_text", "text may not contain the NUL character (U+0000)")
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(key)
            no_nul(item)
    elif isinstance(value, list):
        for item in value:
            no_nul(item)
    return value


class Input(BaseModel):
    """A request body: no U+0000 in any of its text, at any depth (PostgreSQL text and JSONB refuse it)."""

    @model_validator(mode="after")
    def _no_nul(self) -> Self:
        for value in self.__dict__.values():
            if not isinstance(value, BaseModel):  # nested inputs check themselves
                no_nul(value)
        return self


# Inputs take JSON's own types: `false` is not a score of 0, and `0` is not `false`.
Number = Annotated[float, Strict()]
Count = StrictInt
Flag = StrictBool
# The opaque token of a page, as `next_cursor` gave it (URL-safe base64).
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,512}$"
