"""Credit assignment and action templates (pure)."""

import uuid

from app.evolver.extract import (
    ClusterHistory,
    ExtractionConfig,
    Reason,
    StepView,
    TrajectoryView,
    explored,
    extract,
    render_text,
    template_action,
)

KITCHEN = "this room is called the kitchen. in it, you see: a stove, which is turned off."
HALL = "this room is called the hallway. you see: a door to the kitchen."
C1, C2 = uuid.uuid4(), uuid.uuid4()


def step(idx: int, action: str, key: str = KITCHEN, cluster: uuid.UUID | None = C1, **kw: object) -> StepView:
    return StepView(id=uuid.uuid4(), idx=idx, situation_key=key, cluster_id=cluster, action=action, **kw)  # type: ignore[arg-type]


def run(
    *steps: StepView, success: bool | None = True, score: float | None = 1.0, task: str = "Boil water."
) -> TrajectoryView:
    return TrajectoryView(uuid.uuid4(), task, "sw", "agent", success, score, tuple(steps))


class TestTemplates:
    def test_task_words_become_a_task_slot(self) -> None:
        """The object the task names is a slot the agent fills from its own task."""
        action = template_action("focus on water", "Your task is to boil water.")
        assert action.template == "focus on <task:object>"
        assert action.example == "focus on water"
        assert [(s.name, s.source, s.example) for s in action.slots] == [("task", "task", "water")]

    def test_other_objects_stay_literal_unless_generalised(self) -> None:
        """Objects from the room stay in `do` templates; failed moves generalise them."""
        assert template_action("open door to hallway", "Boil water.").template == "open door to hallway"
        general = template_action("focus on orange juice", "Boil water.", generalise_others=True)
        assert general.template == "focus on <other:object>"
        assert general.slots[0].example == "orange juice"

    def test_single_word_action_has_no_slots(self) -> None:
        """A bare verb is its own template."""
        assert template_action("inventory", "Boil water.").template == "inventory"


