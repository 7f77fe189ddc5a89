"""SQL of the retrieval log: what /v1/retrieve answered, feedback on it, pinned strategies, item stats."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import cast

from sqlalchemy import ColumnElement, Table, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.storage.models import (
    Experience,
    ItemKind,
    Outcome,
    Retrieval,
    RetrievalItem,
    RetrievalSession,
    Skill,
    utcnow,
)

# The tables, for Core inserts (see `add`).
_RETRIEVAL = cast(Table, Retrieval.__table__)
_RETRIEVAL_ITEM = cast(Table, RetrievalItem.__table__)


@dataclass(frozen=True)
class LoggedItem:
    """One item of an answer as it is recorded; `rank` is its place in the ranking before withholding."""

    item_id: uuid.UUID
    kind: ItemKind
    version: int | None
    rank: int
    score: float
    withheld: bool = False


@dataclass(frozen=True)
class RetrievalLog:
    """Everything recorded about one answer (the service builds it; `add` writes it)."""

    retrieval_id: uuid.UUID
    tenant_id: uuid.UUID
    api_key_id: uuid.UUID | None
    session_id: str | None
    step: int | None
    situation_hash: str
    strategy_id: uuid.UUID | None
    pin: bool  # this call chose the session's strategy: upsert `retrieval_session`
    items: tuple[LoggedItem, ...]


@dataclass(frozen=True)
class ItemStats:
    """How often an item was listed, withheld and used, and how those retrievals ended."""

    uses: int
    successes: int
    failures: int
    harmful: int
    listed: int
    n_with: int  # retrievals that listed it and got an outcome
    successes_with: int
    n_without: int  # retrievals that withheld it and got an outcome
    successes_without: int


def add(session: Session, log: RetrievalLog, *, latency_ms: float) -> None:
    """Record an answer, its items (the withheld one marked) and, on a first step, the session's pin.

    Core statements on the tables, compiled once and cached whatever the number of items (one
    executemany): this runs after every answer, and the ORM's unit of work and a VALUES list compiled
    anew for each count of items cost more CPU than the writes.
    """
    session.execute(
        insert(_RETRIEVAL).values(
            id=log.retrieval_id,
            tenant_id=log.tenant_id,
            api_key_id=log.api_key_id,
            session_id=log.session_id,
            step=log.step,
            situation_hash=log.situation_hash,
            strategy_skill_id=log.strategy_id,
            latency_ms=latency_ms,
        )
    )
    if log.items:
        session.execute(
            insert(_RETRIEVAL_ITEM),
            [
                {
                    "retrieval_id": log.retrieval_id,
                    "item_id": item.item_id,
                    "kind": item.kind,
                    "version": item.version,
                    "rank": item.rank,
                    "score": item.score,
                    "withheld": item.withheld,
                    "used": False,
                }
                for item in log.items
            ],
        )
    if log.pin and log.session_id is not None:
        now = utcnow()
        statement = insert(RetrievalSession).values(
            tenant_id=log.tenant_id,
            session_id=log.session_id,
            strategy_skill_id=log.strategy_id,
            created_at=now,
            updated_at=now,
        )
        session.execute(
            statement.on_conflict_do_update(
                index_elements=[RetrievalSession.tenant_id, RetrievalSession.session_id],
                set_={"strategy_skill_id": statement.excluded.strategy_skill_id, "updated_at": now},
            )
        )


def get(
    session: Session, tenant_id: uuid.UUID, retrieval_id: uuid.UUID, *, lock: bool = False
) -> Retrieval | None:
    """The tenant's retrieval; with `lock`, held until the transaction ends (one outcome per retrieval)."""
    query = select(Retrieval).where(Retrieval.tenant_id == tenant_id, Retrieval.id == retrieval_id)
    return session.scalars(query.with_for_update() if lock else query).one_or_none()


def unsettled(
    session: Session, tenant_id: uuid.UUID, retrieval_ids: Collection[uuid.UUID]
) -> Sequence[Retrieval]:
    """Those of the tenant's retrievals that have no outcome yet, locked until the transaction ends.

    Rows another transaction holds (feedback settling them right now) are skipped, not waited for: that
    transaction gives them their outcome, and waiting could deadlock with it over the items' rows.
    """
    if not retrieval_ids:
        return []
    return session.scalars(
        select(Retrieval)
        .where(
            Retrieval.tenant_id == tenant_id,
            Retrieval.id.in_(list(retrieval_ids)),
            Retrieval.outcome.is_(None),
        )
        .order_by(Retrieval.id)
        .with_for_update(skip_locked=True)
    ).all()


def items_of(session: Session, retrieval_id: uuid.UUID) -> Sequence[RetrievalItem]:
    """A retrieval's items, in rank order."""
    return session.scalars(
        select(RetrievalItem).where(RetrievalItem.retrieval_id == retrieval_id).order_by(RetrievalItem.rank)
    ).all()


def settle(
    session: Session,
    retrieval: Retrieval,
    used: Sequence[RetrievalItem],
    *,
    outcome: Outcome,
    reason: str | None,
    alpha: float,
    beta: float,
) -> None:
    """Set the outcome once, mark the used items and add (alpha, beta) to their utility posteriors."""
    retrieval.outcome = outcome
    retrieval.feedback_reason = reason
    retrieval.feedback_at = utcnow()
    for item in used:
        item.used = True
    for model, kind in ((Experience, ItemKind.EXPERIENCE), (Skill, ItemKind.SKILL)):
        ids = [i.item_id for i in used if i.kind == kind]
        if ids:
            session.execute(
                update(model)
                .where(model.tenant_id == retrieval.tenant_id, model.id.in_(ids))
                .values(alpha=model.alpha + alpha, beta=model.beta + beta)
            )
    session.flush()


def item_stats(session: Session, tenant_id: uuid.UUID, item_id: uuid.UUID) -> ItemStats:
    """Counts over every retrieval of the tenant that listed or withheld this item."""
    item, ret = RetrievalItem, Retrieval
    used = item.used.is_(True)
    listed = item.withheld.is_(False)
    withheld = item.withheld.is_(True)
    decided = ret.outcome.is_not(None)
    success = ret.outcome == Outcome.SUCCESS

    def count(*conditions: ColumnElement[bool]) -> ColumnElement[int]:
        return func.count().filter(*conditions)

    row = session.execute(
        select(
            count(used),
            count(used, success),
            count(used, ret.outcome == Outcome.FAILURE),
            count(used, ret.outcome == Outcome.HARMFUL),
            count(listed),
            count(listed, decided),
            count(listed, success),
            count(withheld, decided),
            count(withheld, success),
        )
        .select_from(item)
        .join(ret, ret.id == item.retrieval_id)
        .where(item.item_id == item_id, ret.tenant_id == tenant_id)
    ).one()
    return ItemStats(*(int(v) for v in row))
