"""Candidates for one retrieve call, from PostgreSQL: pgvector HNSW, clusters, full text.

Two round trips (after psycopg's `BEGIN`, when the search opens the transaction):

    SET LOCAL hnsw.ef_search = N; SET LOCAL hnsw.iterative_scan = relaxed_order;
    SET LOCAL plan_cache_mode = force_generic_plan
    <the SELECT, a prepared statement with bind parameters>

Planning the SELECT with its values written in took PostgreSQL more CPU than some of its parts. With
bind parameters, psycopg prepares it (`prepare=True`), once per connection and shape (filters given,
text words or none, a session or none, body or not, limits) and again after a rollback (psycopg then
drops its statements); PostgreSQL plans it once, for any values. That generic plan is forced
(PostgreSQL would keep planning some shapes anew); like the hnsw settings, the setting holds for the
rest of the transaction, where nothing else runs in the service. `SET` takes no parameters, and a
SELECT with them cannot share a message with it: hence the second round trip, which costs far less
than the planning. A pooler that moves sessions between server connections (pgbouncer in transaction
mode) needs psycopg's prepared statements off, as with any prepared statement.

The values: the query vector as pgvector text from finite floats formatted here (once per embedding:
`QueryVector`, which the service's cache keeps), ids and words as parameters; numbers (limits) are
written into the text, as part of the shape. `build` writes the same SELECT with literals for values,
for `EXPLAIN`. Around the search, the request's transaction costs what every request's does: the
pool's pre-ping, psycopg's `BEGIN` before the first statement, the commit.

The SELECT gathers, as `UNION ALL` of CTEs each ranked by its own order:

- `vector`: experiences and skills nearest to the query embedding (HNSW, cosine);
- `cluster`: experiences of the state clusters nearest to the query embedding (the query embedding
  is the embedding of the normalised observation, which is what cluster centroids average);
- `text`: experience text and the head SKILL.md of skills against a few content words (GIN);

merges the ranks of one item into one row (a column per source), and adds the session's pinned
strategy and its children.
Every part is limited to the key's tenant and to what governance lets through (`VISIBLE_*`), and,
when the query names its task, experiences to those learned on a task of the same kind and strategies
to those planning for one (their task cluster), both by `experience_task_fit`.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from app.retrieval.ranking import CLUSTER, TEXT, VECTOR, Candidate
from app.storage.models import EMBEDDING_DIM, ItemKind, TrustTier

# What governance lets retrieval return (issue 6): every source and the final join use these
# predicates, so a hidden item cannot enter through any path. Skills need an active status and a head
# at T1 or above (T0 is quarantined); only T2 and above have their body served (`SERVED_BODY_TIER`).
MIN_SERVED_TIER = int(TrustTier.UNVETTED)
SERVED_BODY_TIER = int(TrustTier.REVIEWED)
GRANTED_TOOLS_TIER = int(TrustTier.VETTED)
VISIBLE_EXPERIENCE = sql.SQL("e.status = 'active'")
VISIBLE_SKILL = sql.SQL("s.status = 'active' AND s.trust_tier >= {tier}").format(
    tier=sql.Literal(MIN_SERVED_TIER)
)

# Words too common to find anything by; PostgreSQL drops its own stop words too, but each word here
# would take one of the few places in the text query.
_STOP_WORDS = frozenset(
    """
    about above after again all also and any are because been before being below between both but can
    could did does doing down during each few for from further had has have having her here hers him his
    how into its itself just more most not now off once only other our ours out over own same she should
    some such than that the their theirs them then there these they this those through too under until
    very was were what when where which while who whom why will with would you your yours
    task called see seen
    """.split()
)
_PLACEHOLDER = re.compile(r"<[a-z]+>")
_WORD = re.compile(r"[a-z]{3,}")


@dataclass(frozen=True, slots=True)
class QueryVector:
    """A query embedding as pgvector's text form, checked and formatted once; what the service caches.

    The text is all the search needs, and a 4 KiB string is a third of what a tuple of 384 floats
    takes in memory.
    """

    text: str

    @classmethod
    def of(cls, values: Sequence[float]) -> QueryVector:
        """The vector of these values (see `vector_literal`)."""
        return cls(vector_literal(values))


@dataclass(frozen=True)
class SearchFilters:
    """Client filters: domain (both kinds), level (skills), polarity (experiences)."""

    domain: str | None = None
    level: str | None = None
    polarity: str | None = None


@dataclass(frozen=True)
class SearchQuery:
    """One retrieve call as the search sees it."""

    tenant_id: uuid.UUID
    embedding: Sequence[float] | QueryVector  # of the normalised observation: experiences, clusters
    terms: tuple[str, ...]  # content words for full text; see `content_words`
    top_k: int
    filters: SearchFilters = SearchFilters()
    session_id: str | None = None
    include_body: bool = False
    # Skills describe kinds of task, so they are searched by the task's embedding when given.
    task_embedding: Sequence[float] | QueryVector | None = None


@dataclass(frozen=True)
class SearchConfig:
    """How wide each source looks; see Settings.retrieval_*."""

    ef_search_floor: int = 320
    per_source_factor: int = 2
    per_source_floor: int = 16
    clusters: int = 3
    text_matches: int = 100
    # Experiences learned on a task this unlike the query's (cosine of task texts below it) are left out,
    # and so are strategies whose task cluster is.
    experience_task_fit: float = 0.0


@dataclass(frozen=True)
class SessionState:
    """The agent session as stored: its pinned strategy (None: none yet, or no such session) and children."""

    strategy_id: uuid.UUID | None = None
    children: frozenset[uuid.UUID] = frozenset()


@dataclass(frozen=True)
class SearchResult:
    """The merged candidates and the session context, from one round trip."""

    candidates: tuple[Candidate, ...]
    session: SessionState


def ef_search(top_k: int, floor: int) -> int:
    """hnsw.ef_search for a query: four candidates per wanted item, at least `floor`, never below top_k."""
    return max(floor, 4 * top_k, top_k)


def per_source_limit(top_k: int, config: SearchConfig) -> int:
    """How many candidates each source returns (never more than the HNSW scan keeps)."""
    return min(
        max(config.per_source_floor, config.per_source_factor * top_k),
        ef_search(top_k, config.ef_search_floor),
    )


def content_words(texts: Iterable[str], limit: int) -> tuple[str, ...]:
    """Up to `limit` distinct content words of the texts, in order (placeholders and stop words dropped)."""
    words: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall(_PLACEHOLDER.sub(" ", text.casefold())):
            if word not in _STOP_WORDS:
                words.setdefault(word)
                if len(words) == limit:
                    return tuple(words)
    return tuple(words)


def vector_literal(values: Sequence[float]) -> str:
    """pgvector's text form of a vector, from finite floats only.

    pgvector stores float4, parsing each number with `strtof`; each value is rounded to float4 here and
    written with 9 significant digits, which name every float4 exactly. The stored vector is the one
    the shortest double form gave (embedders return float4 values), in half the text to write and parse.
    """
    if len(values) != EMBEDDING_DIM:
        raise ValueError(f"the query embedding has {len(values)} dimensions, not {EMBEDDING_DIM}")
    with np.errstate(over="ignore"):
        floats = np.asarray(values, dtype=np.float64).astype(np.float32)
    if not np.isfinite(floats).all():
        raise ValueError("the query embedding holds a non-finite number (or one beyond float4)")
    return "[" + ",".join([format(value, ".9g") for value in floats.tolist()]) + "]"


def _vector_text(value: Sequence[float] | QueryVector) -> str:
    return value.text if isinstance(value, QueryVector) else vector_literal(value)


@dataclass(frozen=True)
class Statement:
    """The SELECT of one search with named bind parameters, their values, and its hnsw.ef_search."""

    select: sql.Composable
    params: Mapping[str, Any]
    ef_search: int


def statement(query: SearchQuery, config: SearchConfig) -> Statement:
    """The search with bind parameters; its text depends only on the query's shape."""
    params: dict[str, Any] = {}

    def param(value: Any, cast: str) -> sql.Composable:
        name = f"p{len(params)}"
        params[name] = value
        return sql.SQL("{}::{}").format(sql.Placeholder(name), sql.SQL(cast))

    select = _select(query, config, param)
    return Statement(select, params, ef_search(query.top_k, config.ef_search_floor))


