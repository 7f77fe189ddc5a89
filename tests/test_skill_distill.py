"""Heuristic skill distillation: consensus plans, shared sub-procedures, verb notes, documents (pure)."""

import re
import uuid
from typing import Any

from app.evolver.skill_distill import (
    AtomicNote,
    AvoidNote,
    ErrorFix,
    FunctionalPattern,
    Procedure,
    ProcedureStep,
    RunStep,
    RunView,
    atomic_document,
    atomic_notes,
    canonical,
    consensus_procedure,
    functional_cover,
    functional_document,
    mine_functional,
    skill_name,
    strategy_document,
    verb_of,
)
from app.skill_md import (
    EVIDENCE,
    PITFALLS,
    PROCEDURE,
    SECTION_ORDER,
    WHEN_TO_USE,
    SkillDocument,
    estimate_tokens,
    render_body,
    validate,
)

ANIMAL = (
    "Your task is to find a(n) animal. First, focus on the thing. "
    "Then, move it to the red box in the kitchen."
)
PLANT = (
    "Your task is to find a(n) plant. First, focus on the thing. "
    "Then, move it to the blue box in the bedroom."
)
BOIL = "Your task is to boil water. First, focus on the substance. Then, take actions that will boil it."
INVALID = "No known action matches that input."
NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
ANIMALS, PLANTS, BOILING = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


def run_view(
    task: str,
    cluster: uuid.UUID,
    *actions: str | RunStep,
    success: bool | None = True,
    score: float | None = 1.0,
    agent: str = "agent-1",
) -> RunView:
    """A stored run; plain strings are steps without error."""
    steps = tuple(a if isinstance(a, RunStep) else RunStep(a) for a in actions)
    return RunView(uuid.uuid4(), task, cluster, agent, success, score, steps)


def failed(action: str, error: str = INVALID) -> RunStep:
    """A step the environment refused."""
    return RunStep(action, error=error)


def find_animal(animal: str = "dove", *detour: str, **kw: Any) -> RunView:
    """A successful find-animal run, with optional detour steps after reaching the kitchen."""
    return run_view(
        ANIMAL,
        ANIMALS,
        "open door to kitchen",
        "go to kitchen",
        *detour,
        f"focus on {animal}",
        f"pick up {animal}",
        f"move {animal} to red box",
        **kw,
    )


def find_plant(plant: str = "fern", **kw: Any) -> RunView:
    """A successful find-plant run in the greenhouse."""
    return run_view(
        PLANT,
        PLANTS,
        "open door to greenhouse",
        "go to greenhouse",
        f"focus on {plant}",
        f"pick up {plant}",
        f"move {plant} to blue box",
        **kw,
    )


def boil_water(**kw: Any) -> RunView:
    """A successful boil-water run: shares the door-and-walk opening, nothing else."""
    return run_view(
        BOIL,
        BOILING,
        "open door to kitchen",
        "go to kitchen",
        "pick up thermometer",
        "focus on water",
        "move water to pot",
        "activate stove",
        "wait",
        **kw,
    )


def pattern(*templates: str) -> FunctionalPattern:
    """A mined pattern with made-up evidence."""
    return FunctionalPattern(templates, (), frozenset({ANIMALS, PLANTS}), (), 2)


def reorderings(runs: list[RunView]) -> list[list[RunView]]:
    """The runs reversed and rotated: other input orders of the same runs."""
    return [runs[::-1]] + [runs[k:] + runs[:k] for k in range(1, len(runs))]


def sections(doc: SkillDocument) -> dict[str, str]:
    return {s.title: s.body for s in doc.sections}


def assert_valid(doc: SkillDocument) -> None:
    """Valid by app.skill_md (spec, links, size), all sections in order, a body well under budget."""
    assert NAME.match(doc.name) and len(doc.name) <= 64
    assert validate(doc) == []
    assert tuple(s.title for s in doc.sections) == SECTION_ORDER
    assert estimate_tokens(render_body(doc)) < 5000


