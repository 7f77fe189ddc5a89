"""Category slots: which `do` lessons generalise into `<task:CATEGORY>`, and under which word."""

import uuid
from collections.abc import Sequence

import numpy as np
import pytest

from app.embedding import SentenceTransformerEmbedder, get_embedder
from app.evolver.extract import MAX_WORDS
from app.evolver.generalise import (
    SOURCE,
    GeneraliseConfig,
    Lesson,
    category_of,
    choose_category,
    corefer,
    embedding_scorer,
    propose,
    render_text,
    slots_for,
    whole_objects,
)

ANIMAL_TASK = (
    "Your task is to find a(n) animal. First, focus on the thing. Then, move it to the {} box in the kitchen."
)
CLUSTER = uuid.uuid4()

# Toy embeddings: animals point along axis 0, places along axis 1, containers along axis 2.
VECTORS = {
    "dove": (1.0, 0.1, 0.0),
    "egg dove egg": (1.0, 0.1, 0.05),
    "blue jay": (0.9, 0.0, 0.2),
    "butterfly": (1.0, 0.2, 0.1),
    "frog": (0.95, 0.1, 0.0),
    "animal": (1.0, 0.1, 0.1),
    "thing": (0.5, 0.0, 0.5),
    "box": (0.0, 0.1, 1.0),
    "cage": (0.0, 0.2, 1.0),
    "basket": (0.1, 0.0, 1.0),
    "kitchen": (0.1, 1.0, 0.0),
    "greenhouse": (0.0, 1.0, 0.1),
    "plant": (0.1, 0.9, 0.2),
    "outside": (0.1, 0.9, 0.0),
    "find": (0.0, 0.0, 0.0),
    "first": (0.0, 0.0, 0.0),
    "move": (0.0, 0.0, 0.0),
    "focus": (0.0, 0.0, 0.0),
    "red": (0.0, 0.0, 0.0),
}


def toy_scorer(objects: Sequence[str], words: Sequence[str]) -> list[float]:
    """Cosine of each word to the normalised mean of the objects, over VECTORS."""
    mean = np.mean([np.asarray(VECTORS[o]) / np.linalg.norm(VECTORS[o]) for o in objects], axis=0)
    mean /= np.linalg.norm(mean)
    out = []
    for word in words:
        vector = np.asarray(VECTORS[word])
        norm = float(np.linalg.norm(vector))
        out.append(float(vector @ mean / norm) if norm else 0.0)
    return out


def lesson(
    template: str, colour: str = "red", *, support: int = 1, cluster: uuid.UUID = CLUSTER, task: str = ""
) -> Lesson:
    """A `do` lesson of the find-animal task, unless `task` says otherwise."""
    return Lesson(
        id=uuid.uuid4(),
        cluster_id=cluster,
        template=template,
        task=task or ANIMAL_TASK.format(colour),
        support=support,
        example=template.replace("<task:object>", "bathroom"),
    )


