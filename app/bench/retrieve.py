"""`skillfoundry bench retrieve`: /v1/retrieve latency and queries/s, and the HNSW stage's recall@10.

One run, on a private embedded PostgreSQL in a temporary directory:

1. load: a synthetic library (experiences, skills with a head SKILL.md version, state clusters) over
   several tenants, with one `COPY ... (FORMAT BINARY)` per table; the HNSW and full-text indexes are
   dropped first and built after the load, each timed;
2. recall: for each query vector, the first 10 experiences of the vector source as `search.search`
   returns them (the service's SQL, `hnsw.ef_search` and iterative scan), against an exact numpy
   search over the same tenant's vectors, at the configured `retrieval_ef_search_floor` and a few
   wider ones; the exact search's own time is the yardstick. In the same process, the parts of a
   cached answer: the search alone and `service.retrieve` with a warm cache, query by query;
3. latency: against a real API process (uvicorn) on a free loopback port, one client posts distinct
   observations (the service embeds each: uncached) and then repeats seen ones (the in-process LRU
   answers: cached); the 64 task texts are embedded during the warm-up, as an agent sends one task
   for many steps. Latency is the handler's own `Server-Timing`, cross-checked with the
   `latency_ms` the service records;
4. throughput: queries/s with 1 and 4 concurrent clients, cached and uncached observations.

The vectors. Real queries are MiniLM embeddings of normalised text-game observations, so the
library lives in the same region of the space: `anchors` generated observations are embedded with
the real model, and every vector is built around them with isotropic Gaussian noise g ~ N(0, I/384)
(norm about 1) and normalised:

    state cluster centre  c = unit(anchor + CLUSTER_SPREAD * g)   cos(c, anchor) ~ 0.86
    experience            e = unit(c + ITEM_SPREAD * g)           cos(e, c) ~ 0.90, cos(e, e') ~ 0.81
    skill                 s = unit(anchor + SKILL_SPREAD * g)     cos(s, anchor) ~ 0.82

Clusters of one anchor are about 0.74 alike, below the evolver's 0.85 cluster threshold, as distinct
clusters are; experiences fall in clusters uniformly at random (about 12 per cluster at full size).
Every tenant draws its own clusters around the same anchors, so a tenant's nearest neighbours are
interleaved with three times as many of other tenants', which the filtered HNSW scan must skip.
Texts (experience lessons, SKILL.md bodies, cluster representatives) are generated from the same
vocabulary as the observations so that the full-text source finds matches; they are not derived
from the vectors. Two recall figures: for the query vectors the service searches with (MiniLM
embeddings of fresh observations, which sit near anchors, among many near-equidistant items: the
harder case, and the one the aim is judged on) and for vectors drawn like experiences (near one
cluster).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt
import psycopg
import typer
from sqlalchemy.orm import Session, sessionmaker

from app.bench.ingest import (
    ADJECTIVES,
    CONTAINERS,
    DIRECTIONS,
    FEATURES,
    ITEMS,
    ROOMS,
    machine_info,
    percentile,
)
from app.config import Settings
from app.embedded import die_with_parent, scratch_database
from app.embedding import get_embedder
from app.embedding.sentence import MODEL_NAME
from app.evolver.normalize import normalize_observation
from app.retrieval.search import SearchQuery, build, content_words, ef_search, search
from app.retrieval.service import QueryEmbeddings, RetrieveRequest, retrieve, search_config
from app.skill_md import (
    PITFALLS,
    PROCEDURE,
    WHEN_TO_USE,
    Section,
    SkillDocument,
    content_hash,
    render,
    validate,
)
from app.storage.models import ItemKind, Scope, TrustTier
from app.storage.repositories import tenants
from app.storage.session import session_scope

Matrix = npt.NDArray[np.float32]

RETRIEVE_PATH = "/v1/retrieve"
TOP_K = 8  # the API's default top_k: the search settings (ef_search, per-source limit) follow from it
RECALL_AT = 10
DOMAIN = "text-game"
REVIEWED = int(TrustTier.REVIEWED)
CLUSTER_SPREAD = 0.6
ITEM_SPREAD = 0.48
SKILL_SPREAD = 0.7
EXPERIENCES_PER_CLUSTER = 12.5
MAX_ANCHORS = 256
CACHED_SET = 64  # distinct observations the cached phases cycle through (all in the LRU)
WARM_UP_REQUESTS = 5
PROGRESS_EVERY_S = 5.0
REQUEST_TIMEOUT_S = 60.0
MAINTENANCE_WORK_MEM = "1GB"
TIE_TOLERANCE = 1e-6
THROUGHPUT_CLIENTS = (1, 4)
EF_SWEEP = (40, 80, 160, 320)  # retrieval_ef_search_floor values the recall sweep tries
SWEEP_QUERIES = 200
PARTS_QUERIES = 100

# The aims of issue 5: (key, what, limit, higher is better).
AIMS = (
    ("uncached_p50_ms", "uncached p50 < 25 ms", 25.0, False),
    ("uncached_p99_ms", "uncached p99 < 80 ms", 80.0, False),
    ("cached_p50_ms", "cached p50 < 5 ms", 5.0, False),
    ("recall_at_10", "recall@10 >= 0.95", 0.95, True),
)

SURFACES = ("floor", "table", "shelf", "counter", "bench", "windowsill")
STATES = ("open", "closed", "locked")
VERBS = ("open", "take", "unlock", "examine", "put", "go", "read", "light", "search", "move")


@dataclass(frozen=True)
class Sizes:
    """How big the synthetic library is and how long each phase runs."""

    experiences: int
    skills: int
    tenants: int
    queries: int
    seconds: float

    @property
    def clusters_per_tenant(self) -> int:
        """State clusters per tenant: about 12.5 experiences each (2,000 per tenant at full size)."""
        return max(1, round(self.experiences / self.tenants / EXPERIENCES_PER_CLUSTER))

    @property
    def anchors(self) -> int:
        """Embedded observations the vectors are drawn around: about 8 clusters per anchor."""
        return min(MAX_ANCHORS, max(4, self.clusters_per_tenant // 8))


FULL = Sizes(experiences=100_000, skills=5_000, tenants=4, queries=500, seconds=10.0)
SMALL = Sizes(experiences=2_000, skills=100, tenants=2, queries=40, seconds=2.0)


# --- text -----------------------------------------------------------------------------------------


def _a(words: str) -> str:
    return ("an " if words[0] in "aeiou" else "a ") + words


def make_observation(rng: random.Random) -> str:
    """A text-game room description whose words vary (numbers vary too, but normalisation masks them)."""
    room = rng.choice(ROOMS)
    exits = ", ".join(sorted(rng.sample(DIRECTIONS, rng.randint(1, 3))))
    parts = [
        f"-= {room.title()} =- You are in {_a(rng.choice(ADJECTIVES))} {room} "
        f"(turn {rng.randint(1, 200)}, score {rng.randint(0, 30)}). Exits lead {exits}."
    ]
    for _ in range(rng.randint(2, 4)):
        kind = rng.random()
        if kind < 0.35:
            parts.append(f"There is {_a(rng.choice(STATES))} {rng.choice(CONTAINERS)} here.")
        elif kind < 0.7:
            parts.append(f"On the {rng.choice(SURFACES)} you see {_a(rng.choice(ITEMS))}.")
        elif kind < 0.85:
            parts.append(f"You are holding the {rng.choice(ITEMS)}.")
        else:
            parts.append(rng.choice(FEATURES))
    return " ".join(parts)


def make_task(rng: random.Random) -> str:
    """A task text like the ingest benchmark's."""
    return (
        f"Find the {rng.choice(ITEMS)} and put it in the {rng.choice(CONTAINERS)} in the {rng.choice(ROOMS)}."
    )


