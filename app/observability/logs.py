"""Log lines as text for a terminal, or one JSON object per line for a log collector."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from app.observability import context

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Libraries that talk too much at INFO.
QUIET = ("pgserver", "httpx", "alembic.runtime.migration")


class JsonFormatter(logging.Formatter):
    """One JSON line per record: time, level, logger, message, request_id; tenant, task, error if known."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        work = context.current()
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": work.request_id if work is not None else None,
        }
        if work is not None and work.tenant is not None:
            entry["tenant"] = work.tenant
        if work is not None and work.task is not None:
            entry["task"] = work.task
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def logging_config(log_format: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` dict: root to stderr in `log_format`; uvicorn's loggers propagate to it.

    Also what `skillfoundry api` hands uvicorn, which applies it in each of its worker processes.
    """
    formatter = "json" if log_format == "json" else "text"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"format": TEXT_FORMAT},
            "json": {"()": f"{JsonFormatter.__module__}.{JsonFormatter.__qualname__}"},
        },
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": formatter, "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            **{name: {"level": "WARNING"} for name in QUIET},
        },
    }


def configure_logging(log_format: str) -> None:
    """Send this process's log lines to stderr in `log_format` (`text` or `json`)."""
    logging.config.dictConfig(logging_config(log_format))
