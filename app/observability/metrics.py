"""One app's Prometheus registry: request and retrieve latency in this process, and durable state."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest

from app.observability.state import Sources, StateCollector
from app.retrieval.service import Timings

REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# /v1/retrieve runs at every agent step; its budget is tens of milliseconds.
RETRIEVE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The registry an app serves at /metrics; built by `create_app`, so tests never share one."""

    def __init__(self, state: StateCollector) -> None:
        self.registry = CollectorRegistry()
        self.state = state
        self.requests = Histogram(
            "skillfoundry_http_request_duration_seconds",
            "HTTP requests to this API process, by method, route template and status class.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self.retrieve = Histogram(
            "skillfoundry_retrieve_duration_seconds",
            "Time /v1/retrieve spent answering in this API process (its Server-Timing).",
            buckets=RETRIEVE_BUCKETS,
            registry=self.registry,
        )
        self.retrieve_stages = Histogram(
            "skillfoundry_retrieve_stage_duration_seconds",
            "Time /v1/retrieve spent per stage: embed (query embeddings), search (SQL), rank.",
            ["stage"],
            buckets=RETRIEVE_BUCKETS,
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self.registry.register(state)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        self.requests.labels(method, route, f"{status // 100}xx").observe(seconds)

    def observe_retrieve(self, timings: Timings, seconds: float) -> None:
        """Count one /v1/retrieve answer and its stages."""
        self.retrieve.observe(seconds)
        self.retrieve_stages.labels("embed").observe(timings.embed_s)
        self.retrieve_stages.labels("search").observe(timings.search_s)
        self.retrieve_stages.labels("rank").observe(timings.rank_s)

    def render(self, sources: Sources) -> bytes:
        """The text exposition of everything, durable state read again if the cached read is stale."""
        self.state.refresh(sources)
        return generate_latest(self.registry)