def build(query: SearchQuery, config: SearchConfig) -> sql.Composed:
    """The whole SQL text, values as literals: the settings and the SELECT that `statement` prepares."""

    def literal(value: Any, cast: str) -> sql.Composable:
        return sql.SQL("{}::{}").format(sql.Literal(value), sql.SQL(cast))

    return sql.SQL(";\n").join(
        [
            sql.SQL("SET LOCAL hnsw.ef_search = {}").format(
                sql.Literal(ef_search(query.top_k, config.ef_search_floor))
            ),
            sql.SQL("SET LOCAL hnsw.iterative_scan = relaxed_order"),
            _select(query, config, literal),
        ]
    )


def _select(
    query: SearchQuery, config: SearchConfig, param: Callable[[Any, str], sql.Composable]
) -> sql.Composed:
    """The SELECT, each value written by `param(value, cast)`; numbers are written as they are."""
    limit = per_source_limit(query.top_k, config)
    f = query.filters
    vector_type = f"vector({EMBEDDING_DIM})"
    vector = param(_vector_text(query.embedding), vector_type)
    task_vector = param(
        _vector_text(query.task_embedding if query.task_embedding is not None else query.embedding),
        vector_type,
    )
    tenant = param(query.tenant_id, "uuid")
    domain = param(f.domain, "text") if f.domain is not None else None
    values = {
        "vector": vector,
        "task_vector": task_vector,
        "tenant": tenant,
        "limit": sql.Literal(limit),
        "clusters": sql.Literal(config.clusters),
        "text_matches": sql.Literal(max(config.text_matches, limit)),
        "exp_visible": VISIBLE_EXPERIENCE,
        "skill_visible": VISIBLE_SKILL,
        "exp_filter": sql.Composed(
            [
                _equals("e.domain", domain),
                _equals("e.polarity", _param(param, f.polarity, "polarity")),
                _task_fit(query, config),
            ]
        ),
        "skill_filter": sql.Composed(
            [
                _equals("s.domain", domain),
                _equals("s.level", _param(param, f.level, "skill_level")),
                _strategy_fit(query, config),
            ]
        ),
        "cluster_filter": _equals("c.domain", domain),
        # websearch_to_tsquery never raises on odd input; the words are letters only anyway.
        "words": param(" or ".join(query.terms), "text") if query.terms else sql.SQL(""),
        "session_id": param(query.session_id, "text") if query.session_id is not None else sql.SQL(""),
        "tools_tier": sql.Literal(GRANTED_TOOLS_TIER),
        "body": sql.SQL("CASE WHEN s.trust_tier >= {tier} THEN v.content END").format(
            tier=sql.Literal(SERVED_BODY_TIER)
        )
        if query.include_body
        else sql.SQL("NULL::text"),
        "body_join": sql.SQL(
            "\nLEFT JOIN skill_version v ON v.skill_id = s.id AND v.version = s.head_version"
            if query.include_body
            else ""
        ),
    }
    text_ctes = _TEXT_CTES if query.terms else _NO_TEXT_CTES
    session_ctes = _SESSION_CTES if query.session_id is not None else _NO_SESSION_CTES
    return sql.SQL(_SELECT).format(
        text_ctes=sql.SQL(text_ctes).format(**values),
        session_ctes=sql.SQL(session_ctes).format(**values),
        **values,
    )


