"""Opaque cursors for keyset pagination over (created_at, id), newest first."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from app.errors import InvalidCursor
from app.storage.repositories.trajectories import Cursor


def encode_cursor(cursor: Cursor) -> str:
    """The token a client passes back for the next page."""
    raw = json.dumps([cursor.created_at.isoformat(), str(cursor.id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str | None) -> Cursor | None:
    """The position a token names, or InvalidCursor (400)."""
    if not token:
        return None
    try:
        created_at, ident = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        return Cursor(datetime.fromisoformat(created_at), uuid.UUID(ident))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidCursor(detail={"cursor": token[:100]}) from exc
