"""The benchmarks: pure parts of `bench ingest` and `bench retrieve`, and one small retrieve run."""

from __future__ import annotations

import json
import random
import uuid

import numpy as np
import pytest

from app.api.schemas.trajectories import TrajectoryIn
from app.bench.evolve import run_evolve_bench
from app.bench.ingest import STEPS_PER_TRAJECTORY, make_payloads, make_trajectory, percentile
from app.bench.load import MAX_SESSION_STEPS, Traffic, _metric_sum, growth, run_load_bench
from app.bench.retrieve import (
    ITEM_SPREAD,
    Sizes,
    around,
    distinct_observations,
    exact_top,
    recall_at,
    run_retrieve_bench,
    server_timing,
    skill_document,
    unit_rows,
)
from app.config import Settings
from app.skill_md import validate


def test_percentile_interpolates_between_ranks() -> None:
    """Linear interpolation between closest ranks, input order irrelevant, empty input refused."""
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 25) == 2.0
    assert percentile([1.0, 2.0], 99) == pytest.approx(1.99)
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_generated_trajectories_are_valid_twenty_step_bodies() -> None:
    """Generated trajectories have 20 steps, 200-400 character observations and pass the wire schema."""
    rng = random.Random(7)  # noqa: S311 - test data
    trajectories = [make_trajectory(rng) for _ in range(20)]
    for trajectory in trajectories:
        model = TrajectoryIn.model_validate(trajectory)
        assert len(model.steps) == STEPS_PER_TRAJECTORY
        assert all(200 <= len(step.observation) <= 400 for step in model.steps)
        assert model.outcome.score is not None and 0.0 <= model.outcome.score <= 1.0
    assert len({t["agent_id"] for t in trajectories}) == len(trajectories)
    assert any(step.get("tool") for t in trajectories for step in t["steps"])

    batch, single = make_payloads(rng, 1, 100)[0], make_payloads(rng, 1, 1)[0]
    items = json.loads(batch)
    assert isinstance(items, list) and len(items) == 100
    TrajectoryIn.model_validate(items[-1])
    TrajectoryIn.model_validate(json.loads(single))


class TestRetrieveBench:
    """`skillfoundry bench retrieve`: its pure parts, and one tiny run that checks the report's shape."""

    def test_server_timing_reads_the_named_metric(self) -> None:
        """The handler's `retrieve;dur=` is read; other metrics, missing or odd headers give None."""
        assert server_timing("retrieve;dur=12.5") == 12.5
        assert server_timing('db;dur=3, retrieve;desc="all";dur=7') == 7.0
        assert server_timing("db;dur=3") is None
        assert server_timing("retrieve;dur=abc") is None
        assert server_timing(None) is None

    def test_recall_counts_ties_with_the_tenth_as_found(self) -> None:
        """recall@k is the share of exact neighbours found; an item as close as the k-th counts."""
        vectors = unit_rows(np.random.default_rng(3).standard_normal((50, 8)))
        query = vectors[0]
        top = exact_top(vectors, query, 10)
        scores = vectors @ query
        assert top[0] == 0 and list(scores[top]) == sorted(scores[top], reverse=True)
        ids = [uuid.uuid4() for _ in range(50)]
        by_id = {ids[i]: float(scores[i]) for i in range(50)}
        kth = float(scores[top[-1]])
        assert recall_at([ids[int(i)] for i in top], by_id, kth, 10) == 1.0
        worst = [ids[int(i)] for i in np.argsort(scores)[:10]]
        assert recall_at([ids[int(i)] for i in top[:5]] + worst[:5], by_id, kth, 10) == 0.5
        assert recall_at([ids[int(top[0])]] * 10, by_id, kth, 10) == 0.1  # duplicates count once

    def test_generated_library_parts_have_the_documented_structure(self) -> None:
        """Distinct situation keys; unit vectors about 0.9 alike to their centre; a valid SKILL.md."""
        rng = random.Random(5)  # noqa: S311 - test data
        pairs = distinct_observations(rng, 200, set())
        assert len({key for _, key in pairs}) == 200
        centres = unit_rows(np.random.default_rng(5).standard_normal((400, 384)))
        items = around(np.random.default_rng(6), centres, ITEM_SPREAD)
        assert np.allclose(np.linalg.norm(items, axis=1), 1.0, atol=1e-5)
        alike = float(np.mean(np.sum(items * centres, axis=1)))
        assert 0.85 < alike < 0.95
        doc, level = skill_document(rng, 1)
        assert validate(doc) == [] and level in ("strategy", "functional", "atomic")

    @pytest.mark.e2e
    def test_small_run_reports_every_figure(self) -> None:
        """A tiny run (scratch database, real model, API process): counts, recall, ordered percentiles."""
        sizes = Sizes(experiences=2_000, skills=100, tenants=2, queries=12, seconds=0.5)
        result = run_retrieve_bench(Settings(), sizes, seed=3, echo=lambda _: None)

        assert result["benchmark"] == "retrieve"
        assert result["parameters"]["tenant_experiences"] == 1_000
        assert set(result["load"]["copy_s"]) == {"state_cluster", "skill", "skill_version", "experience"}
        assert "ix_experience_embedding_hnsw" in result["load"]["index_s"]
        for name in ("service_queries", "in_distribution"):
            recall = result["recall"][name]
            assert recall["queries"] == 12
            assert 0.0 <= recall["min"] <= recall["recall_at_10"] <= 1.0
        sweep = result["recall"]["by_ef_search_floor"]
        assert "40" in sweep and all(0.0 <= v["recall_at_10"] <= 1.0 for v in sweep.values())
        for phase in ("uncached", "cached"):
            latency = result["latency"][phase]
            assert latency["requests"] == 12 and latency["errors"] == 0
            assert latency["recorded_ms"]["rows"] == 12
            for figures in (latency["server_ms"], latency["client_ms"], latency["recorded_ms"]):
                assert 0 < figures["p50"] <= figures["p95"] <= figures["p99"] <= figures["max"]
        assert set(result["throughput"]) == {"cached_1", "cached_4", "uncached_1", "uncached_4"}
        for phase in result["throughput"].values():
            assert phase["requests"] > 0 and phase["errors"] == 0 and phase["queries_per_s"] > 0
        assert result["yardstick"]["tenant_vectors"] == 1_000 and result["yardstick"]["all_vectors"] == 2_000
        assert set(result["aims"]) == {"uncached_p50_ms", "uncached_p99_ms", "cached_p50_ms", "recall_at_10"}
        assert all(isinstance(aim["met"], bool) for aim in result["aims"].values())
        assert "recall@10" in result["summary"]
        json.dumps(result)