def _task_fit(query: SearchQuery, config: SearchConfig) -> sql.Composable:
    """` AND` the experience was learned on a task like the query's (or on one not embedded), if asked."""
    limit = _task_distance(query, config)
    if limit is None:
        return sql.SQL("")
    return sql.SQL(" AND (e.task_embedding IS NULL OR e.task_embedding <=> (SELECT v FROM t) <= {})").format(
        limit
    )


def _strategy_fit(query: SearchQuery, config: SearchConfig) -> sql.Composable:
    """` AND` a strategy plans for a kind of task like the query's (its task cluster's centroid), if asked."""
    limit = _task_distance(query, config)
    if limit is None:
        return sql.SQL("")
    return sql.SQL(
        " AND (s.level <> 'strategy' OR s.task_cluster_id IS NULL"
        " OR (SELECT tc.centroid <=> (SELECT v FROM t) FROM task_cluster tc WHERE tc.id = s.task_cluster_id)"
        " <= {})"
    ).format(limit)


def _task_distance(query: SearchQuery, config: SearchConfig) -> sql.Composable | None:
    """The largest cosine distance from the query's task that is still its kind of task; None: no filter."""
    if query.task_embedding is None or config.experience_task_fit <= 0:
        return None
    return sql.Literal(round(1.0 - config.experience_task_fit, 6))