class TestPropose:
    def test_one_move_on_unnamed_animals_becomes_a_category_slot(self) -> None:
        """`focus on dove|blue jay|butterfly` from three variations: one `focus on <task:animal>`."""
        dove = lesson("focus on dove", "red", support=5)
        jay = lesson("focus on blue jay", "green", support=2)
        fly = lesson("focus on butterfly", "blue", support=3)
        [proposal] = propose([jay, dove, fly, lesson("look around")], toy_scorer, GeneraliseConfig())
        assert proposal.template == "focus on <task:animal>"
        assert proposal.category == "animal"
        assert proposal.members == (dove.id, fly.id, jay.id)  # best supported first
        assert proposal.examples == ("blue jay", "butterfly", "dove")
        assert proposal.into is None
        assert proposal.runner_up == "thing"
        assert proposal.similarity - (proposal.runner_up_similarity or 0.0) >= 0.1

    def test_one_object_is_no_category(self) -> None:
        """However often one object was seen, a single example generalises nothing."""
        config = GeneraliseConfig(min_examples=2)
        assert propose([lesson("focus on dove"), lesson("pick up dove")], toy_scorer, config) == []

    def test_lessons_of_different_clusters_stay_apart(self) -> None:
        """The same move in two different situations is no evidence of one category."""
        other = uuid.uuid4()
        found = propose(
            [lesson("focus on dove"), lesson("focus on blue jay", cluster=other)],
            toy_scorer,
            GeneraliseConfig(),
        )
        assert found == []

    def test_an_unclear_choice_is_skipped(self) -> None:
        """Raising the margin or the similarity bar past the winner's lead turns the same proposal off."""
        lessons = [lesson("focus on dove"), lesson("focus on blue jay")]
        assert len(propose(lessons, toy_scorer, GeneraliseConfig())) == 1
        assert propose(lessons, toy_scorer, GeneraliseConfig(min_margin=0.9)) == []
        assert propose(lessons, toy_scorer, GeneraliseConfig(min_similarity=0.999)) == []

    def test_the_category_word_is_one_every_task_has(self) -> None:
        """If one variation's task never says "animal", "animal" is no candidate (and "find" is no kind)."""
        stray = Lesson(
            id=uuid.uuid4(),
            cluster_id=CLUSTER,
            template="focus on blue jay",
            task="Your task is to find a bird.",
            example="focus on blue jay",
        )
        assert propose([lesson("focus on dove"), stray], toy_scorer, GeneraliseConfig()) == []

    def test_a_word_agents_act_on_is_a_sibling_not_a_category(self) -> None:
        """`go to kitchen` rules out "kitchen" as what greenhouse and outside are."""
        doors = [lesson("open door to greenhouse"), lesson("open door to outside")]
        [alone] = propose(doors, toy_scorer, GeneraliseConfig())
        assert alone.category == "kitchen"  # what similarity alone would pick
        assert propose([*doors, lesson("go to kitchen")], toy_scorer, GeneraliseConfig()) == []
        assert propose(doors, toy_scorer, GeneraliseConfig(), other_actions=["go to kitchen"]) == []

    def test_a_move_the_task_names_objects_for_is_no_category_move(self) -> None:
        """Greenhouses sound like plants, but find-plant's `go to <task:object>` says rooms vary by route."""
        plant = "Your task is to find a(n) plant. Then, move it to the box."
        rooms = [lesson("go to greenhouse", task=plant), lesson("go to outside", task=plant)]
        [alone] = propose(rooms, toy_scorer, GeneraliseConfig())
        assert alone.template == "go to <task:plant>"  # what similarity alone would do
        boil = lesson(
            "go to <task:object>", task="Your task is to boil water in the bathroom.", cluster=uuid.uuid4()
        )
        assert len(propose([*rooms, boil], toy_scorer, GeneraliseConfig())) == 1  # other tasks do not count
        named = lesson("go to <task:object>", task=plant, cluster=uuid.uuid4())
        assert propose([*rooms, named], toy_scorer, GeneraliseConfig()) == []

    def test_a_new_object_joins_the_existing_category_lesson(self) -> None:
        """A later `focus on frog` merges into `focus on <task:animal>`, whose examples it extends."""
        general = Lesson(
            id=uuid.uuid4(),
            cluster_id=CLUSTER,
            template="focus on <task:animal>",
            task=ANIMAL_TASK.format("red"),
            support=7,
            example="focus on dove",
            examples=("blue jay", "dove"),
        )
        frog = lesson("focus on frog")
        [proposal] = propose([general, frog], toy_scorer, GeneraliseConfig())
        assert (proposal.into, proposal.members) == (general.id, (frog.id,))
        assert proposal.examples == ("blue jay", "dove", "frog")

    def test_an_existing_category_under_another_word_blocks(self) -> None:
        """The cluster already says `<task:thing>` for this move: choosing "animal" now would be unsure."""
        general = Lesson(
            id=uuid.uuid4(),
            cluster_id=CLUSTER,
            template="focus on <task:thing>",
            task=ANIMAL_TASK.format("red"),
            examples=("dove",),
        )
        assert propose([general, lesson("focus on blue jay")], toy_scorer, GeneraliseConfig()) == []

    def test_other_slots_stay_where_they_are(self) -> None:
        """`move egg dove to <task:object>`: the animal becomes a slot, the box keeps its own."""
        lessons = [
            Lesson(id=uuid.uuid4(), cluster_id=CLUSTER, template=f"move {a} to <task:object>",
                   task=ANIMAL_TASK.format(c), example=f"move {a} to {c} box")
            for a, c in (("dove", "red"), ("butterfly", "green"))
        ]  # fmt: skip
        [proposal] = propose(lessons, toy_scorer, GeneraliseConfig())
        assert proposal.template == "move <task:animal> to <task:object>"
        slots = slots_for(
            proposal.template, [{"name": "task", "source": "task", "example": "red box"}], "animal", ("dove",)
        )
        assert slots == [
            {"name": "animal", "source": SOURCE, "example": "dove", "examples": ["dove"]},
            {"name": "task", "source": "task", "example": "red box"},
        ]

    def test_a_lesson_joins_one_generalisation_only(self) -> None:
        """`put dove in cage` reads two ways; it is merged once, into the reading with more members."""
        loose = GeneraliseConfig(min_margin=0.0, min_similarity=0.0)
        doves = [lesson("put dove in cage"), lesson("put dove in basket")]
        [alone] = propose(doves, toy_scorer, loose)
        assert alone.template.startswith("put dove in <task:")
        birds = [lesson("put blue jay in cage"), lesson("put butterfly in cage")]
        found = propose([*doves, *birds], toy_scorer, loose)
        assert [p.template for p in found] == ["put <task:animal> in cage"]
        assert set(found[0].members) == {doves[0].id, birds[0].id, birds[1].id}