class TestVerbs:
    def test_multiword_verbs_come_first(self) -> None:
        """ScienceWorld's two-word verbs are one verb; anything else is its first word."""
        assert verb_of("pick up dove") == "pick up"
        assert verb_of("Look around") == "look around"
        assert verb_of("focus on red box") == "focus on"
        assert verb_of("go to kitchen") == "go to"
        assert verb_of("turn on stove") == "turn on"
        assert verb_of("look at thermometer") == "look at"
        assert verb_of("open door to kitchen") == "open"
        assert verb_of("teleport to kitchen") == "teleport"
        assert verb_of("") == ""

    def test_canonical_form_is_the_same_across_tasks(self) -> None:
        """Task slots, other slots and literal objects all become one `<object>` per run of words."""
        assert canonical("open door to kitchen") == canonical("open door to <task:object>")
        assert canonical("open door to greenhouse") == "open <object> to <object>"
        assert canonical("move <task:object> <other:object> to red box") == "move <object> to <object>"

    def test_a_number_that_tells_objects_apart_belongs_to_the_object(self) -> None:
        assert canonical("pick up flower pot 5") == canonical("pick up flower pot 8") == "pick up <object>"
        assert canonical("wait 1") == "wait 1"  # no object before it: the number stays
        assert canonical("look around") == "look around"
        assert canonical("pick up <task:object>") == "pick up <object>"


class TestConsensus:
    def test_keeps_majority_steps_and_drops_a_one_off_detour(self) -> None:
        """A step only one run of three took is not part of the plan."""
        runs = [find_animal(), find_animal(), find_animal("dove", "look at table")]
        procedure = consensus_procedure(runs)
        templates = [s.template for s in procedure.steps]
        assert templates == [
            "open door to <task:object>",
            "go to <task:object>",
            "focus on dove",
            "pick up dove",
            "move dove to <task:object>",
        ]
        assert all(s.support == 1.0 for s in procedure.steps)
        assert set(procedure.runs) == {r.id for r in runs}
        assert procedure.medoid in {runs[0].id, runs[1].id}

    def test_min_support_decides_which_steps_stay(self) -> None:
        """A medoid's step three runs of five share stays at 0.5 and goes at 0.75."""
        runs = [find_animal("dove", "look around") for _ in range(3)] + [find_animal(), find_animal()]
        low = consensus_procedure(runs, min_support=0.5)
        high = consensus_procedure(runs, min_support=0.75)
        assert [s.template for s in low.steps].count("look around") == 1
        assert next(s.support for s in low.steps if s.template == "look around") == 0.6
        assert "look around" not in [s.template for s in high.steps]
        assert len(high.steps) == 5

    def test_objects_that_vary_become_an_object_slot_with_examples(self) -> None:
        """Anti-unification: runs that focus on different animals give `focus on <object>`."""
        runs = [find_animal("dove"), find_animal("frog"), find_animal("dove")]
        steps = {s.template: s for s in consensus_procedure(runs).steps}
        assert "focus on <object>" in steps
        assert set(steps["focus on <object>"].examples) == {"focus on dove", "focus on frog"}
        assert steps["focus on <object>"].examples[0] == "focus on dove"
        # The box the task names stays a task slot; the animal beside it varies.
        assert "move <object> to <task:object>" in steps

    def test_task_words_stay_task_slots_when_tasks_differ(self) -> None:
        """Variations that each name their own object fill `<task:object>`, not `<object>`."""
        runs = [
            run_view("Your task is to boil water.", BOILING, "focus on water", "activate stove"),
            run_view("Your task is to boil milk.", BOILING, "focus on milk", "activate stove"),
        ]
        steps = consensus_procedure(runs).steps
        assert [s.template for s in steps] == ["focus on <task:object>", "activate stove"]
        assert set(steps[0].examples) == {"focus on water", "focus on milk"}

    def test_failed_runs_are_ignored(self) -> None:
        """Only successful runs vote; a failure's steps never enter the plan."""
        lost = run_view(ANIMAL, ANIMALS, "go to hallway", "focus on door", success=False, score=0.0)
        low = run_view(ANIMAL, ANIMALS, "go to hallway", "focus on door", success=None, score=0.3)
        procedure = consensus_procedure([find_animal(), lost, low])
        assert lost.id not in procedure.runs and low.id not in procedure.runs
        assert "focus on door" not in [s.template for s in procedure.steps]
        assert len(procedure.steps) == 5

    def test_score_decides_when_success_is_unknown(self) -> None:
        """success=None counts as success at or above do_min_score."""
        maybe = find_animal(success=None, score=0.8)
        assert consensus_procedure([maybe]).runs == (maybe.id,)
        assert consensus_procedure([maybe], do_min_score=0.9).steps == ()

    def test_erroring_steps_are_dropped(self) -> None:
        """A refused action is not a step of the plan."""
        runs = [
            run_view(ANIMAL, ANIMALS, failed("pick dove up"), "focus on dove", "pick up dove"),
            run_view(ANIMAL, ANIMALS, failed("pick dove up"), "focus on dove", "pick up dove"),
        ]
        assert [s.template for s in consensus_procedure(runs).steps] == ["focus on dove", "pick up dove"]

    def test_exploration_that_gained_nothing_is_no_step_of_the_plan(self) -> None:
        """An agent that asked the library, used nothing and gained nothing was wandering: its path is
        the steps it was guided to or that raised the score (`go to kitchen` here), not the detour."""
        wandering = run_view(
            ANIMAL,
            ANIMALS,
            RunStep("go to hallway", explored=True),
            RunStep("go to bedroom", explored=True),
            RunStep("go to kitchen", explored=True, reward=0.1),
            "focus on dove",
            "pick up dove",
        )
        direct = run_view(ANIMAL, ANIMALS, "go to kitchen", "focus on dove", "pick up dove")
        procedure = consensus_procedure([wandering, direct])
        plan = [s.template for s in procedure.steps]
        assert plan == ["go to <task:object>", "focus on dove", "pick up dove"]
        assert all(s.support == 1.0 for s in procedure.steps)

    def test_no_successful_runs_give_an_empty_procedure(self) -> None:
        """Nothing to agree on."""
        assert consensus_procedure([]) == Procedure(steps=(), runs=())
        lost = find_animal(success=False, score=0.0)
        assert consensus_procedure([lost]).steps == ()

    def test_same_output_for_shuffled_input(self) -> None:
        """The medoid and the steps do not depend on input order."""
        runs = [
            find_animal("dove"),
            find_animal("frog", "look around"),
            find_animal("dove"),
            find_animal("bee"),
        ]
        expected = consensus_procedure(runs)
        for shuffled in reorderings(runs):
            assert consensus_procedure(shuffled) == expected