def _param(
    param: Callable[[Any, str], sql.Composable], value: str | None, cast: str
) -> sql.Composable | None:
    return param(value, cast) if value is not None else None


def _equals(column: str, value: sql.Composable | None) -> sql.Composable:
    """` AND column = value` for a filter given, else nothing (`column` is ours, never the client's)."""
    if value is None:
        return sql.SQL("")
    return sql.SQL(" AND {} = {}").format(sql.SQL(column), value)


def search(session: Session, query: SearchQuery, config: SearchConfig) -> SearchResult:
    """Candidates for `query` with their rank in each source, and the session's pinned strategy."""
    session.flush()
    connection = session.connection()
    driver = connection.connection.driver_connection
    if driver is None:  # pragma: no cover - a checked-out connection always has its driver connection
        raise RuntimeError("the session's connection is closed")
    found = statement(query, config)
    try:
        with driver.cursor() as cursor:
            cursor.execute(
                f"SET LOCAL hnsw.ef_search = {int(found.ef_search)};"
                " SET LOCAL hnsw.iterative_scan = relaxed_order;"
                " SET LOCAL plan_cache_mode = force_generic_plan"
            )
            cursor.execute(found.select, found.params, prepare=True)
            rows = cursor.fetchall()
    except psycopg.Error as error:
        # Raised as SQLAlchemy raises driver errors, so the app's handlers (503 on a lost database)
        # and the pool's invalidation treat this statement like any other.
        if driver.closed:
            connection.invalidate(error)
        raise DBAPIError.instance(
            "retrieval search", None, error, psycopg.Error, connection_invalidated=driver.closed
        ) from error
    return _parse(rows)


def _parse(rows: Sequence[tuple[Any, ...]]) -> SearchResult:
    candidates: list[Candidate] = []
    strategy: uuid.UUID | None = None
    children: set[uuid.UUID] = set()
    for row in rows:
        role, kind, item_id = row[0], row[1], row[2]
        if role == "session":
            strategy = item_id
        elif role == "child":
            children.add(item_id)
        else:
            candidates.append(_candidate(ItemKind(kind), item_id, row[3:]))
    # The SELECT's row order is the plan's (a hash aggregate's, which a prepared statement's generic
    # plan may change): one order, whatever the plan.
    candidates.sort(key=lambda c: (c.kind, c.id))
    return SearchResult(tuple(candidates), SessionState(strategy, frozenset(children)))


