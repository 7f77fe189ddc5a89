"""Task names and queues are data, so senders need not import the tasks."""

from __future__ import annotations

import enum


class Queue(enum.StrEnum):
    INGEST = "ingest"
    MAINTENANCE = "maintenance"
    SKILLS = "skills"


class TaskName(enum.StrEnum):
    PROCESS_INGEST = "ingest.process_event"
    CONSOLIDATE = "maintenance.consolidate"
    SWEEP_STALE_EVENTS = "maintenance.sweep_stale_events"
    EVOLVE_SKILLS = "skills.evolve_event"
    EVOLVE_ALL_SKILLS = "skills.evolve_all"
    RESCAN_SKILLS = "maintenance.rescan_skills"
    EXPIRE_TRAJECTORIES = "maintenance.expire_trajectories"


TASK_ROUTES = {
    "ingest.*": {"queue": Queue.INGEST.value},
    "maintenance.*": {"queue": Queue.MAINTENANCE.value},
    "skills.*": {"queue": Queue.SKILLS.value},
}
