"""Ingest: store posted trajectories in one transaction and schedule their processing."""