class TestEvolveBench:
    """`skillfoundry bench evolve`: one tiny run that checks the report's shape."""

    @pytest.mark.e2e
    def test_small_run_reports_every_figure(self) -> None:
        """Two events on a scratch database with the real model: counts add up, the precision is named."""
        settings = Settings(embedding_precision="float32")
        result = run_evolve_bench(settings, trajectories=4, per_event=2, seed=3, echo=lambda _: None)

        figures, params = result["figures"], result["parameters"]
        assert params["steps"] == 4 * STEPS_PER_TRAJECTORY
        assert params["embedding_precision"] == "float32" and params["torch_threads"] >= 1
        assert figures["observations_from_cache_share"] == 0.0  # generated observations are all new
        assert 0 < figures["clusters_created"] <= figures["observations_encoded"] <= params["steps"]
        assert len(figures["model_encode_rate_before_after"]) == 2
        assert figures["trajectories_per_s"] > 0 and figures["share_of_yardstick"] > 0
        assert isinstance(result["target"]["met"], bool)
        assert "float32" in result["summary"]
        json.dumps(result)


class TestLoadBench:
    """`skillfoundry bench load`: the pure parts, and one short run on a private stack."""

    def test_traffic_mixes_kinds_and_posts_each_session_it_retrieved_for(self) -> None:
        """About the share asked of trajectories; a posted run carries its session's steps and ids."""
        rng = random.Random(1)  # noqa: S311 - test data
        traffic = Traffic(rng, tenants=3, agents=12, trajectory_share=0.1, repeat_share=0.5)
        seen: dict[str, list[dict[str, object]]] = {}
        kinds = []
        for _ in range(3000):
            kind, agent, body, _record = traffic.next()
            kinds.append(kind)
            if kind == "retrieve":
                seen.setdefault(str(body["session_id"]), []).append(body)
                assert body["step"] == len(seen[str(body["session_id"])]) - 1
            else:
                TrajectoryIn.model_validate(body)
                asked = [b["observation"] for b in seen.pop(str(body["session_id"]), [])][:MAX_SESSION_STEPS]
                if asked:  # else the agent ran without asking: a whole generated run
                    assert [s["observation"] for s in body["steps"]] == asked
                assert body["agent_id"] == agent.agent_id and agent.step == 0
        assert 0.08 < kinds.count("trajectory") / len(kinds) < 0.12
        assert {a.tenant for a in traffic.agents} == {0, 1, 2}

    def test_growth_compares_the_last_third_with_the_middle_third(self) -> None:
        """A flat series stopped growing; a steady climb did not; the slope is per minute."""
        flat = [{"t_s": t, "api": {"processes": 2, "rss_mib": 500.0 + (t < 10) * -100}} for t in range(0, 31)]
        climb = [{"t_s": t, "api": {"processes": 2, "rss_mib": 500.0 + 10 * t}} for t in range(0, 31)]
        assert growth(flat, "api", 30)["stopped_growing"] is True  # type: ignore[index]
        rising = growth(climb, "api", 30)
        assert rising is not None and rising["stopped_growing"] is False
        assert rising["last_third_slope_mib_per_min"] == pytest.approx(600.0)
        assert growth([], "api", 30) is None

    def test_metric_sum_adds_labels_and_reads_an_empty_gauge_as_zero(self) -> None:
        text = (
            "# TYPE skillfoundry_events_open gauge\n"
            'skillfoundry_events_open{kind="ingest",status="PENDING"} 3.0\n'
            'skillfoundry_events_open{kind="ingest",status="RUNNING"} 1.0\n'
            "# TYPE skillfoundry_queue_depth gauge\n"
        )
        assert _metric_sum(text, "skillfoundry_events_open") == 4.0
        assert _metric_sum(text, "skillfoundry_queue_depth") == 0.0
        assert _metric_sum(text, "skillfoundry_missing") is None

    @pytest.mark.e2e
    def test_short_run_reports_every_figure(self) -> None:
        """A few seconds at a low rate on a private stack: every figure is there and plausible (no timing)."""
        result = run_load_bench(
            Settings(), rate=6.0, seconds=6.0, tenants=2, agents=6, concurrency=16, api_workers=1,
            trajectory_share=0.2, repeat_share=0.5, seed_runs=8, sample_every_s=1.0, seed=3, url=None,
            api_keys=[], api_pid=None, worker_pid=None, echo=lambda _: None,
        )  # fmt: skip
        json.dumps(result)
        library = result["library"]
        assert len(library["tenants"]) == 2
        for tenant in library["tenants"]:
            assert tenant["ingest_events"] == {"SUCCEEDED": 1}
            assert tenant["experiences"] > 0 and tenant["skills"] > 0
            assert tenant["skills_accepted"] == tenant["skills"]
        load = result["load"]
        assert (
            load["requests_sent"] > 0 and load["answered"] + load["errors_by_status"].get("unfinished", 0) > 0
        )
        assert 0 < load["achieved_rate_per_s"] <= 3 * 6.0
        assert load["error_rate"] is not None and 0 <= load["error_rate"] <= 1
        assert load["error_rate"] == 0, load[
            "errors_by_status"
        ]  # a low rate on an idle stack refuses nothing
        retrieve, trajectory = load["kinds"]["retrieve"], load["kinds"]["trajectory"]
        assert retrieve["requests"] > 0 and sum(load["mix"].values()) == pytest.approx(1.0, abs=0.01)
        for kind in (retrieve, trajectory):
            if kind["ok"]:
                lat = kind["latency_ms"]
                assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
                assert kind["service_ms"]["p50"] <= lat["p50"]  # sent no earlier than scheduled
        assert retrieve["server_timing_ms"]["p50"] > 0 and retrieve["answers_with_items_share"] > 0
        assert 0 <= retrieve["query_embedding_cached_share"] <= 1
        assert load["generator"]["send_lag_ms"]["p50"] >= 0 and load["timeline"]
        memory = result["memory"]
        assert memory["sampled"] and len(memory["samples"]) >= 3
        for name in ("api", "worker"):
            sample = memory["samples"][-1][name]
            assert sample["processes"] >= 1 and 50 < sample["rss_mib"] < 64 * 1024
            verdict = memory["growth"][name]
            assert verdict["middle_third_mean_mib"] > 0 and verdict["last_third_mean_mib"] > 0
            assert isinstance(verdict["stopped_growing"], bool)
        assert memory["samples"][-1]["events_open"] is not None
        assert "memory" in result["summary"] and "retrieve" in result["summary"]