def _candidate(kind: ItemKind, item_id: uuid.UUID, row: Sequence[Any]) -> Candidate:
    (vector_rank, cluster_rank, text_rank, similarity, alpha, beta) = row[:6]
    (text, polarity, template, example, slots) = row[6:11]
    (version, name, description, level, body, domain, tier, tools) = row[11:19]
    return Candidate(
        kind=kind,
        id=item_id,
        ranks=_ranks(vector_rank, cluster_rank, text_rank),
        similarity=float(similarity) if similarity is not None else 0.0,
        alpha=float(alpha),
        beta=float(beta),
        text=text or "",
        polarity=polarity,
        action_template=template,
        action_example=example,
        slots=tuple(slots or ()),
        version=version,
        name=name or "",
        description=description or "",
        level=level,
        body=body,
        domain=domain or "",
        trust_tier=tier,
        allowed_tools=tuple(tools.split()) if tools else (),
    )


def _ranks(vector: int | None, cluster: int | None, text: int | None) -> Mapping[str, int]:
    # In the order a jsonb object of the three kept its keys (shortest first), as the ranks once came:
    # `rank` sums over them, and floating-point sums depend on their order.
    ranks = {}
    if text is not None:
        ranks[TEXT] = int(text)
    if vector is not None:
        ranks[VECTOR] = int(vector)
    if cluster is not None:
        ranks[CLUSTER] = int(cluster)
    return ranks


# The query vector is a one-row CTE; `(SELECT v FROM q)` is an init plan, which an HNSW index scan
# accepts as its ORDER BY argument (as in pgvector's "nearest neighbours of a row" example).
_SELECT = """WITH
q AS (SELECT {vector} AS v),
t AS (SELECT {task_vector} AS v),
exp_vec AS (
    SELECT id, row_number() OVER (ORDER BY d, id) AS rank FROM (
        SELECT e.id, e.embedding <=> (SELECT v FROM q) AS d FROM experience e
        WHERE e.tenant_id = {tenant} AND {exp_visible}{exp_filter}
        ORDER BY e.embedding <=> (SELECT v FROM q) LIMIT {limit}) x),
near_cluster AS (
    SELECT c.id, c.centroid <=> (SELECT v FROM q) AS d FROM state_cluster c
    WHERE c.tenant_id = {tenant}{cluster_filter}
    ORDER BY c.centroid <=> (SELECT v FROM q) LIMIT {clusters}),
exp_cluster AS (
    SELECT e.id, row_number() OVER (ORDER BY nc.d, e.alpha / (e.alpha + e.beta) DESC, e.id) AS rank
    FROM near_cluster nc JOIN experience e ON e.cluster_id = nc.id
    WHERE e.tenant_id = {tenant} AND {exp_visible}{exp_filter}
    ORDER BY rank LIMIT {limit}),
skill_vec AS (
    SELECT id, row_number() OVER (ORDER BY d, id) AS rank FROM (
        SELECT s.id, s.embedding <=> (SELECT v FROM t) AS d FROM skill s
        WHERE s.tenant_id = {tenant} AND {skill_visible}{skill_filter}
        ORDER BY s.embedding <=> (SELECT v FROM t) LIMIT {limit}) x),
{text_ctes},
{session_ctes},
exp_hit AS (
    SELECT id, min(rank) FILTER (WHERE source = 'vector') AS vector_rank,
           min(rank) FILTER (WHERE source = 'cluster') AS cluster_rank,
           min(rank) FILTER (WHERE source = 'text') AS text_rank
    FROM (
        SELECT id, 'vector' AS source, rank FROM exp_vec
        UNION ALL SELECT id, 'cluster', rank FROM exp_cluster
        UNION ALL SELECT id, 'text', rank FROM exp_text) h
    GROUP BY id),
skill_hit AS (
    SELECT id, min(rank) FILTER (WHERE source = 'vector') AS vector_rank,
           min(rank) FILTER (WHERE source = 'text') AS text_rank
    FROM (
        SELECT id, 'vector' AS source, rank FROM skill_vec
        UNION ALL SELECT id, 'text', rank FROM skill_text
        UNION ALL SELECT id, NULL, NULL FROM pinned WHERE id IS NOT NULL
        UNION ALL SELECT id, NULL, NULL FROM child) h
    GROUP BY id)
SELECT 'candidate', 'experience', e.id, h.vector_rank, h.cluster_rank, h.text_rank,
       1 - (e.embedding <=> (SELECT v FROM q)), e.alpha, e.beta,
       e.text, e.polarity::text, e.action_template, e.action_example, e.slots,
       NULL::int, NULL::text, NULL::text, NULL::text, NULL::text, e.domain, NULL::smallint, NULL::text
FROM exp_hit h JOIN experience e ON e.id = h.id
WHERE e.tenant_id = {tenant} AND {exp_visible}
UNION ALL
SELECT 'candidate', 'skill', s.id, h.vector_rank, NULL::bigint, h.text_rank,
       1 - (s.embedding <=> (SELECT v FROM t)), s.alpha, s.beta,
       NULL, NULL, NULL, NULL, NULL,
       s.head_version, s.name, s.description, s.level::text, {body}, s.domain, s.trust_tier,
       CASE WHEN s.trust_tier >= {tools_tier} THEN s.allowed_tools END
FROM skill_hit h JOIN skill s ON s.id = h.id{body_join}
WHERE s.tenant_id = {tenant} AND {skill_visible}{skill_filter}
UNION ALL
SELECT 'session', NULL, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM pinned
UNION ALL
SELECT 'child', NULL, id, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL FROM child"""

