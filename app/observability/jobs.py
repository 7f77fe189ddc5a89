"""The request id follows a job into the worker: a Celery message header on send, the context on run.

Tasks stay thin and take ids only; the id rides in the message headers, which Celery hands to the
worker as `task.request.headers` (custom headers) both in a real worker and in an eager `apply`.
"""

from __future__ import annotations

from typing import Any

from celery.signals import setup_logging, task_postrun, task_prerun

from app.observability import context
from app.observability.logs import configure_logging

REQUEST_ID = "sf_request_id"
TENANT = "sf_tenant"


def job_headers() -> dict[str, str]:
    """Message headers carrying the current request id and tenant, for a job sent now."""
    work = context.current()
    if work is None:
        return {}
    headers = {REQUEST_ID: work.request_id, TENANT: work.tenant}
    return {name: value for name, value in headers.items() if value is not None}


def _enter_job(task: Any = None, **_: Any) -> None:
    request = getattr(task, "request", None)
    headers = getattr(request, "headers", None) or {}
    context.enter(
        context.WorkContext(
            request_id=context.valid_request_id(headers.get(REQUEST_ID)),
            tenant=headers.get(TENANT),
            task=getattr(task, "name", None),
        )
    )


def _leave_job(**_: Any) -> None:
    # The pool process runs one job after another on this thread: the next one must not inherit the id.
    context.enter(None)


def _setup_logging(**_: Any) -> None:
    # A receiver here stops Celery from configuring logging itself; the settings' format applies.
    from app.config import get_settings

    configure_logging(get_settings().log_format)


def connect_worker_signals() -> None:
    """Connect the job-context and logging handlers (idempotent: each has a dispatch uid)."""
    task_prerun.connect(_enter_job, dispatch_uid="skillfoundry.observability.enter_job")
    task_postrun.connect(_leave_job, dispatch_uid="skillfoundry.observability.leave_job")
    setup_logging.connect(_setup_logging, dispatch_uid="skillfoundry.observability.setup_logging")
