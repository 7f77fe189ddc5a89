"""Collective refinement decisions: enough evidence, whose failure, and what to do about it."""

import uuid

from app.evolver.skill_distill import RunStep, RunView
from app.evolver.skill_refine import Action, Blame, Group, RefineConfig, blame, contradicted, decide

TASK = "Your task is to find a(n) animal. First, focus on the thing. Then, move it to the red box."
CLUSTER = uuid.uuid4()
OTHER_CLUSTER = uuid.uuid4()
PROCEDURE = frozenset({"open door to <task:object>", "go to <task:object>", "focus on dove", "pick up dove"})
GOLD = ("open door to kitchen", "go to kitchen", "focus on dove", "pick up dove")


def run(
    actions: tuple[str, ...] = GOLD,
    *,
    success: bool | None = True,
    agent: str = "a1",
    cluster: uuid.UUID = CLUSTER,
    error: str | None = None,
) -> RunView:
    steps = [RunStep(action=a) for a in actions]
    if error is not None:
        steps[-1] = RunStep(action=steps[-1].action, error=error)
    return RunView(
        id=uuid.uuid4(),
        task=TASK,
        task_cluster_id=cluster,
        agent_id=agent,
        success=success,
        score=1.0 if success else 0.0,
        steps=tuple(steps),
    )


def group(runs: list[RunView], *, used: bool = True) -> Group:
    return Group(runs=runs, skill_id=uuid.uuid4(), skill_task_cluster=CLUSTER, procedure=PROCEDURE, used=used)


class TestBlame:
    def test_success_blames_no_one(self) -> None:
        assert blame(run(), PROCEDURE, 0.7) == Blame.NONE

    def test_failing_at_a_skill_step_blames_the_skill(self) -> None:
        assert blame(run(GOLD[:3], success=False), PROCEDURE, 0.7) == Blame.SKILL

    def test_an_unparsed_action_is_the_agents_failure(self) -> None:
        failed = run((*GOLD[:2], "grab dove"), success=False, error="No known action matches that input.")
        assert blame(failed, PROCEDURE, 0.7) == Blame.AGENT

    def test_leaving_the_procedure_is_the_agents_failure(self) -> None:
        assert blame(run((*GOLD[:2], "look at sofa"), success=False), PROCEDURE, 0.7) == Blame.AGENT

    def test_a_timeout_is_the_environments_failure(self) -> None:
        failed = run(GOLD[:2], success=False, error="Simulator timed out after 30 s")
        assert blame(failed, PROCEDURE, 0.7) == Blame.ENVIRONMENT


class TestDecide:
    def test_skips_with_too_few_runs_or_agents(self) -> None:
        decision = decide(group([run(), run()]), RefineConfig(min_runs=3, min_agents=2))
        assert decision.action == Action.SKIP
        assert "not enough evidence" in decision.reason
        one_agent = decide(group([run(), run(), run()]), RefineConfig(min_runs=3, min_agents=2))
        assert one_agent.action == Action.SKIP

    def test_a_failure_spike_counts_even_from_one_agent(self) -> None:
        runs = [run(GOLD[:3], success=False) for _ in range(3)]
        decision = decide(group(runs), RefineConfig(min_runs=3, min_agents=2, retire_below=0.0))
        assert decision.action == Action.IMPROVE
        assert decision.skill_failures == 3

    def test_retires_a_skill_whose_steps_keep_failing(self) -> None:
        runs = [run(GOLD[:3], success=False, agent=f"a{i}") for i in range(4)] + [run(agent="a9")]
        decision = decide(group(runs), RefineConfig(min_runs=3, min_agents=2, retire_below=0.25))
        assert decision.action == Action.RETIRE
        assert decision.successes == 1

    def test_agent_failures_do_not_touch_the_skill(self) -> None:
        unparsed = "No known action matches that input."
        bad = [run((*GOLD[:2], "grab dove"), success=False, agent=f"a{i}", error=unparsed) for i in range(3)]
        decision = decide(group([*bad, run(agent="b")]), RefineConfig(min_runs=3, min_agents=2))
        assert decision.action == Action.SKIP
        assert decision.agent_failures == 3
        assert "agents'" in decision.reason

    def test_failures_on_other_task_clusters_sharpen_the_description(self) -> None:
        foreign = [run(GOLD[:3], success=False, agent=f"a{i}", cluster=OTHER_CLUSTER) for i in range(3)]
        decision = decide(group(foreign), RefineConfig(min_runs=3, min_agents=2))
        assert decision.action == Action.OPTIMISE_DESCRIPTION
        assert decision.foreign_failures == 3

    def test_runs_that_used_no_skill_create_one(self) -> None:
        runs = [run(agent=f"a{i}") for i in range(3)]
        decision = decide(Group(runs=runs), RefineConfig(min_runs=3, min_agents=2))
        assert decision.action == Action.CREATE

    def test_successful_runs_that_moved_away_improve_it(self) -> None:
        moved = ("open door to kitchen", "go to kitchen", "focus on dove", "move dove to red box")
        runs = [run(moved, agent=f"a{i}") for i in range(3)]
        assert contradicted(runs, PROCEDURE, 0.7) == ["pick up <object>"]
        decision = decide(group(runs, used=False), RefineConfig(min_runs=3, min_agents=2))
        assert decision.action == Action.IMPROVE
        assert "`pick up <object>`" in decision.reason

    def test_agreeing_runs_change_nothing(self) -> None:
        runs = [run(agent=f"a{i}") for i in range(3)]
        decision = decide(group(runs), RefineConfig(min_runs=3, min_agents=2))
        assert decision.action == Action.SKIP
        assert decision.reason == "the new runs agree with the skill"
