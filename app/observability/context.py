"""The request id and tenant of the work in hand: set per request by the API and per job by the worker."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = "X-Request-ID"
# Short and safe to echo into headers and log lines: uuids, ULIDs, W3C trace ids.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@dataclass
class WorkContext:
    """What log lines say about the work in hand.

    Mutable on purpose: FastAPI runs sync dependencies in threads, each with a copy of the request's
    context, so `authenticate` can only tell the rest of the request its tenant through this shared object.
    """

    request_id: str | None
    tenant: str | None = None
    task: str | None = None


# A ContextVar is per task and per thread by design; it must live at module level to be shared.
_current: ContextVar[WorkContext | None] = ContextVar("skillfoundry_work_context", default=None)


def current() -> WorkContext | None:
    """The context of the request or job in hand, if any."""
    return _current.get()


def new_request_id() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def valid_request_id(value: str | None) -> str | None:
    """`value` if it is a usable request id (1 to 64 of `A-Za-z0-9._:-`), else None."""
    if value is not None and _VALID_REQUEST_ID.fullmatch(value):
        return value
    return None


@contextmanager
def bound(
    request_id: str | None, *, tenant: str | None = None, task: str | None = None
) -> Iterator[WorkContext]:
    """Make a new context current for the duration of the block."""
    context = WorkContext(request_id=request_id, tenant=tenant, task=task)
    token = _current.set(context)
    try:
        yield context
    finally:
        _current.reset(token)


def enter(context: WorkContext | None) -> None:
    """Make `context` current until the next `enter` (for callers that cannot wrap a block: signals)."""
    _current.set(context)


def bind_tenant(tenant_id: uuid.UUID | str) -> None:
    """Record the tenant of the request in hand, once authenticated."""
    context = _current.get()
    if context is not None:
        context.tenant = str(tenant_id)
