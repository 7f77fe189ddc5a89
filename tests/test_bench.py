"""The pure parts of `skillfoundry bench ingest`: no services are started here."""

from __future__ import annotations

import json
import random

import pytest

from app.api.schemas.trajectories import TrajectoryIn
from app.bench.ingest import STEPS_PER_TRAJECTORY, make_payloads, make_trajectory, percentile


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