def distinct_observations(rng: random.Random, count: int, seen: set[str]) -> list[tuple[str, str]]:
    """`count` (observation, situation key) pairs whose keys are new to `seen` (which they join)."""
    out: list[tuple[str, str]] = []
    while len(out) < count:
        text = make_observation(rng)
        key = normalize_observation(text)
        if key not in seen:
            seen.add(key)
            out.append((text, key))
    return out


@dataclass(frozen=True)
class _Scene:
    room: str
    adjective: str
    container: str
    state: str
    item: str


def _scene(rng: random.Random) -> _Scene:
    return _Scene(
        rng.choice(ROOMS),
        rng.choice(ADJECTIVES),
        rng.choice(CONTAINERS),
        rng.choice(STATES),
        rng.choice(ITEMS),
    )


def _representative(s: _Scene) -> str:
    return normalize_observation(
        f"-= {s.room.title()} =- You are in {_a(s.adjective)} {s.room}. There is {_a(s.state)} "
        f"{s.container} here. On the floor you see {_a(s.item)}."
    )


def _lesson(rng: random.Random, s: _Scene) -> tuple[str, str, str, str]:
    """(polarity, text, action template, action example) of one experience in scene `s`."""
    if rng.random() < 0.7:
        verb = rng.choice(("open", "search", "examine"))
        text = (
            f"In {_a(s.adjective)} {s.room} with {_a(s.state)} {s.container}, {verb} the {s.container} "
            f"before anything else: the {s.item} is usually inside."
        )
        return "do", text, f"{verb} <container>", f"{verb} {s.container}"
    verb = rng.choice(("take", "move", "go"))
    text = (
        f"Avoid trying to {verb} the {s.item} while the {s.container} in the {s.room} is {s.state}: "
        f"it wastes moves and the game answers that you can't."
    )
    return "avoid", text, f"{verb} <object>", f"{verb} {s.item}"


def skill_document(rng: random.Random, number: int) -> tuple[SkillDocument, str]:
    """A small SKILL.md (When to use, Procedure, Pitfalls) and the skill's level."""
    verb, item, container, room = (
        rng.choice(VERBS),
        rng.choice(ITEMS),
        rng.choice(CONTAINERS),
        rng.choice(ROOMS),
    )
    level = rng.choices(("strategy", "functional", "atomic"), weights=(1, 3, 6))[0]
    name = f"{verb}-{item.split()[-1]}-{container}-{number}"
    description = (
        f"Use when a text game asks you to {verb} the {item} near a {container} in the {room}; "
        f"covers finding, opening and carrying."
    )
    doc = SkillDocument(
        name=name,
        description=description,
        metadata={"level": level, "source": "bench"},
        sections=(
            Section(WHEN_TO_USE, f"The task names the {item} or the {container}, or you are in the {room}."),
            Section(
                PROCEDURE,
                f"1. Go to the {room} and look around.\n2. Open the {container}; unlock it first if it is "
                f"locked.\n3. {verb.title()} the {item} and check your inventory.",
            ),
            Section(PITFALLS, f"- A locked {container} needs its key: search the other rooms first."),
        ),
    )
    return doc, level


# --- vectors --------------------------------------------------------------------------------------


def unit_rows(matrix: npt.NDArray[np.float64]) -> Matrix:
    """Rows scaled to length 1, as float32 (what pgvector stores)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    result: Matrix = (matrix / norms).astype(np.float32)
    return result


def around(rng: np.random.Generator, centres: Matrix, spread: float) -> Matrix:
    """One unit vector per row of `centres`: the centre plus N(0, spread^2 / dim) per dimension."""
    noise = rng.standard_normal(centres.shape) * (spread / np.sqrt(centres.shape[1]))
    return unit_rows(centres.astype(np.float64) + noise)


def _vector_bytes(matrix: Matrix) -> list[bytes]:
    """pgvector's binary form of each row: dim and an unused int16, then big-endian float32."""
    header = struct.pack(">HH", matrix.shape[1], 0)
    big = matrix.astype(">f4")
    return [header + big[i].tobytes() for i in range(big.shape[0])]


# --- loading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TenantData:
    """One tenant's generated share of the library: what is loaded and what exact search compares with."""

    id: uuid.UUID
    cluster_ids: list[uuid.UUID]
    cluster_vectors: Matrix
    representatives: list[str]
    scenes: list[_Scene]
    experience_ids: list[uuid.UUID]
    experience_clusters: npt.NDArray[np.int64]
    experience_vectors: Matrix
    skill_vectors: Matrix


