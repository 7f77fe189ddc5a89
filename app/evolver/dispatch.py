"""Sending jobs by name, so that senders do not import the tasks (or their model dependencies)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from app.evolver.celery_app import get_celery
from app.evolver.names import TASK_ROUTES, TaskName
from app.observability.jobs import job_headers
from app.storage.session import enqueue_after_commit


def _queue_of(name: TaskName) -> str:
    prefix = name.value.split(".", 1)[0] + ".*"
    return str(TASK_ROUTES[prefix]["queue"])


def send_after_commit(session: Session, name: TaskName, *ids: uuid.UUID) -> None:
    """Send task `name` with these ids once `session` commits; dropped if it rolls back."""
    args = [str(i) for i in ids]
    headers = job_headers()  # the request id follows the job into the worker's log lines

    def send() -> None:
        get_celery().send_task(name.value, args=args, queue=_queue_of(name), headers=headers)

    enqueue_after_commit(session, send)