class TestFunctionalMining:
    def test_finds_a_pattern_shared_by_two_task_clusters(self) -> None:
        """The door-then-walk opening is shared by two kinds of task; each kind's own steps are not."""
        runs = [find_animal("dove"), find_animal("frog"), boil_water(), boil_water()]
        patterns = mine_functional(runs)
        assert [p.templates for p in patterns] == [("open <object> to <object>", "go to <object>")]
        shared = patterns[0]
        assert shared.task_clusters == frozenset({ANIMALS, BOILING})
        assert shared.occurrences == 4
        assert set(shared.runs) == {r.id for r in runs}
        assert ("open door to kitchen", "go to kitchen") in shared.examples
        assert len(shared.key) == 64

    def test_a_pattern_of_one_cluster_is_not_functional(self) -> None:
        """However often one kind of task repeats a run of steps, it needs a second kind."""
        assert mine_functional([find_animal(), find_animal("frog"), find_animal("bee")]) == []
        assert mine_functional([find_animal(), find_animal("frog")], min_clusters=1) != []

    def test_keeps_only_maximal_patterns(self) -> None:
        """The whole shared five-step run is kept; its sub-runs with the same clusters are not."""
        patterns = mine_functional([find_animal("dove"), find_plant("fern")])
        assert [p.templates for p in patterns] == [
            (
                "open <object> to <object>",
                "go to <object>",
                "focus on <object>",
                "pick up <object>",
                "move <object> to <object>",
            )
        ]
        animal = (
            "open door to kitchen",
            "go to kitchen",
            "focus on dove",
            "pick up dove",
            "move dove to red box",
        )
        plant = (
            "open door to greenhouse",
            "go to greenhouse",
            "focus on fern",
            "pick up fern",
            "move fern to blue box",
        )
        # One example per task cluster, in cluster-id order.
        assert patterns[0].examples == ((animal, plant) if ANIMALS.bytes < PLANTS.bytes else (plant, animal))

    def test_a_shorter_pattern_with_more_clusters_survives(self) -> None:
        """A sub-run shared by more clusters than its longer pattern is kept beside it, and first."""
        patterns = mine_functional([find_animal(), find_plant(), boil_water()])
        assert [len(p.task_clusters) for p in patterns] == [3, 2]
        assert patterns[0].templates == ("open <object> to <object>", "go to <object>")
        assert len(patterns[1].templates) == 5

    def test_failed_runs_and_idle_or_repeated_steps_do_not_count(self) -> None:
        """Only successful runs count; waiting, or one move between waits, is not a procedure."""
        waits = [
            run_view(ANIMAL, ANIMALS, "look around", "wait", "look around", "go to kitchen", "go to kitchen"),
            run_view(
                PLANT, PLANTS, "look around", "wait", "look around", "go to greenhouse", "go to greenhouse"
            ),
        ]
        assert mine_functional(waits) == []
        assert mine_functional([find_animal(), find_plant(success=False, score=0.0)]) == []

    def test_same_output_for_shuffled_input(self) -> None:
        """Patterns, their examples and order do not depend on input order."""
        runs = [
            find_animal("dove"),
            find_animal("frog"),
            find_plant("fern"),
            find_plant("rose"),
            boil_water(),
        ]
        expected = mine_functional(runs)
        for shuffled in reorderings(runs):
            assert mine_functional(shuffled) == expected