def generate_tenant(
    tenant_id: uuid.UUID, experiences: int, skills: int, clusters: int, anchors: Matrix,
    rng: random.Random, vectors: np.random.Generator,
) -> _TenantData:  # fmt: skip
    """A tenant's clusters around the anchors, its experiences around the clusters, its skills."""
    centres = around(vectors, anchors[vectors.integers(0, len(anchors), clusters)], CLUSTER_SPREAD)
    scenes = [_scene(rng) for _ in range(clusters)]
    assigned = vectors.integers(0, clusters, experiences)
    return _TenantData(
        id=tenant_id,
        cluster_ids=[uuid.uuid4() for _ in range(clusters)],
        cluster_vectors=centres,
        representatives=[_representative(s) for s in scenes],
        scenes=scenes,
        experience_ids=[uuid.uuid4() for _ in range(experiences)],
        experience_clusters=assigned,
        experience_vectors=around(vectors, centres[assigned], ITEM_SPREAD),
        skill_vectors=around(vectors, anchors[vectors.integers(0, len(anchors), skills)], SKILL_SPREAD),
    )


CLUSTER_COLUMNS = (
    ("id", "uuid"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"), ("tenant_id", "uuid"),
    ("domain", "text"), ("centroid", "bytea"), ("size", "int4"), ("representative", "text"),
    ("embedding_model", "text"),
)  # fmt: skip
SKILL_COLUMNS = (
    ("id", "uuid"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"), ("tenant_id", "uuid"),
    ("domain", "text"), ("name", "text"), ("level", "text"), ("status", "text"), ("trust_tier", "int2"),
    ("source_key", "text"), ("head_version", "int4"), ("latest_version", "int4"), ("description", "text"),
    ("embedding", "bytea"), ("embedding_model", "text"), ("alpha", "float8"), ("beta", "float8"),
    ("provenance", "text"), ("risk_level", "text"), ("allowed_tools", "text"),
)  # fmt: skip
VERSION_COLUMNS = (
    ("id", "uuid"), ("created_at", "timestamptz"), ("skill_id", "uuid"), ("version", "int4"),
    ("content", "text"), ("files", "jsonb"), ("sha256", "text"), ("diff", "text"),
    ("changed_share", "float8"), ("change", "text"), ("distiller", "text"), ("actor", "text"),
    ("evidence_runs", "int4"), ("evidence_successes", "int4"), ("evidence_failures", "int4"),
    ("trust_tier", "int2"), ("risk_level", "text"), ("review", "text"), ("scan_ruleset", "text"),
    ("scan_malicious", "bool"), ("scan_score", "float8"), ("findings_count", "int4"),
)  # fmt: skip
EXPERIENCE_COLUMNS = (
    ("id", "uuid"), ("created_at", "timestamptz"), ("updated_at", "timestamptz"), ("tenant_id", "uuid"),
    ("domain", "text"), ("cluster_id", "uuid"), ("polarity", "text"), ("status", "text"), ("text", "text"),
    ("text_source", "text"), ("action_template", "text"), ("action_example", "text"), ("slots", "jsonb"),
    ("situation", "text"), ("task", "text"), ("reason", "text"), ("dedup_key", "text"),
    ("successes", "int4"), ("failures", "int4"), ("distinct_agents", "int4"), ("alpha", "float8"),
    ("beta", "float8"), ("embedding", "bytea"), ("embedding_model", "text"),
)  # fmt: skip
LOADED_TABLES = ("state_cluster", "skill", "skill_version", "experience")


def _copy(
    conn: psycopg.Connection[Any], table: str, columns: Sequence[tuple[str, str]],
    rows: Iterable[Sequence[Any]], total: int, echo: Callable[[str], None],
) -> float:  # fmt: skip
    """Binary COPY of `rows` into `table`; seconds taken. Vectors go in as pgvector's binary form."""
    # Binary COPY sends each field in its type's receive format: enum labels are their text, a vector
    # is the bytes `_vector_bytes` builds; so "text" and "bytea" dumpers serve those columns.
    names = ", ".join(name for name, _ in columns)
    started = time.perf_counter()
    next_echo = started + PROGRESS_EVERY_S
    with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([kind for _, kind in columns])
        for done, row in enumerate(rows, 1):
            copy.write_row(row)
            if time.perf_counter() >= next_echo:
                next_echo += PROGRESS_EVERY_S
                echo(f"[load]   {table}: {done}/{total} rows ({time.perf_counter() - started:.0f} s)")
    seconds = time.perf_counter() - started
    echo(f"[load]   {table}: {total} rows in {seconds:.1f} s")
    return seconds


def _search_indexes(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """(name, definition) of the HNSW and GIN indexes on the loaded tables, as the migrations made them."""
    rows = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND tablename = ANY(%s)"
        " AND (indexdef LIKE '%% USING hnsw %%' OR indexdef LIKE '%% USING gin %%') ORDER BY indexname",
        (list(LOADED_TABLES),),
    ).fetchall()
    return [(str(name), str(definition)) for name, definition in rows]


def _build_index(url: str, name: str, definition: str, echo: Callable[[str], None]) -> float:
    """Run one CREATE INDEX, echoing pg_stat_progress_create_index meanwhile; seconds taken."""
    failure: list[BaseException] = []

    def build() -> None:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'")
                conn.execute(definition)  # the migration's own text, read back from pg_indexes
        except BaseException as exc:  # handed to the caller's thread, which raises it
            failure.append(exc)

    started = time.perf_counter()
    worker = threading.Thread(target=build, name=f"bench-index-{name}", daemon=True)
    worker.start()
    with psycopg.connect(url, autocommit=True) as watch:
        while worker.is_alive():
            worker.join(PROGRESS_EVERY_S)
            row = watch.execute(
                "SELECT phase, tuples_done, tuples_total FROM pg_stat_progress_create_index LIMIT 1"
            ).fetchone()
            if worker.is_alive() and row is not None:
                echo(
                    f"[index]   {name}: {row[0]}, tuples {row[1]}/{row[2]}"
                    f" ({time.perf_counter() - started:.0f} s)"
                )
    if failure:
        raise failure[0]
    return time.perf_counter() - started


def load_library(
    factory: sessionmaker[Session], url: str, sizes: Sizes, anchors: Matrix, seed: int,
    echo: Callable[[str], None],
) -> tuple[list[_TenantData], dict[str, Any]]:  # fmt: skip
    """Create the tenants and COPY the library in, indexes built afterwards; tenants and timings."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    vectors = np.random.default_rng(seed)
    with session_scope(factory) as session:
        tenant_ids = [tenants.create_tenant(session, f"bench-{n}").id for n in range(sizes.tenants)]
    echo("[load] generating vectors and texts ...")
    data = [
        generate_tenant(
            tenant_id,
            _share(sizes.experiences, sizes.tenants, n),
            _share(sizes.skills, sizes.tenants, n),
            sizes.clusters_per_tenant,
            anchors,
            rng,
            vectors,
        )  # fmt: skip
        for n, tenant_id in enumerate(tenant_ids)
    ]
    now = datetime.now(UTC)
    copy_s: dict[str, float] = {}
    index_s: dict[str, float] = {}
    started = time.perf_counter()
    with psycopg.connect(url) as conn:
        indexes = _search_indexes(conn)
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        echo(f"[load] dropped {len(indexes)} HNSW/GIN indexes; copying ...")
        copy_s["state_cluster"] = _copy(
            conn, "state_cluster", CLUSTER_COLUMNS, _cluster_rows(data, now),
            sizes.clusters_per_tenant * sizes.tenants, echo,
        )  # fmt: skip
        skill_rows, version_rows = _skill_rows(data, rng, now)
        copy_s["skill"] = _copy(conn, "skill", SKILL_COLUMNS, skill_rows, len(skill_rows), echo)
        copy_s["skill_version"] = _copy(
            conn, "skill_version", VERSION_COLUMNS, version_rows, len(version_rows), echo
        )
        copy_s["experience"] = _copy(
            conn, "experience", EXPERIENCE_COLUMNS, _experience_rows(data, rng, now), sizes.experiences, echo
        )
        conn.execute(
            "UPDATE state_cluster c SET size = e.n FROM (SELECT cluster_id, count(*) AS n FROM experience"
            " GROUP BY cluster_id) e WHERE e.cluster_id = c.id"
        )
        conn.commit()
    load_s = time.perf_counter() - started
    for name, definition in indexes:
        echo(f"[index] building {name} ...")
        index_s[name] = _build_index(url, name, definition, echo)
        echo(f"[index] {name}: {index_s[name]:.1f} s")
    with psycopg.connect(url, autocommit=True) as conn:
        began = time.perf_counter()
        conn.execute("VACUUM ANALYZE " + ", ".join(LOADED_TABLES))
        vacuum_s = time.perf_counter() - began
        server: dict[str, str] = dict(
            conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN"
                " ('max_parallel_maintenance_workers', 'shared_buffers', 'work_mem', 'server_version')"
            ).fetchall()
        )
    return data, {
        "copy_s": {k: round(v, 1) for k, v in copy_s.items()},
        "load_s": round(load_s, 1),
        "index_s": {k: round(v, 1) for k, v in index_s.items()},
        "maintenance_work_mem": MAINTENANCE_WORK_MEM,
        "vacuum_analyze_s": round(vacuum_s, 1),
        "server": server,
    }


def _share(total: int, parts: int, n: int) -> int:
    """Part `n` of `total` split into `parts` as evenly as possible."""
    return total // parts + (1 if n < total % parts else 0)


def _cluster_rows(data: Sequence[_TenantData], now: datetime) -> Iterator[tuple[Any, ...]]:
    for t in data:
        for cid, vector, representative in zip(
            t.cluster_ids, _vector_bytes(t.cluster_vectors), t.representatives, strict=True
        ):
            yield (cid, now, now, t.id, DOMAIN, vector, 0, representative, MODEL_NAME)


def _skill_rows(
    data: Sequence[_TenantData], rng: random.Random, now: datetime
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Skill rows and their head version rows (a generated SKILL.md each; the first is validated)."""
    skills: list[tuple[Any, ...]] = []
    versions: list[tuple[Any, ...]] = []
    for t in data:
        for number, vector in enumerate(_vector_bytes(t.skill_vectors)):
            doc, level = skill_document(rng, number)
            if not skills and (problems := validate(doc)):
                raise RuntimeError(f"the generated SKILL.md is not valid: {problems}")
            skill_id = uuid.uuid4()
            content = render(doc)
            alpha, beta = 1.0 + rng.randint(0, 20), 1.0 + rng.randint(0, 8)
            skills.append(
                (skill_id, now, now, t.id, DOMAIN, doc.name, level, "active", REVIEWED,
                 f"bench:{number}", 1, 1, doc.description, vector, MODEL_NAME, alpha, beta,
                 "distilled", "none", "")
            )  # fmt: skip
            # Loaded as a reviewed library (bodies served); not scanned, so the rescan task would scan it.
            versions.append(
                (uuid.uuid4(), now, skill_id, 1, content, {}, content_hash(content), "", 1.0, "created",
                 "heuristic", "bench", int(alpha + beta - 2), int(alpha - 1), int(beta - 1),
                 REVIEWED, "none", "accepted", "", False, 0.0, 0)
            )  # fmt: skip
    return skills, versions


def _experience_rows(
    data: Sequence[_TenantData], rng: random.Random, now: datetime
) -> Iterator[tuple[Any, ...]]:
    """Experience rows, tenant by tenant: a lesson about its cluster's scene, a task every 20 rows."""
    for t in data:
        task = make_task(rng)
        for i, (experience_id, vector) in enumerate(
            zip(t.experience_ids, _vector_bytes(t.experience_vectors), strict=True)
        ):
            cluster = int(t.experience_clusters[i])
            polarity, text, template, example = _lesson(rng, t.scenes[cluster])
            if i % 20 == 0:
                task = make_task(rng)
            successes, failures = rng.randint(0, 12), rng.randint(0, 6)
            yield (
                experience_id, now, now, t.id, DOMAIN, t.cluster_ids[cluster], polarity, "active", text,
                "heuristic", template, example, [], t.representatives[cluster], task, "bench",
                hashlib.sha256(experience_id.bytes).hexdigest(), successes, failures, rng.randint(1, 5),
                1.0 + successes, 1.0 + failures, vector, MODEL_NAME,
            )  # fmt: skip


# --- recall and the yardstick ---------------------------------------------------------------------


def exact_top(matrix: Matrix, query: Matrix, k: int) -> npt.NDArray[np.intp]:
    """Indices of the k rows most similar to `query` (unit vectors: dot product), best first."""
    scores = matrix @ query
    top = np.argpartition(-scores, k - 1)[:k]
    ordered: npt.NDArray[np.intp] = top[np.argsort(-scores[top])]
    return ordered


def recall_at(found: Sequence[uuid.UUID], scores_by_id: dict[uuid.UUID, float], kth: float, k: int) -> float:
    """Share of the k exact neighbours found; an item as close as the k-th (a tie) counts as found."""
    hits = sum(1 for item in dict.fromkeys(found[:k]) if scores_by_id.get(item, -2.0) >= kth - TIE_TOLERANCE)
    return min(hits, k) / k


def _vector_source(
    session: Session,
    tenant_id: uuid.UUID,
    vector: Sequence[float],
    terms: tuple[str, ...],
    settings: Settings,
) -> tuple[list[uuid.UUID], float]:
    """The experiences of the vector source, in rank order, and the search's own milliseconds."""
    started = time.perf_counter()
    found = search(
        session,
        SearchQuery(tenant_id=tenant_id, embedding=vector, terms=terms, top_k=TOP_K),
        search_config(settings),
    )
    elapsed = (time.perf_counter() - started) * 1000
    ranked = sorted(
        (c.ranks["vector"], c.id)
        for c in found.candidates
        if c.kind == ItemKind.EXPERIENCE and "vector" in c.ranks
    )
    return [item_id for _, item_id in ranked], elapsed


def measure_recall(
    factory: sessionmaker[Session], tenant: _TenantData, queries: Matrix, terms: Sequence[tuple[str, ...]],
    settings: Settings,
) -> dict[str, Any]:  # fmt: skip
    """Mean recall@10 of the service's vector source against exact search, and the search's timing."""
    matrix = tenant.experience_vectors
    recalls: list[float] = []
    search_ms: list[float] = []
    short = 0
    index = {item: i for i, item in enumerate(tenant.experience_ids)}
    with factory() as session:
        for q, words in zip(queries, terms, strict=True):
            found, elapsed = _vector_source(session, tenant.id, [float(x) for x in q], words, settings)
            search_ms.append(elapsed)
            short += len(found) < RECALL_AT
            scores = matrix @ q
            kth = float(scores[exact_top(matrix, q, RECALL_AT)[-1]])
            by_id = {item: float(scores[index[item]]) for item in found[:RECALL_AT] if item in index}
            recalls.append(recall_at(found, by_id, kth, RECALL_AT))
        session.rollback()
    return {
        "queries": len(recalls),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "min": round(min(recalls), 2),
        "share_perfect": round(sum(r == 1.0 for r in recalls) / len(recalls), 3),
        "answers_short_of_10": short,
        "search_ms": _percentiles(search_ms),
    }


def ef_sweep(
    factory: sessionmaker[Session], tenant: _TenantData, queries: Matrix, settings: Settings
) -> dict[str, dict[str, Any]]:
    """Recall@10 and the search's p50 at the configured `retrieval_ef_search_floor` and a few wider ones."""
    # Without full-text terms, so the time is the vector and cluster sources' (the text source does not
    # depend on ef_search).
    floors = sorted({settings.retrieval_ef_search_floor, *EF_SWEEP})
    out = {}
    for floor in floors:
        wider = settings.model_copy(update={"retrieval_ef_search_floor": floor})
        measured = measure_recall(factory, tenant, queries, [()] * len(queries), wider)
        out[str(floor)] = {
            "ef_search": ef_search(TOP_K, floor),
            "queries": measured["queries"],
            "recall_at_10": measured["recall_at_10"],
            "search_ms_p50": measured["search_ms"]["p50"],
        }
    return out


def measure_parts(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, queries: Sequence[tuple[str, str]],
    tasks: Sequence[str], settings: Settings,
) -> dict[str, Any]:  # fmt: skip
    """p50s in this process: the model's embed_query; per query, the search alone and `service.retrieve`."""
    # Search and service alternate query by query, so a change in the machine's load hits both alike.
    embedder = get_embedder()
    cache = QueryEmbeddings(len(queries) + len(tasks) + 1)
    for task in tasks:  # agents send one task for many steps: the service finds it cached
        cache.get(normalize_observation(task), embedder)
    embed_ms, search_ms, service_ms = [], [], []
    for _, key in queries:
        started = time.perf_counter()
        cache.get(key, embedder)  # a miss: the model runs, and the cache keeps the vector
        embed_ms.append((time.perf_counter() - started) * 1000)
    with factory() as session:
        for n, (text, key) in enumerate(queries):
            task = tasks[n % len(tasks)]
            terms = content_words((key, task), settings.retrieval_text_terms)  # as the service builds them
            query = SearchQuery(
                tenant_id=tenant_id, embedding=cache.get(key, embedder), terms=terms, top_k=TOP_K,
                task_embedding=cache.get(normalize_observation(task), embedder),
            )  # fmt: skip
            started = time.perf_counter()
            search(session, query, search_config(settings))
            search_ms.append((time.perf_counter() - started) * 1000)
            request = RetrieveRequest(task=task, observation=text, step=3, top_k=TOP_K)
            started = time.perf_counter()
            retrieve(session, tenant_id, request, embedder=embedder, settings=settings, cache=cache)
            service_ms.append((time.perf_counter() - started) * 1000)
        session.rollback()
    return {
        "queries": len(queries),
        "embed_ms_p50": round(percentile(embed_ms, 50), 2),
        "search_ms_p50": round(percentile(search_ms, 50), 2),
        "service_cached_ms_p50": round(percentile(service_ms, 50), 2),
        "service_minus_search_ms_p50": round(
            percentile([b - a for a, b in zip(search_ms, service_ms, strict=True)], 50), 2
        ),
    }


def plan_uses_hnsw(
    factory: sessionmaker[Session], tenant_id: uuid.UUID, vector: Sequence[float], settings: Settings
) -> dict[str, bool]:
    """Whether the planner reads each HNSW index for the service's query (else recall would be trivial)."""
    with factory() as session:
        driver = session.connection().connection.driver_connection
        if driver is None:
            raise RuntimeError("the session's connection is closed")
        text = build(
            SearchQuery(tenant_id=tenant_id, embedding=vector, terms=(), top_k=TOP_K), search_config(settings)
        ).as_string(driver)
        *settings_sql, select = text.split(";\n", 2)
        with driver.cursor() as cursor:
            for statement in settings_sql:
                cursor.execute(statement)
            cursor.execute("EXPLAIN " + select)
            plan = "\n".join(str(row[0]) for row in cursor.fetchall())
        session.rollback()
    return {
        index: index in plan
        for index in (
            "ix_experience_embedding_hnsw",
            "ix_skill_embedding_hnsw",
            "ix_state_cluster_centroid_hnsw",
        )
    }


def yardstick(tenant_matrix: Matrix, all_matrix: Matrix, queries: Matrix) -> dict[str, Any]:
    """p50 ms of an exact numpy search (matrix-vector product and argpartition) per query."""
    out: dict[str, Any] = {}
    for name, matrix in (("tenant", tenant_matrix), ("all", all_matrix)):
        times = []
        for q in queries:
            started = time.perf_counter()
            exact_top(matrix, q, RECALL_AT)
            times.append((time.perf_counter() - started) * 1000)
        out[f"{name}_vectors"] = matrix.shape[0]
        out[f"{name}_p50_ms"] = round(percentile(times, 50), 3)
    return out


# --- HTTP -----------------------------------------------------------------------------------------


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "mean": None, "max": None}
    return {
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "p99": round(percentile(values, 99), 2),
        "mean": round(float(np.mean(values)), 2),
        "max": round(max(values), 2),
    }


def server_timing(header: str | None, metric: str = "retrieve") -> float | None:
    """The `dur` of one metric of a Server-Timing header (`retrieve;dur=12.3, db;dur=4`), if there."""
    for entry in (header or "").split(","):
        name, *params = (part.strip() for part in entry.split(";"))
        if name == metric:
            for param in params:
                key, _, value = param.partition("=")
                if key.strip() == "dur":
                    with contextlib.suppress(ValueError):
                        return float(value.strip().strip('"'))
    return None


def _body(task: str, observation: str) -> dict[str, Any]:
    return {"task": task, "observation": observation, "step": 3, "top_k": TOP_K}


@dataclass
class _Tally:
    """Server-side and round-trip milliseconds of one phase; threads add under `lock`."""

    server_ms: list[float] = field(default_factory=list)
    client_ms: list[float] = field(default_factory=list)
    retrieval_ids: list[str] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, client: httpx.Client, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            response = client.post(RETRIEVE_PATH, json=body)
        except httpx.HTTPError:
            with self.lock:
                self.errors += 1
            return
        elapsed = (time.perf_counter() - started) * 1000
        measured = server_timing(response.headers.get("server-timing"))
        retrieval_id = response.json().get("retrieval_id") if response.status_code == 200 else None
        with self.lock:
            if measured is None or not isinstance(retrieval_id, str):
                self.errors += 1
                return
            self.server_ms.append(measured)
            self.client_ms.append(elapsed)
            self.retrieval_ids.append(retrieval_id)


def _client(base_url: str, api_key: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=REQUEST_TIMEOUT_S
    )


def _check(client: httpx.Client, body: dict[str, Any]) -> None:
    response = client.post(RETRIEVE_PATH, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"POST {RETRIEVE_PATH} answered {response.status_code}: {response.text[:500]}")
    if server_timing(response.headers.get("server-timing")) is None:
        raise RuntimeError(f"POST {RETRIEVE_PATH} sent no Server-Timing `retrieve;dur=...` header")


def _sequential(client: httpx.Client, bodies: Sequence[dict[str, Any]]) -> _Tally:
    tally = _Tally()
    for body in bodies:
        tally.post(client, body)
    return tally


class _Feed:
    """Request bodies for concurrent clients: a fresh observation each (until used up) or a cycle."""

    def __init__(self, bodies: Sequence[dict[str, Any]], *, cycle: bool) -> None:
        self._bodies = bodies
        self._cycle = cycle
        self._next = 0
        self._lock = threading.Lock()

    def take(self) -> dict[str, Any] | None:
        with self._lock:
            if not self._cycle and self._next >= len(self._bodies):
                return None
            body = self._bodies[self._next % len(self._bodies)]
            self._next += 1
            return body

    @property
    def used(self) -> int:
        """Bodies handed out so far."""
        return self._next

    @property
    def exhausted(self) -> bool:
        """Whether a feed of fresh observations ran out."""
        return not self._cycle and self._next >= len(self._bodies)


def _concurrent(
    base_url: str, api_key: str, feed: _Feed, clients: int, seconds: float, warm: dict[str, Any]
) -> dict[str, Any]:
    """`clients` threads post back to back for `seconds` (or until the feed runs out)."""
    tally = _Tally()
    connections = [_client(base_url, api_key) for _ in range(clients)]
    try:
        for connection in connections:
            _check(connection, warm)

        def loop(client: httpx.Client, deadline: float) -> None:
            while time.perf_counter() < deadline and (body := feed.take()) is not None:
                tally.post(client, body)

        started = time.perf_counter()
        threads = [
            threading.Thread(
                target=loop, args=(c, started + seconds), name=f"bench-retrieve-{n}", daemon=True
            )
            for n, c in enumerate(connections)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
    finally:
        for connection in connections:
            connection.close()
    done = len(tally.server_ms)
    return {
        "clients": clients,
        "requests": done,
        "errors": tally.errors,
        "elapsed_s": round(elapsed, 2),
        "queries_per_s": round(done / elapsed, 1) if elapsed > 0 else None,
        "server_ms_p50": _percentiles(tally.server_ms)["p50"],
        "client_ms_p50": _percentiles(tally.client_ms)["p50"],
        "ran_out_of_fresh_observations": feed.exhausted,
    }


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def api_process(database_url: str, workdir: Path, echo: Callable[[str], None]) -> Iterator[str]:
    """`skillfoundry api` on a free loopback port against `database_url` (rate limit off); its base URL."""
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = workdir / "api.log"
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SKILLFOUNDRY_") and k not in ("REDIS_URL",)
    }
    env.update(
        DATABASE_URL=database_url, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        SKILLFOUNDRY_RATE_LIMIT_PER_MINUTE="0",
    )  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own CLI, by the running interpreter
            [sys.executable, "-m", "app.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent,  # noqa: PLW1509
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the API exited with {process.returncode}:\n{_tail(log_path)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/healthz", timeout=1.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API did not answer at {base_url}:\n{_tail(log_path)}")
            time.sleep(0.2)
        echo(f"[api] up at {base_url} (pid {process.pid})")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


# --- the report -----------------------------------------------------------------------------------


def _aims(figures: dict[str, float | None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, what, limit, higher in AIMS:
        measured = figures.get(key)
        if measured is None:
            out[key] = {"what": what, "measured": None, "met": False, "verdict": "not measured"}
            continue
        met = measured >= limit if higher else measured < limit
        gap = abs(measured - limit)
        unit = "" if higher else " ms"
        verdict = f"met by {gap:.3g}{unit}" if met else f"missed by {gap:.3g}{unit}"
        out[key] = {"what": what, "measured": measured, "met": met, "verdict": verdict}
    return out


def _lscpu() -> dict[str, str]:
    """lscpu's model name, CPUs, threads per core and flags of interest (if lscpu is there)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout  # noqa: S607
    except (OSError, subprocess.SubprocessError):
        return {}
    wanted = ("Model name", "CPU(s)", "Thread(s) per core", "Core(s) per socket")
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in wanted:
            out[key.strip()] = value.strip()
    return out


def _summary(result: dict[str, Any]) -> str:
    m, p, load, rec, lat, tput, yard = (
        result["machine"], result["parameters"], result["load"], result["recall"], result["latency"],
        result["throughput"], result["yardstick"],
    )  # fmt: skip
    lines = [
        f"skillfoundry bench retrieve  {m['date']}",
        f"machine: {m.get('lscpu', {}).get('Model name', m['cpu_model'])}, {m['cpu_count']} CPUs,"
        f" {m['memory_gib']} GiB; load average {m['load_average_start']} -> {m['load_average_end']}",
        f"library: {p['experiences']} experiences, {p['skills']} skills, {p['state_clusters']} state clusters"
        f" over {p['tenants']} tenants; measured tenant: {p['tenant_experiences']} experiences",
        f"load: COPY {load['load_s']} s; indexes "
        + ", ".join(f"{k} {v} s" for k, v in load["index_s"].items()),
        f"plan reads HNSW: {result['plan_uses_hnsw']}",
        "",
        f"latency (server-side, Server-Timing), {p['queries']} queries each:",
    ]
    for name in ("uncached", "cached"):
        s, c, r = lat[name]["server_ms"], lat[name]["client_ms"], lat[name]["recorded_ms"]
        lines.append(
            f"  {name:<9} p50 {s['p50']} / p95 {s['p95']} / p99 {s['p99']} ms; round trip p50 {c['p50']} ms;"
            f" recorded latency_ms p50 {r['p50']} ms ({r['rows']} rows); errors {lat[name]['errors']}"
        )
    lines.append(
        f"  parts, p50 in this process: embed {lat['parts']['embed_ms_p50']} ms;"
        f" search SQL {lat['parts']['search_ms_p50']} ms"
        f" ({lat['parts']['search_without_text_ms_p50']} ms without the text source);"
        f" service.retrieve with a warm cache {lat['parts']['service_cached_ms_p50']} ms"
    )
    lines += ["", "throughput over HTTP (queries/s):"]
    for name, phase in tput.items():
        note = "  (ran out of fresh observations)" if phase["ran_out_of_fresh_observations"] else ""
        lines.append(
            f"  {name:<13} {phase['queries_per_s']:>7} q/s, server p50 {phase['server_ms_p50']} ms,"
            f" round trip p50 {phase['client_ms_p50']} ms, errors {phase['errors']}{note}"
        )
    sq, iq = rec["service_queries"], rec["in_distribution"]
    lines += [
        "",
        f"recall@10 of the vector source vs exact: {sq['recall_at_10']}"
        f" (MiniLM query vectors, {sq['queries']}),"
        f" {iq['recall_at_10']} (vectors drawn like experiences, {iq['queries']})",
        "  by retrieval_ef_search_floor, MiniLM queries without the text source (search SQL p50): "
        + ", ".join(
            f"{ef}: {v['recall_at_10']} ({v['search_ms_p50']} ms)"
            for ef, v in rec["by_ef_search_floor"].items()
        ),
        f"yardstick, exact numpy search p50: {yard['tenant_p50_ms']} ms over"
        f" {yard['tenant_vectors']} vectors, {yard['all_p50_ms']} ms over {yard['all_vectors']}",
        "",
        "aims:",
    ]
    for aim in result["aims"].values():
        lines.append(f"  {aim['what']:<24} {aim['measured']!s:>8}  {aim['verdict']}")
    return "\n".join(lines)


def resolve_sizes(
    *, small: bool, experiences: int | None, skills: int | None, tenant_count: int | None,
    queries: int | None, seconds: float | None,
) -> Sizes:  # fmt: skip
    """The preset (full or `--small`) with any option given on top."""
    base = SMALL if small else FULL
    sizes = Sizes(
        experiences=base.experiences if experiences is None else experiences,
        skills=base.skills if skills is None else skills,
        tenants=base.tenants if tenant_count is None else tenant_count,
        queries=base.queries if queries is None else queries,
        seconds=base.seconds if seconds is None else seconds,
    )
    if sizes.tenants < 1 or sizes.experiences < RECALL_AT * sizes.tenants or sizes.skills < sizes.tenants:
        raise typer.BadParameter("need tenants >= 1, experiences >= 10 per tenant and skills >= 1 per tenant")
    if sizes.queries < 1 or sizes.seconds <= 0:
        raise typer.BadParameter("--queries must be >= 1 and --seconds > 0")
    return sizes


def run_retrieve_bench(
    settings: Settings, sizes: Sizes, *, seed: int, echo: Callable[[str], None]
) -> dict[str, Any]:
    """Load a synthetic library, then measure latency, queries/s and recall@10; figures plus `summary`."""
    load_start = os.getloadavg()
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    seen: set[str] = set()
    echo(
        f"[bench] sizes {asdict(sizes)}; {sizes.anchors} anchors,"
        f" {sizes.clusters_per_tenant} clusters per tenant"
    )
    anchor_texts = distinct_observations(rng, sizes.anchors, seen)
    warm = distinct_observations(rng, WARM_UP_REQUESTS, seen)
    queries = distinct_observations(rng, sizes.queries, seen)
    fresh = distinct_observations(rng, max(500, int(sizes.seconds * 120)), seen)
    tasks = [make_task(rng) for _ in range(64)]

    embedder = get_embedder()
    echo("[model] loading MiniLM and embedding the anchors and query observations ...")
    embedder.warm()
    anchors = np.asarray(embedder.embed_documents([key for _, key in anchor_texts]), dtype=np.float32)
    query_vectors = np.asarray(embedder.embed_documents([key for _, key in queries]), dtype=np.float32)
    workdir = Path(tempfile.mkdtemp(prefix="sfbench-retrieve-"))
    try:
        with scratch_database("sfbench-") as factory:
            engine = factory.kw["bind"]
            url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            echo("[load] scratch database ready; loading the library ...")
            data, load = load_library(factory, url, sizes, anchors, seed, echo)
            tenant = data[0]

            echo("[recall] vector source vs exact search ...")
            terms = [
                content_words((key, tasks[n % len(tasks)]), settings.retrieval_text_terms)
                for n, (_, key) in enumerate(queries)
            ]
            picks = np.random.default_rng(seed + 1).integers(0, len(tenant.cluster_vectors), sizes.queries)
            drawn = around(np.random.default_rng(seed + 2), tenant.cluster_vectors[picks], ITEM_SPREAD)
            recall = {
                "service_queries": measure_recall(factory, tenant, query_vectors, terms, settings),
                "in_distribution": measure_recall(factory, tenant, drawn, [()] * len(drawn), settings),
                "by_ef_search_floor": ef_sweep(factory, tenant, query_vectors[:SWEEP_QUERIES], settings),
            }
            parts = measure_parts(factory, tenant.id, queries[:PARTS_QUERIES], tasks, settings)
            floor = str(settings.retrieval_ef_search_floor)
            parts["search_without_text_ms_p50"] = recall["by_ef_search_floor"][floor]["search_ms_p50"]
            plan = plan_uses_hnsw(factory, tenant.id, [float(x) for x in query_vectors[0]], settings)
            all_vectors = np.concatenate([t.experience_vectors for t in data])
            yard = yardstick(tenant.experience_vectors, all_vectors, query_vectors)
            del all_vectors
            echo(
                f"[recall] {recall['service_queries']['recall_at_10']} (service queries),"
                f" {recall['in_distribution']['recall_at_10']} (in distribution)"
            )

            with session_scope(factory) as session:
                _, api_key = tenants.create_key(session, tenant.id, "bench", [Scope.AGENT])
            with api_process(url, workdir, echo) as base_url:
                latency, throughput, recorded_ids = _http_phases(
                    base_url, api_key, tasks, warm, queries, fresh, sizes, echo
                )
            for name, ids in recorded_ids.items():
                latency[name]["recorded_ms"] = _recorded(url, ids)
            latency["parts"] = parts
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    machine = machine_info()
    machine["lscpu"] = _lscpu()
    machine["load_average_start"] = [round(x, 2) for x in load_start]
    machine["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    figures: dict[str, float | None] = {
        "uncached_p50_ms": latency["uncached"]["server_ms"]["p50"],
        "uncached_p99_ms": latency["uncached"]["server_ms"]["p99"],
        "cached_p50_ms": latency["cached"]["server_ms"]["p50"],
        "recall_at_10": recall["service_queries"]["recall_at_10"],
    }
    result: dict[str, Any] = {
        "benchmark": "retrieve",
        "machine": machine,
        "parameters": {
            **asdict(sizes),
            "seed": seed,
            "state_clusters": sizes.clusters_per_tenant * sizes.tenants,
            "anchors": sizes.anchors,
            "tenant_experiences": len(tenant.experience_ids),
            "top_k": TOP_K,
            "ef_search_floor": settings.retrieval_ef_search_floor,
            "generator": {
                "cluster_spread": CLUSTER_SPREAD,
                "item_spread": ITEM_SPREAD,
                "skill_spread": SKILL_SPREAD,
            },
        },
        "load": load,
        "plan_uses_hnsw": plan,
        "recall": recall,
        "yardstick": yard,
        "latency": latency,
        "throughput": throughput,
        "figures": figures,
        "aims": _aims(figures),
    }
    result["summary"] = _summary(result)
    return result


def _http_phases(
    base_url: str, api_key: str, tasks: Sequence[str], warm: Sequence[tuple[str, str]],
    queries: Sequence[tuple[str, str]], fresh: Sequence[tuple[str, str]], sizes: Sizes,
    echo: Callable[[str], None],
) -> tuple[dict[str, Any], dict[str, Any], dict[str, list[str]]]:  # fmt: skip
    def bodies(pairs: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
        return [_body(tasks[n % len(tasks)], text) for n, (text, _) in enumerate(pairs)]

    uncached = bodies(queries)
    cached_set = uncached[: min(CACHED_SET, len(uncached))]
    cached = [cached_set[n % len(cached_set)] for n in range(len(uncached))]
    with _client(base_url, api_key) as client:
        # One request per task: agents send one task for many steps, so the service has its embedding.
        warm_up = [_body(task, warm[n % len(warm)][0]) for n, task in enumerate(tasks)]
        echo(f"[latency] warming up ({len(warm_up)} requests: model load, every task embedded once) ...")
        for body in warm_up:
            _check(client, body)
        echo(f"[latency] {len(uncached)} distinct observations (embedded by the service) ...")
        first = _sequential(client, uncached)
        echo(f"[latency] {len(cached)} repeated observations (query-embedding cache) ...")
        second = _sequential(client, cached)
    latency: dict[str, Any] = {
        name: {
            "requests": len(t.server_ms),
            "errors": t.errors,
            "server_ms": _percentiles(t.server_ms),
            "client_ms": _percentiles(t.client_ms),
        }
        for name, t in (("uncached", first), ("cached", second))
    }
    echo(
        f"[latency] uncached p50 {latency['uncached']['server_ms']['p50']} ms,"
        f" cached p50 {latency['cached']['server_ms']['p50']} ms"
    )
    throughput: dict[str, Any] = {}
    fresh_bodies = bodies(fresh)
    for kind in ("cached", "uncached"):
        for clients in THROUGHPUT_CLIENTS:
            feed = _Feed(cached_set, cycle=True) if kind == "cached" else _Feed(fresh_bodies, cycle=False)
            echo(f"[throughput] {kind}, {clients} client(s), {sizes.seconds:g} s ...")
            phase = _concurrent(base_url, api_key, feed, clients, sizes.seconds, cached_set[0])
            if kind == "uncached":
                fresh_bodies = fresh_bodies[feed.used :]
            throughput[f"{kind}_{clients}"] = phase
            echo(f"[throughput]   {phase['queries_per_s']} queries/s, {phase['errors']} errors")
    return latency, throughput, {"uncached": first.retrieval_ids, "cached": second.retrieval_ids}


def _recorded(url: str, retrieval_ids: Sequence[str]) -> dict[str, Any]:
    """The latency_ms the service recorded for these retrievals (written after each answer was sent)."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT latency_ms FROM retrieval WHERE id = ANY(%s::uuid[])", (list(retrieval_ids),)
        ).fetchall()
    return {"rows": len(rows), **_percentiles([float(r[0]) for r in rows])}
