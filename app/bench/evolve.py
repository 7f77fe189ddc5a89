"""`skillfoundry bench evolve`: distillation throughput of one worker process, cache share, dedup rate.

Runs in this process, as a worker would: a private embedded PostgreSQL, generated 20-step
text-game trajectories stored through the real ingest service, then `pipeline.process_ingest`
on each event, timed. The yardstick is the model's own encode rate on the same raw observations.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.bench.ingest import STEPS_PER_TRAJECTORY, machine_info, make_trajectory
from app.config import Settings
from app.embedded import scratch_database
from app.embedding import get_embedder
from app.evolver import pipeline
from app.ingestion import service as ingestion
from app.storage.repositories import tenants
from app.storage.session import session_scope

TARGET_TPS = 10.0


def run_evolve_bench(
    settings: Settings,
    *,
    trajectories: int,
    per_event: int,
    seed: int,
    echo: Callable[[str], None],
    data: Path | None = None,
) -> dict[str, Any]:
    """Distill `trajectories` trajectories (generated, or read from `data`) in events of `per_event`."""
    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    if data is not None:
        recorded = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
        bodies = [recorded[i % len(recorded)] for i in range(trajectories)]
    else:
        bodies = [make_trajectory(rng) for _ in range(trajectories)]
    with scratch_database("sfbench-") as factory:
        embedder = get_embedder()
        echo("loading the model and measuring its encode rate on the raw observations...")
        embedder.warm()
        sample = [s["observation"] for b in bodies[: max(1, min(50, trajectories))] for s in b["steps"]]
        started = time.perf_counter()
        embedder.embed_documents(sample)
        encode_rate = len(sample) / (time.perf_counter() - started)

        with session_scope(factory) as session:
            tenant_id = tenants.create_tenant(session, "bench").id
        event_ids = []
        for start in range(0, trajectories, per_event):
            with session_scope(factory) as session:
                event_ids.append(
                    ingestion.accept(
                        session, tenant_id, bodies[start : start + per_event], schedule=False
                    ).event_id
                )

        totals: dict[str, float] = {}
        elapsed = 0.0
        for n, event_id in enumerate(event_ids, 1):
            begin = time.perf_counter()
            with session_scope(factory) as session:
                result = pipeline.process_ingest(session, event_id, embedder=embedder, settings=settings)
            elapsed += time.perf_counter() - begin
            for group in ("situations", "experiences"):
                for key, value in result[group].items():
                    totals[f"{group}.{key}"] = totals.get(f"{group}.{key}", 0) + value
            if n % max(1, len(event_ids) // 10) == 0 or n == len(event_ids):
                done = min(n * per_event, trajectories)
                echo(f"[evolve] {done}/{trajectories} trajectories, {done / elapsed:.1f}/s")

    steps = totals["situations.steps"]
    merged = totals["experiences.merged_exact"] + totals["experiences.merged_near"]
    figures = {
        "trajectories_per_s": round(trajectories / elapsed, 2),
        "steps_per_s": round(steps / elapsed, 1),
        "trajectories_per_s_at_20_steps": round(steps / elapsed / STEPS_PER_TRAJECTORY, 2),
        "seconds": round(elapsed, 2),
        "observations_from_cache_share": round(1 - totals["situations.encoded"] / steps, 3),
        "observations_encoded": int(totals["situations.encoded"]),
        "clusters_created": int(totals["situations.clusters_created"]),
        "experience_candidates": int(totals["experiences.candidates"]),
        "experiences_created": int(totals["experiences.created"]),
        "dedup_rate": round(merged / max(1.0, merged + totals["experiences.created"]), 3),
        "model_encode_rate_obs_per_s": round(encode_rate, 1),
        "model_yardstick_trajectories_per_s": round(encode_rate / STEPS_PER_TRAJECTORY, 2),
    }
    result_all: dict[str, Any] = {
        "benchmark": "evolve",
        "machine": machine_info(),
        "parameters": {
            "trajectories": trajectories,
            "per_event": per_event,
            "seed": seed,
            "data": str(data) if data else "generated text-game trajectories",
            "steps": int(steps),
        },
        "figures": figures,
        "target": {"trajectories_per_s": TARGET_TPS, "met": figures["trajectories_per_s"] >= TARGET_TPS},
    }
    met = "met" if result_all["target"]["met"] else "NOT met"
    head = f"skillfoundry bench evolve  {result_all['machine']['date']}  ({trajectories} trajectories)"
    rows = [f"  {k:<38} {v}" for k, v in figures.items()]
    result_all["summary"] = "\n".join(
        [head, *rows, f"  target >= {TARGET_TPS} trajectories/s per worker: {met}"]
    )
    return result_all