class TestFunctionalCover:
    def test_greedy_longest_match_without_overlap(self) -> None:
        """The longest matching pattern wins at each step; the next search starts after it."""
        procedure = consensus_procedure([find_animal(), find_animal()])
        opening = pattern("open <object> to <object>", "go to <object>")
        whole = pattern(*[canonical(s.template) for s in procedure.steps[:4]])
        tail = pattern("pick up <object>", "move <object> to <object>")
        cover = functional_cover(procedure, [opening, tail, whole])
        assert cover == {0: whole}
        assert functional_cover(procedure, [opening, tail]) == {0: opening, 3: tail}

    def test_a_mined_pattern_covers_the_plan_it_came_from(self) -> None:
        """Plan steps with task slots and mined patterns meet in the canonical form."""
        procedure = consensus_procedure([find_animal("dove"), find_animal("frog")])
        patterns = mine_functional([find_animal("dove"), find_animal("frog"), boil_water()])
        assert functional_cover(procedure, patterns) == {0: patterns[0]}
        assert patterns[0].templates == ("open <object> to <object>", "go to <object>")

    def test_no_match_no_cover(self) -> None:
        """A pattern that never lines up with the plan covers nothing."""
        procedure = consensus_procedure([find_animal()])
        assert functional_cover(procedure, [pattern("activate <object>", "wait")]) == {}


class TestAtomicNotes:
    def test_pairs_an_error_with_its_retry_and_counts_it(self) -> None:
        """The next same-verb action that worked is the fix; identical pairs are counted."""
        runs = [
            run_view(
                ANIMAL, ANIMALS, "go to kitchen", failed("focus on the dove"), "focus on dove", "pick up dove"
            )
            for _ in range(2)
        ] + [find_animal()]
        notes = {n.verb: n for n in atomic_notes(runs)}
        focus = notes["focus on"]
        assert focus.uses == 5
        assert focus.successes == 3
        assert focus.errors == (
            ErrorFix(error=INVALID, action="focus on the dove", fix="focus on dove", count=2),
        )
        assert focus.preconditions == (("go to", 1.0),)
        assert focus.successful_runs == 3

    def test_fix_from_what_successful_runs_did_at_that_point(self) -> None:
        """Without a same-verb retry, the fix is what successful runs of the cluster did next."""
        lost = run_view(ANIMAL, ANIMALS, "open door to kitchen", failed("teleport to kitchen"), success=False)
        notes = atomic_notes([lost, find_animal(), find_animal("frog")], min_uses=1)
        teleport = next(n for n in notes if n.verb == "teleport")
        assert teleport.errors == (
            ErrorFix(error=INVALID, action="teleport to <task:object>", fix="go to <task:object>", count=1),
        )
        assert teleport.successful_runs == 0

    def test_error_without_any_fix(self) -> None:
        """No retry and no successful run of the cluster: the fix is unknown."""
        lost = run_view(ANIMAL, ANIMALS, *[failed("pick dove up")] * 3, success=False, score=0.0)
        assert atomic_notes([lost]) == [
            AtomicNote(
                verb="pick",
                uses=3,
                successes=0,
                errors=(ErrorFix(error=INVALID, action="pick dove up", fix=None, count=3),),
                preconditions=(),
                pitfalls=(),
                runs=(lost.id,),
                successful_runs=0,
                agents=("agent-1",),
            )
        ]

    def test_pitfalls_come_from_avoid_notes_of_the_verb(self) -> None:
        """Avoid notes whose template has this verb, strongest first; another verb's notes stay out."""
        avoid = [
            AvoidNote("focus on <other:object>", "Focusing on something the task does not name fails it.", 3),
            AvoidNote("focus on door", "Do not focus on the door.", 5),
            AvoidNote("pick up <other:object>", "Pick up only what the task names.", 9),
        ]
        notes = {n.verb: n for n in atomic_notes([find_animal(), find_animal(), find_animal()], avoid)}
        assert notes["focus on"].pitfalls == (
            "Do not focus on the door.",
            "Focusing on something the task does not name fails it.",
        )
        assert notes["pick up"].pitfalls == ("Pick up only what the task names.",)

    def test_rare_verbs_and_verbs_without_lessons_are_left_out(self) -> None:
        """Fewer than min_uses uses, or nothing to say: no note."""
        runs = [run_view(ANIMAL, ANIMALS, "look around", "inventory") for _ in range(3)]
        notes = {n.verb for n in atomic_notes(runs)}
        assert notes == {"inventory"}  # preceded by `look around` every time
        assert atomic_notes(runs, min_uses=4) == []
        assert atomic_notes([run_view(ANIMAL, ANIMALS, "look around")] * 3) == []

    def test_same_output_for_shuffled_input(self) -> None:
        """Notes and their error lists do not depend on input order."""
        runs = [
            run_view(ANIMAL, ANIMALS, "go to kitchen", failed("focus on the dove"), "focus on dove"),
            run_view(ANIMAL, ANIMALS, "go to kitchen", failed("focus on frog", "The frog is not here.")),
            find_animal(),
            find_animal("frog"),
            find_plant(),
        ]
        expected = atomic_notes(runs, min_uses=2)
        for shuffled in reorderings(runs):
            assert atomic_notes(shuffled, min_uses=2) == expected