class TestCorefer:
    """Later moves of a run on the object it found become moves on the category."""

    def test_later_moves_on_a_found_animal_take_the_category(self) -> None:
        """`focus on dove|blue jay` become `focus on <task:animal>`, and so do `pick up dove` and the move."""
        focus = [lesson("focus on dove", "red"), lesson("focus on blue jay", "green")]
        pick = lesson("pick up dove", "red", cluster=uuid.uuid4())
        carry = Lesson(id=uuid.uuid4(), cluster_id=uuid.uuid4(), task=ANIMAL_TASK.format("red"),
                       template="move dove in inventory to <task:object>",
                       example="move dove in inventory to red box")  # fmt: skip
        lessons = [*focus, pick, carry, lesson("look around", cluster=uuid.uuid4())]
        proposals = propose(lessons, toy_scorer, GeneraliseConfig())
        found = corefer(lessons, proposals, toy_scorer)
        by_member = {p.members: p for p in found}
        assert by_member[(pick.id,)].template == "pick up <task:animal>"
        assert by_member[(carry.id,)].template == "move <task:animal> in inventory to <task:object>"
        assert all(p.category == "animal" and p.into is None for p in found)
        assert by_member[(pick.id,)].coreferent == ("dove",)
        assert by_member[(pick.id,)].examples == ("blue jay", "dove")
        assert len(found) == 2

    def test_an_object_within_an_example_and_an_existing_lesson(self) -> None:
        """`pick up dove`, the category seen with `egg dove egg`: joins the `pick up <task:animal>` there."""
        other = uuid.uuid4()
        focus = Lesson(id=uuid.uuid4(), cluster_id=CLUSTER, template="focus on <task:animal>",
                       task=ANIMAL_TASK.format("red"), examples=("egg dove egg", "frog"))  # fmt: skip
        general = Lesson(id=uuid.uuid4(), cluster_id=other, template="pick up <task:animal>",
                         task=ANIMAL_TASK.format("red"), examples=("frog",))  # fmt: skip
        pick = lesson("pick up dove", cluster=other)
        [proposal] = corefer([focus, general, pick], [], toy_scorer)
        assert (proposal.into, proposal.members) == (general.id, (pick.id,))
        assert proposal.coreferent == ("egg dove egg",)

    def test_no_category_word_in_the_task_or_the_object_named(self) -> None:
        """Other tasks' lessons on a dove, or on what the task names, stay literal."""
        focus = Lesson(id=uuid.uuid4(), cluster_id=CLUSTER, template="focus on <task:animal>",
                       task=ANIMAL_TASK.format("red"), examples=("dove", "frog"))  # fmt: skip
        plain = lesson("pick up dove", task="Your task is to feed the dove.", cluster=uuid.uuid4())
        assert corefer([focus, plain], [], toy_scorer) == []
        named = lesson("pick up frog", task="Your task is to find an animal, the frog.", cluster=uuid.uuid4())
        assert corefer([focus, named], [], toy_scorer) == []
        unseen = lesson("pick up butterfly", cluster=uuid.uuid4())
        assert corefer([focus, unseen], [], toy_scorer) == []

    def test_a_cluster_reading_the_move_under_another_word_keeps_it_literal(self) -> None:
        """`pick up <task:thing>` already stands in that cluster: choosing "animal" there would be unsure."""
        focus = Lesson(id=uuid.uuid4(), cluster_id=CLUSTER, template="focus on <task:animal>",
                       task=ANIMAL_TASK.format("red"), examples=("dove",))  # fmt: skip
        other = uuid.uuid4()
        thing = Lesson(id=uuid.uuid4(), cluster_id=other, template="pick up <task:thing>",
                       task=ANIMAL_TASK.format("red"), examples=("box",))  # fmt: skip
        assert corefer([focus, thing, lesson("pick up dove", cluster=other)], [], toy_scorer) == []

    def test_text_says_one_run_found_it(self) -> None:
        """A coreferent lesson does not claim several runs each found their own."""
        text = render_text("outside", "pick up <task:animal>", "animal", coreferent=True)
        assert "with the animal it had found" in text and "each on" not in text


