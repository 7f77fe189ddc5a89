"""Persistence: ORM models, sessions and repositories (all SQL lives here)."""
