"""Task names and queues are data, so senders need not import the tasks."""

from __future__ import annotations

import enum


class Queue(enum.StrEnum):
    INGEST = "ingest"
    MAINTENANCE = "maintenance"


class TaskName(enum.StrEnum):
    PROCESS_INGEST = "ingest.process_event"
    CONSOLIDATE = "maintenance.consolidate"
    SWEEP_STALE_EVENTS = "maintenance.sweep_stale_events"


TASK_ROUTES = {
    "ingest.*": {"queue": Queue.INGEST.value},
    "maintenance.*": {"queue": Queue.MAINTENANCE.value},
}
