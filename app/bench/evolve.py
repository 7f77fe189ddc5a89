"""`skillfoundry bench evolve`: distillation throughput of one worker process, cache share, dedup rate.

Runs in this process, as a worker would: a private embedded PostgreSQL, generated 20-step
text-game trajectories stored through the real ingest service, then `pipeline.process_ingest`
on each event, timed. The yardstick is the model's own encode rate on the same raw observations.

Wall-clock rates on a shared machine move with its load. The CPU seconds that this process and
the database server spent in the timed part do not, much: with one torch thread
(`OMP_NUM_THREADS=1`) they measure the work itself, and compare versions on a busy machine.
With more threads they include the threads' spin-waits.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.bench.ingest import STEPS_PER_TRAJECTORY, machine_info, make_trajectory
from app.config import Settings
from app.embedded import scratch_database
from app.embedding import SentenceTransformerEmbedder
from app.embedding.sentence import bound_kernel_cache, quiet_threads
from app.evolver import memory, pipeline
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
    quiet_threads()  # as the embedder does, before torch is first imported
    bound_kernel_cache()  # as the worker does
    memory.bound_shape_caches()  # as the worker's pool processes do
    import torch  # loaded with the model anyway; importing it here keeps the CLI's --help quick

    rng = random.Random(seed)  # noqa: S311 - reproducible data, not secrets
    if data is not None:
        recorded = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
        bodies = [recorded[i % len(recorded)] for i in range(trajectories)]
    else:
        bodies = [make_trajectory(rng) for _ in range(trajectories)]
    with scratch_database("sfbench-") as factory:
        embedder = SentenceTransformerEmbedder(
            device=settings.embedding_device,
            batch_size=settings.embedding_batch_size,
            precision=settings.embedding_precision,
        )
        echo("loading the model and measuring its encode rate on the raw observations...")
        embedder.warm()
        sample = [s["observation"] for b in bodies[: max(1, min(50, trajectories))] for s in b["steps"]]
        rates = [_encode_rate(embedder, sample)]

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
        server = _server_cpu(factory)
        worker_cpu = time.process_time()
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
        worker_cpu = time.process_time() - worker_cpu
        server_cpu = _cpu_since(server, _server_cpu(factory))
        # Measured again after the run: on a shared machine the load drifts, and the mean of both is
        # the fairer yardstick; the two values show how much it drifted.
        rates.append(_encode_rate(embedder, sample))
        encode_rate = sum(rates) / len(rates)

    steps = totals["situations.steps"]
    merged = totals["experiences.merged_exact"] + totals["experiences.merged_near"]
    figures: dict[str, Any] = {
        "trajectories_per_s": round(trajectories / elapsed, 2),
        "steps_per_s": round(steps / elapsed, 1),
        "trajectories_per_s_at_20_steps": round(steps / elapsed / STEPS_PER_TRAJECTORY, 2),
        "seconds": round(elapsed, 2),
        "cpu_seconds_worker": round(worker_cpu, 2),
        "cpu_seconds_database": None if server_cpu is None else round(server_cpu, 2),
        "trajectories_per_cpu_s": (
            None if server_cpu is None else round(trajectories / (worker_cpu + server_cpu), 2)
        ),
        "observations_from_cache_share": round(1 - totals["situations.encoded"] / steps, 3),
        "observations_encoded": int(totals["situations.encoded"]),
        "clusters_created": int(totals["situations.clusters_created"]),
        "experience_candidates": int(totals["experiences.candidates"]),
        "experiences_created": int(totals["experiences.created"]),
        "dedup_rate": round(merged / max(1.0, merged + totals["experiences.created"]), 3),
        "model_encode_rate_obs_per_s": round(encode_rate, 1),
        "model_encode_rate_before_after": [round(r, 1) for r in rates],
        "model_yardstick_trajectories_per_s": round(encode_rate / STEPS_PER_TRAJECTORY, 2),
        "share_of_yardstick": round(steps / elapsed / encode_rate, 2),
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
            "embedding_precision": embedder.precision,
            "torch_threads": torch.get_num_threads(),
        },
        "figures": figures,
        "target": {"trajectories_per_s": TARGET_TPS, "met": figures["trajectories_per_s"] >= TARGET_TPS},
    }
    met = "met" if result_all["target"]["met"] else "NOT met"
    head = (
        f"skillfoundry bench evolve  {result_all['machine']['date']}  ({trajectories} trajectories, "
        f"{embedder.precision}, {torch.get_num_threads()} torch threads)"
    )
    rows = [f"  {k:<38} {v}" for k, v in figures.items()]
    result_all["summary"] = "\n".join(
        [head, *rows, f"  target >= {TARGET_TPS} trajectories/s per worker: {met}"]
    )
    return result_all


def _encode_rate(embedder: SentenceTransformerEmbedder, texts: list[str]) -> float:
    """Texts per second the model alone embeds, in one call."""
    started = time.perf_counter()
    embedder.embed_documents(texts)
    return len(texts) / (time.perf_counter() - started)


def _server_cpu(factory: sessionmaker[Session]) -> dict[int, float] | None:
    """CPU seconds so far of the database server's processes, by pid (None where /proc cannot tell)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        with session_scope(factory) as session:
            data = str(session.execute(text("SHOW data_directory")).scalar_one())
        postmaster = int((Path(data) / "postmaster.pid").read_text().split()[0])
        ticks = os.sysconf("SC_CLK_TCK")
        cpu: dict[int, float] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                # Fields after the command's closing parenthesis: state, ppid, ..., utime, stime.
                fields = stat.read_text().rsplit(")", 1)[1].split()
                pid = int(stat.parent.name)
                if pid == postmaster or int(fields[1]) == postmaster:
                    cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
        return cpu
    return None


def _cpu_since(before: dict[int, float] | None, after: dict[int, float] | None) -> float | None:
    """CPU seconds spent between two readings (processes started since count from zero)."""
    if before is None or after is None:
        return None
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())