class TestHelpers:
    def test_category_of_ignores_object_slots(self) -> None:
        """Only `<task:WORD>` with a word other than "object" is a category slot."""
        assert category_of("focus on <task:animal>") == "animal"
        assert category_of("move <task:object> to <other:object>") is None

    def test_whole_objects_group_words_as_templates_do(self) -> None:
        """Stopwords split objects; the verb is never one."""
        assert whole_objects(["go to kitchen", "move egg dove egg in inventory to red box"]) == {
            "kitchen",
            "egg dove egg",
            "inventory",
            "red box",
        }

    def test_text_names_the_slot_and_stays_short(self) -> None:
        """The lesson says what fills the slot and keeps to the word limit."""
        text = render_text("outside " * 80, "focus on <task:animal>", "animal")
        assert "`focus on <task:animal>`" in text
        assert "the animal your task asks for" in text
        assert len(text.split()) <= MAX_WORDS


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    """The real all-MiniLM-L6-v2."""
    return get_embedder()


class TestWithTheRealModel:
    def test_animals_are_animals(self, embedder: SentenceTransformerEmbedder) -> None:
        """MiniLM puts dove, blue jay and butterfly clearly closest to "animal"."""
        choice = choose_category(
            ["dove", "blue jay", "butterfly"],
            [ANIMAL_TASK.format("red"), ANIMAL_TASK.format("green")],
            {"focus"},
            embedding_scorer(embedder),
            GeneraliseConfig(),
        )
        assert choice is not None
        assert choice[0] == "animal"

    def test_tools_are_no_clear_kind_of_anything_in_the_task(
        self, embedder: SentenceTransformerEmbedder
    ) -> None:
        """Axe and battery for "find a non-living thing ... box in the bedroom": no word wins clearly."""
        task = (
            "Your task is to find a(n) non-living thing. First, focus on the thing. Then, move it to the box."
        )
        score = embedding_scorer(embedder)
        assert choose_category(["axe", "battery"], [task], {"focus"}, score, GeneraliseConfig()) is None
        # The same call with no margin does pick a word: the margin is what says "unsure".
        loose = GeneraliseConfig(min_margin=0.0, min_similarity=0.0)
        assert choose_category(["axe", "battery"], [task], {"focus"}, score, loose) is not None