class TestNames:
    def test_strategy_name_from_task_content_words(self) -> None:
        """Boilerplate and stopwords are dropped; the task's own words remain."""
        assert skill_name("strategy", ANIMAL) == "find-animal-focus-move-red-box"
        assert skill_name("strategy", "Your task is to boil water.") == "boil-water"

    def test_functional_name_from_its_verbs(self) -> None:
        """`verb-then-verb`, repeated verbs once."""
        source = "\n".join(["open <object> to <object>", "pick up <object>", "pick up <object>"])
        assert skill_name("functional", source) == "open-then-pick-up"
        joined = " ".join(
            ["open <object> to <object>", "go to <object>", "look around", "wait", "pick up <object>"]
        )
        assert skill_name("functional", joined) == "open-then-go-to-then-look-around-then-wait-then-pick-up"

    def test_atomic_name_is_use_verb(self) -> None:
        """`use-<verb>`."""
        assert skill_name("atomic", "focus on") == "use-focus-on"

    def test_names_are_always_spec_valid(self) -> None:
        """Odd input still gives a lowercase, hyphenated name of at most 64 characters."""
        long_task = "Your task is to " + " ".join(
            f"Measure-the  TEMPERATURE_{i} of unknown substance B" for i in range(20)
        )
        many_verbs = "\n".join(f"verb{i} <object>" for i in range(40))
        for name in [
            skill_name("strategy", long_task),
            skill_name("strategy", "Your task is to ..."),
            skill_name("functional", many_verbs),
            skill_name("atomic", "--Look   around!!"),
        ]:
            assert NAME.match(name) and len(name) <= 64, name
        assert skill_name("strategy", "Your task is to ...") == "strategy-skill"


