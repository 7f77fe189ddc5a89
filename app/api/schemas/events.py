"""Background-job state as clients see it."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class EventOut(BaseModel):
    id: uuid.UUID
    kind: str
    status: Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED"]
    attempts: int
    error: str | None
    result: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
