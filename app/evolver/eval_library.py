"""A library learnt from recorded runs, as a deployment would learn it: for evaluations on a scratch database.

Each training run is accepted as its own ingest event, in file order, and distilled by the worker's
pipeline; then one consolidation pass (merging, generalising, retiring) and one skill cycle run over
everything, as the periodic jobs would.

One setting differs from a deployment: the per-minute cap on new experiences is lifted. It guards a
live tenant against floods; here minutes of replay stand for days of traffic, and with the cap the
library would depend on how fast the machine distils.

By default a reviewer (`eval-reviewer`) then accepts every version the scanner lets through, so
agents get skill bodies (T2), as they would once a team has reviewed its library.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.embedding import Embedder
from app.evolver import consolidate, pipeline, skill_cycle
from app.governance import review, risk
from app.ingestion import service as ingestion
from app.storage.models import ReviewState, RiskLevel, Scope
from app.storage.repositories import skills, tenants
from app.storage.session import session_scope

PROGRESS_EVERY = 20
REVIEWER = "eval-reviewer"
UNCAPPED = 10**9


@dataclass(frozen=True)
class Learnt:
    """The tenant that holds the library and what each stage did."""

    tenant_id: uuid.UUID
    train_runs: int
    experiences: dict[str, int]  # admission counts summed over the ingest events
    consolidation: dict[str, int]
    cycle: dict[str, object]

    def as_dict(self) -> dict[str, object]:
        """For JSON (the cycle without its per-skill decisions)."""
        return {
            "train_runs": self.train_runs,
            "experiences": self.experiences,
            "consolidation": self.consolidation,
            "cycle": {k: v for k, v in self.cycle.items() if k != "decisions"},
        }


def learn(
    factory: sessionmaker[Session],
    train: Sequence[Mapping[str, Any]],
    *,
    embedder: Embedder,
    settings: Settings,
    echo: Callable[[str], None] = lambda _: None,
    tenant_name: str = "eval",
    review: bool = True,
) -> Learnt:
    """A new tenant whose experiences and skills are learnt from `train` (API trajectory items).

    With `review`, a reviewer then accepts every distilled version (what a team does before its agents
    may read skill bodies); without it the skills stay T1 and agents get names and descriptions only.
    """
    settings = settings.model_copy(update={"max_new_experiences_per_minute": UNCAPPED})
    admitted: Counter[str] = Counter()
    with session_scope(factory) as session:
        tenant_id = tenants.create_tenant(session, tenant_name).id
    for n, body in enumerate(train, 1):  # one event per trajectory, in arrival order
        with session_scope(factory) as session:
            event_id = ingestion.accept(session, tenant_id, [dict(body)], schedule=False).event_id
        with session_scope(factory) as session:
            result = pipeline.process_ingest(session, event_id, embedder=embedder, settings=settings)
        admitted.update(result.get("experiences") or {})
        if n % PROGRESS_EVERY == 0 or n == len(train):
            echo(f"[eval] distilled {n}/{len(train)} training runs")
    with session_scope(factory) as session:
        merged = consolidate.consolidate(session, tenant_id, settings, embedder=embedder)
    echo(f"[eval] consolidated: {asdict(merged)}")
    with session_scope(factory) as session:
        stats = skill_cycle.evolve(
            session, tenant_id, embedder=embedder, settings=settings, batch=max(1000, len(train))
        )
    echo(f"[eval] skill cycle: {stats.as_dict() | {'decisions': '...'}}")
    if review:
        with session_scope(factory) as session:
            accepted = accept_all(session, tenant_id, actor=REVIEWER)
        echo(f"[eval] {REVIEWER} accepted {accepted} versions (T2: agents get their bodies)")
    return Learnt(
        tenant_id=tenant_id,
        train_runs=len(train),
        experiences=dict(admitted),
        consolidation=asdict(merged),
        cycle=stats.as_dict(),
    )


def accept_all(session: Session, tenant_id: uuid.UUID, *, actor: str) -> int:
    """Accept every pending version of the tenant whose risk allows it, publishing the heads; the count."""
    accepted = 0
    for skill in skills.all_of(session, tenant_id):
        for number in range(1, skill.latest_version + 1):
            version = skills.version(session, skill.id, number)
            if version is None or version.review != ReviewState.PENDING or version.actor == actor:
                continue
            if RiskLevel(version.risk_level).rank >= risk.BLOCKING.rank:
                continue
            review.accept(session, tenant_id, skill.id, number, actor=actor, reason="evaluation library",
                          publish=number == skill.head_version)  # fmt: skip
            accepted += 1
    return accepted


def agent_key(factory: sessionmaker[Session], tenant_id: uuid.UUID, name: str = "eval") -> str:
    """A new agent-scoped key of the tenant; its plaintext."""
    with session_scope(factory) as session:
        _, plaintext = tenants.create_key(session, tenant_id, name, [Scope.AGENT])
    return plaintext