# Stored tsvector columns, GIN-indexed (`ix_experience_text_tsv`, `ix_skill_version_content_tsv`).
# Only the first `text_matches` matches are ranked: a common word must not make a query rank a tenant.
# The text query is computed once (`w`, an init plan where used). Experiences are scanned in table order
# until enough match: the words of an observation are common there, and a scan that stops early costs
# less than reading the index; `ts_match_vq` is `@@` written so that the planner, which cannot see the
# words of a prepared query, does not take the index. Skill versions are matched through the index:
# a scan of every version, all tenants' and old ones too, costs ten times more.
_TEXT_CTES = """w AS (SELECT websearch_to_tsquery('english', {words}) AS tq),
exp_text AS (
    SELECT id, row_number() OVER (ORDER BY r DESC, id) AS rank FROM (
        SELECT m.id, ts_rank_cd(m.text_tsv, (SELECT tq FROM w)) AS r FROM (
            SELECT e.id, e.text_tsv FROM experience e
            WHERE ts_match_vq(e.text_tsv, (SELECT tq FROM w))
              AND e.tenant_id = {tenant} AND {exp_visible}{exp_filter}
            LIMIT {text_matches}) m
        ORDER BY r DESC LIMIT {limit}) x),
skill_text AS (
    SELECT id, row_number() OVER (ORDER BY r DESC, id) AS rank FROM (
        SELECT m.id, ts_rank_cd(m.content_tsv, (SELECT tq FROM w)) AS r FROM (
            SELECT s.id, v.content_tsv
            FROM skill_version v JOIN skill s ON s.id = v.skill_id AND v.version = s.head_version
            WHERE v.content_tsv @@ (SELECT tq FROM w)
              AND s.tenant_id = {tenant} AND {skill_visible}{skill_filter}
            LIMIT {text_matches}) m
        ORDER BY r DESC LIMIT {limit}) x)"""
_NO_TEXT_CTES = """exp_text AS (SELECT NULL::uuid AS id, NULL::bigint AS rank WHERE false),
skill_text AS (SELECT NULL::uuid AS id, NULL::bigint AS rank WHERE false)"""

# A session whose first step found no strategy holds NULL: the service then chooses one again.
_SESSION_CTES = """pinned AS (
    SELECT strategy_skill_id AS id FROM retrieval_session
    WHERE tenant_id = {tenant} AND session_id = {session_id}),
child AS (
    SELECT l.child_id AS id FROM skill_link l JOIN pinned p ON l.parent_id = p.id)"""
_NO_SESSION_CTES = """pinned AS (SELECT NULL::uuid AS id WHERE false),
child AS (SELECT NULL::uuid AS id WHERE false)"""