class TestDocuments:
    def test_strategy_document(self) -> None:
        """Metadata, sections, slot notes, a link to a functional skill and the evidence."""
        procedure = consensus_procedure([find_animal("dove"), find_animal("frog"), find_animal("dove")])
        doc = strategy_document(
            skill_name("strategy", ANIMAL),
            ANIMAL,
            procedure,
            domain="scienceworld",
            functional={0: "open-then-go-to"},
            pitfalls=["Do not focus on the door."],
            failures=2,
        )
        assert_valid(doc)
        assert doc.metadata == {
            "level": "strategy",
            "domain": "scienceworld",
            "evidence-runs": "5",
            "evidence-successes": "3",
            "evidence-failures": "2",
            "task-example": ANIMAL,
        }
        assert doc.description.startswith("Plan for tasks like 'Your task is to find a(n) animal.")
        assert "Not for" in doc.description
        body = sections(doc)
        assert "1. Use the [open-then-go-to](../open-then-go-to/SKILL.md) skill" in body[PROCEDURE]
        assert "`focus on <object>` (`<object>` varies by task; e.g. dove, frog)" in body[PROCEDURE]
        assert "`<task:object>`: fill from your own task." in body[PROCEDURE]
        assert body[PITFALLS] == "- Do not focus on the door."
        assert "5 (3 successful, 2 failed)" in body[EVIDENCE]
        assert "1: 100%" in body[EVIDENCE]
        assert "consensus of 3 successful run(s)" in body[WHEN_TO_USE]

    def test_strategy_document_folds_a_functional_span(self) -> None:
        """With spans, the covered steps are one numbered item."""
        procedure = consensus_procedure([find_animal(), find_animal()])
        doc = strategy_document(
            "find-animal", ANIMAL, procedure, domain="sw", functional={0: "open-then-go-to"}, spans={0: 2}
        )
        lines = [line for line in sections(doc)[PROCEDURE].splitlines() if line[:1].isdigit()]
        assert len(lines) == 4
        assert "`open door to <task:object>`, then `go to <task:object>`" in lines[0]
        assert lines[1].startswith("2. `focus on dove`")

    def test_empty_lists_say_so(self) -> None:
        """No pitfalls: 'None seen yet.'; no steps: still a valid document."""
        doc = strategy_document("find-animal", ANIMAL, Procedure(steps=(), runs=()), domain="sw")
        assert_valid(doc)
        assert sections(doc)[PITFALLS] == "None seen yet."

    def test_functional_document(self) -> None:
        """Level, evidence, numbered canonical steps with examples of what fills them."""
        shared = mine_functional([find_animal("dove"), find_plant("fern"), boil_water()])[0]
        name = skill_name("functional", "\n".join(shared.templates))
        doc = functional_document(name, shared, domain="scienceworld")
        assert_valid(doc)
        assert name == "open-then-go-to"
        assert doc.metadata == {
            "level": "functional",
            "domain": "scienceworld",
            "evidence-runs": "3",
            "evidence-successes": "3",
            "evidence-failures": "0",
        }
        body = sections(doc)
        assert "1. `open <object> to <object>`" in body[PROCEDURE]
        assert "2. `go to <object>` (`<object>` varies by task; e.g. " in body[PROCEDURE]
        assert "greenhouse" in body[PROCEDURE]
        assert body[PITFALLS] == "None seen yet."
        assert "in 3 task clusters" in body[EVIDENCE]
        assert "Not a whole-task plan" in doc.description

    def test_atomic_document(self) -> None:
        """Preconditions and error fixes, and the avoid notes, as pitfalls."""
        runs = [
            run_view(ANIMAL, ANIMALS, "go to kitchen", failed("focus on the dove"), "focus on dove")
            for _ in range(2)
        ] + [find_animal(success=False, score=0.1)]
        avoid = [AvoidNote("focus on door", "Do not focus on the door.", 2)]
        note = next(n for n in atomic_notes(runs, avoid) if n.verb == "focus on")
        doc = atomic_document(skill_name("atomic", note.verb), note, domain="scienceworld")
        assert_valid(doc)
        assert doc.name == "use-focus-on"
        assert doc.metadata == {
            "level": "atomic",
            "domain": "scienceworld",
            "evidence-runs": "3",
            "evidence-successes": "2",
            "evidence-failures": "1",
        }
        body = sections(doc)
        assert "`go to` (100%)" in body[PROCEDURE]
        assert f'`focus on the dove` failed with "{INVALID}" (2x); fix: `focus on dove`.' in body[PITFALLS]
        assert "- Do not focus on the door." in body[PITFALLS]
        assert "Uses: 5" in body[EVIDENCE]

    def test_long_inputs_stay_within_limits(self) -> None:
        """Descriptions stay under 1024 characters and lists are capped."""
        task = "Your task is to " + "measure the temperature of the unknown substance " * 60
        steps = tuple(ProcedureStep(f"step{i} <object>", (f"step{i} thing",), 1.0) for i in range(200))
        doc = strategy_document(
            skill_name("strategy", task),
            task,
            Procedure(steps=steps, runs=(uuid.uuid4(),)),
            domain="sw",
            pitfalls=[f"pitfall {i}" for i in range(50)],
        )
        assert_valid(doc)
        assert len(doc.description) <= 1024
        assert len(doc.metadata["task-example"]) <= 200
        assert sections(doc)[PITFALLS].count("\n- ") <= 9