class TestCreditAssignment:
    def test_rewarded_step_of_a_success_is_a_do(self) -> None:
        """Reward after a step is the strongest `do` signal and ranks first."""
        found = extract(
            run(step(0, "go to hallway"), step(1, "focus on water", key=HALL, cluster=C2, reward=0.5)),
            ClusterHistory(),
        )
        assert found[0].polarity == "do"
        assert found[0].reason == Reason.REWARD_ROSE
        assert found[0].action.template == "focus on <task:object>"

    def test_low_score_admits_no_do(self) -> None:
        """Below the admission score a run teaches no `do`, even with reward."""
        found = extract(
            run(step(0, "focus on water", reward=0.2), step(1, "look", key=HALL), success=None, score=0.3),
            ClusterHistory(),
            ExtractionConfig(do_min_score=0.7),
        )
        assert all(c.polarity == "avoid" for c in found)

    def test_exploration_of_a_success_teaches_only_what_raised_the_score(self) -> None:
        """Steps where the agent asked the library and used nothing are its own wandering: no path `do`."""
        found = extract(
            run(
                step(0, "go to bedroom", explored=True),
                step(1, "go to hallway", key=HALL, cluster=C2, explored=True, reward=0.2),
                step(2, "focus on water", key="water", cluster=uuid.uuid4()),
            ),
            ClusterHistory(),
        )
        assert {(c.reason, c.action.example) for c in found if c.polarity == "do"} == {
            (Reason.REWARD_ROSE, "go to hallway"),
            (Reason.SUCCESS_PATH, "focus on water"),
        }
        assert explored("r-1", []) and not explored("r-1", ["e-1"]) and not explored(None, [])

    def test_a_rewarded_step_of_a_failed_run_is_never_blamed(self) -> None:
        """The focus on the thermometer scored; the run then wandered and failed: no divergence to blame."""
        history = ClusterHistory({C2: frozenset({"look around"})})
        found = extract(
            run(
                step(0, "focus on thermometer", key=HALL, cluster=C2, reward=0.75),
                step(1, "go to hallway", key=KITCHEN, cluster=C1),
                success=False,
                score=0.75,
            ),
            history,
        )
        assert all(c.action.example != "focus on thermometer" for c in found)

    def test_errors_and_no_change_are_avoid(self) -> None:
        """In a failed run, an errored step and a step that changed nothing both teach `avoid`."""
        found = extract(
            run(step(0, "fly to moon", error="No known action matches that input."), step(1, "look around"),
                step(2, "look around"), step(3, "go to hallway", key=HALL, cluster=C2),
                success=False, score=0.2),
            ClusterHistory(),
        )  # fmt: skip
        reasons = {(c.reason, c.action.example) for c in found}
        assert (Reason.ERRORED, "fly to moon") in reasons
        assert (Reason.NO_CHANGE, "look around") in reasons
        errored = next(c for c in found if c.reason == Reason.ERRORED)
        assert "No known action" in errored.text

    def test_idle_steps_of_working_paths_teach_no_avoid(self) -> None:
        """A success's idle step, or a failure's where successes did the same, teaches no avoid."""
        hall = step(2, "go to hallway", key=HALL, cluster=C2)
        idle = (step(0, "look around"), step(1, "look around"), hall)
        assert Reason.NO_CHANGE not in {c.reason for c in extract(run(*idle), ClusterHistory())}
        looked = ClusterHistory({C1: frozenset({"look around"})})
        failed = extract(run(*idle, success=False, score=0.2), looked)
        assert Reason.NO_CHANGE not in {c.reason for c in failed}

    def test_last_move_of_a_failed_run_is_avoid_generalised(self) -> None:
        """Focusing on the wrong substance ends the episode: avoid it for anything the task does not name."""
        found = extract(
            run(
                step(0, "go to kitchen", key=HALL, cluster=C2),
                step(1, "focus on orange juice", reward=-0.1),
                success=False,
                score=0.0,
            ),
            ClusterHistory(),
        )
        last = next(c for c in found if c.reason == Reason.ENDED_FAILED_EPISODE)
        assert last.polarity == "avoid"
        assert last.action.template == "focus on <other:object>"
        assert "does not name" in last.text

    def test_a_run_merely_cut_short_teaches_no_ending_lesson(self) -> None:
        """Without a fall in score, the last move of a failed run is not blamed for the failure."""
        found = extract(
            run(
                step(0, "go to kitchen", key=HALL, cluster=C2),
                step(1, "close door"),
                success=False,
                score=0.4,
            ),
            ClusterHistory(),
        )
        assert Reason.ENDED_FAILED_EPISODE not in {c.reason for c in found}

    def test_divergence_from_successful_runs_is_avoid(self) -> None:
        """Where successful runs did something else in the same cluster, the failed run's move is avoided."""
        history = ClusterHistory({C1: frozenset({"activate stove"})})
        found = extract(
            run(step(0, "open fridge"), step(1, "look", key=HALL, cluster=C2), success=False, score=0.0),
            history,
        )
        diverged = next(c for c in found if c.reason == Reason.DIVERGED)
        assert diverged.action.example == "open fridge"
        assert "activate stove" in diverged.text

    def test_divergence_followed_by_progress_is_not_blamed(self) -> None:
        """A run that gained score after leaving the successful path was not doomed by leaving it."""
        history = ClusterHistory({C1: frozenset({"activate stove"})})
        found = extract(
            run(
                step(0, "open fridge"),
                step(1, "look", key=HALL, cluster=C2, reward=0.25),
                success=False,
                score=0.3,
            ),
            history,
        )
        assert Reason.DIVERGED not in {c.reason for c in found}

    def test_no_divergence_when_it_did_what_successes_did(self) -> None:
        """Following the successful move is no divergence."""
        history = ClusterHistory({C1: frozenset({"activate stove"})})
        found = extract(
            run(step(0, "activate stove"), step(1, "wait", key=HALL, cluster=C2), success=False, score=0.0),
            history,
        )
        assert Reason.DIVERGED not in {c.reason for c in found}

    def test_dedup_key_ignores_the_concrete_object(self) -> None:
        """Two variations' lessons with the same template in one cluster are the same lesson."""
        a = extract(run(step(0, "focus on water", reward=1.0), task="Boil water."), ClusterHistory())[0]
        b = extract(run(step(0, "focus on milk", reward=1.0), task="Boil milk."), ClusterHistory())[0]
        assert a.dedup_key == b.dedup_key


class TestText:
    def test_trigger_first_and_at_most_64_words(self) -> None:
        """Texts start with the situation and stay within 64 words even for long situations."""
        action = template_action("focus on water", "Boil water.")
        text = render_text("do", Reason.REWARD_ROSE, " ".join(["word"] * 200), action)
        assert text.startswith("When word")
        assert len(text.split()) <= 64
        assert "do `focus on <task:object>`" in text
        assert text.endswith("because it raised the score.")
