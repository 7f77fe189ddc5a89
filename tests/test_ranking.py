"""The pure ranking of retrieval candidates: fusion, utility, session context, diversity, budget."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence

import pytest

from app.retrieval.ranking import (
    CLUSTER,
    TEXT,
    VECTOR,
    Candidate,
    RankConfig,
    Ranked,
    RankQuery,
    choose_withheld,
    payload_tokens,
    rank,
)
from app.skill_md import estimate_tokens
from app.storage.models import ItemKind

_counter = iter(range(1, 1_000_000))


def _id() -> uuid.UUID:
    """Increasing ids, so tie-breaks by id are predictable."""
    return uuid.UUID(int=next(_counter))


def exp(
    ranks: Mapping[str, int],
    *,
    polarity: str = "do",
    template: str | None = None,
    text: str | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    example: str = "",
) -> Candidate:
    """An experience candidate with distinct text and template unless given."""
    n = next(_counter)
    return Candidate(
        kind=ItemKind.EXPERIENCE,
        id=_id(),
        ranks=ranks,
        similarity=0.5,
        alpha=alpha,
        beta=beta,
        text=text if text is not None else f"When situation{n} holds, {polarity} action{n} because reason{n}",
        polarity=polarity,
        action_template=template if template is not None else f"action{n} <obj>",
        action_example=example,
    )


def skill(
    ranks: Mapping[str, int],
    *,
    name: str | None = None,
    level: str = "functional",
    description: str = "does a thing",
    body: str | None = None,
    alpha: float = 1.0,
    beta: float = 1.0,
    id: uuid.UUID | None = None,
    similarity: float = 0.5,
) -> Candidate:
    """A skill candidate with a unique name unless given."""
    return Candidate(
        kind=ItemKind.SKILL,
        id=id or _id(),
        ranks=ranks,
        similarity=similarity,
        alpha=alpha,
        beta=beta,
        name=name if name is not None else f"skill-{next(_counter)}",
        description=description,
        level=level,
        body=body,
        version=1,
    )


def ids(answer: Sequence[Ranked]) -> list[uuid.UUID]:
    """The answer's item ids, in order."""
    return [r.candidate.id for r in answer]


def words(n: int, prefix: str = "w") -> str:
    """A text of n distinct words."""
    return " ".join(f"{prefix}{i}" for i in range(n))


BIG = RankQuery(top_k=50, token_budget=100_000)


class TestFusion:
    def test_item_found_by_several_sources_beats_a_single_top_hit(self) -> None:
        single = exp({VECTOR: 1})
        several = exp({VECTOR: 3, TEXT: 2})
        assert ids(rank([single, several], BIG)) == [several.id, single.id]

    def test_score_is_the_sum_of_reciprocal_ranks(self) -> None:
        item = exp({VECTOR: 1, CLUSTER: 4, TEXT: 10})
        (ranked,) = rank([item], BIG, RankConfig(rrf_k=10))
        assert ranked.score == pytest.approx(1 / 11 + 1 / 14 + 1 / 20)

    def test_better_rank_in_the_same_source_wins(self) -> None:
        first = exp({CLUSTER: 1})
        second = exp({CLUSTER: 2})
        assert ids(rank([second, first], BIG)) == [first.id, second.id]


class TestUtility:
    def test_well_supported_item_beats_an_equal_rank_poorly_supported_one(self) -> None:
        poor = exp({VECTOR: 1}, alpha=1, beta=9)
        good = exp({TEXT: 1}, alpha=9, beta=1)
        assert ids(rank([poor, good], BIG)) == [good.id, poor.id]

    def test_unproven_item_is_neutral(self) -> None:
        unproven = exp({VECTOR: 1})
        (ranked,) = rank([unproven], BIG)
        assert ranked.score == pytest.approx(1 / 61)

    def test_factor_is_linear_in_the_posterior_mean(self) -> None:
        item = exp({VECTOR: 1}, alpha=3, beta=1)
        (ranked,) = rank([item], BIG, RankConfig(utility_weight=0.4))
        assert ranked.score == pytest.approx(1 / 61 * (1 + 0.4 * (0.75 - 0.5)))

    def test_utility_can_outweigh_a_small_rank_gap(self) -> None:
        poor = exp({VECTOR: 1}, alpha=1, beta=20)
        good = exp({VECTOR: 2}, alpha=20, beta=1)
        assert ids(rank([poor, good], BIG)) == [good.id, poor.id]

    def test_zero_weight_ignores_utility(self) -> None:
        first = exp({VECTOR: 1}, alpha=1, beta=20)
        second = exp({VECTOR: 2}, alpha=20, beta=1)
        assert ids(rank([second, first], BIG, RankConfig(utility_weight=0))) == [first.id, second.id]


class TestNearDuplicates:
    def test_same_polarity_and_template_keeps_the_better(self) -> None:
        better = exp({VECTOR: 1}, template="open <door>")
        worse = exp({VECTOR: 2}, template="open  <DOOR>")
        assert ids(rank([worse, better], BIG)) == [better.id]

    def test_same_template_with_opposite_polarity_is_kept(self) -> None:
        do = exp({VECTOR: 1}, template="open <door>", polarity="do")
        avoid = exp({VECTOR: 2}, template="open <door>", polarity="avoid")
        assert ids(rank([do, avoid], BIG)) == [do.id, avoid.id]

    def test_similar_texts_collapse(self) -> None:
        text = "When the door is locked, do open door with key because it works"
        better = exp({VECTOR: 1}, text=text, template="")
        worse = exp({VECTOR: 2}, text=text.replace("it works", "it works!"), template="")
        assert ids(rank([worse, better], BIG)) == [better.id]

    def test_similar_texts_about_different_actions_are_both_kept(self) -> None:
        fridge = exp(
            {VECTOR: 1},
            text="When in the kitchen, do `open fridge` because it worked",
            template="open fridge",
        )
        oven = exp(
            {VECTOR: 2}, text="When in the kitchen, do `open oven` because it worked", template="open oven"
        )
        assert ids(rank([fridge, oven], BIG, RankConfig(duplicate_jaccard=0.5))) == [fridge.id, oven.id]

    def test_texts_below_the_jaccard_threshold_are_kept(self) -> None:
        better = exp({VECTOR: 1}, text=words(10), template="")
        other = exp({VECTOR: 2}, text=words(8) + " x y", template="")  # Jaccard 8/12
        assert ids(rank([better, other], BIG, RankConfig(duplicate_jaccard=0.8))) == [better.id, other.id]
        assert ids(rank([better, other], BIG, RankConfig(duplicate_jaccard=0.6))) == [better.id]

    def test_skills_with_the_same_name_keep_the_better(self) -> None:
        better = skill({TEXT: 1}, name="open-doors")
        worse = skill({VECTOR: 1}, name="Open-Doors", alpha=1, beta=3)
        other = skill({VECTOR: 3}, name="close-doors")
        assert ids(rank([worse, other, better], BIG)) == [better.id, other.id]

    def test_duplicate_does_not_take_a_slot(self) -> None:
        best = exp({VECTOR: 1}, template="t")
        dup = exp({VECTOR: 2}, template="t")
        third = exp({VECTOR: 3})
        answer = rank([best, dup, third], RankQuery(top_k=2, token_budget=10_000))
        assert ids(answer) == [best.id, third.id]


class TestPolarity:
    def test_missing_polarity_replaces_the_last_experience(self) -> None:
        dos = [exp({VECTOR: i}, polarity="do") for i in range(1, 4)]
        avoid = exp({VECTOR: 9}, polarity="avoid")
        answer = rank([*dos, avoid], RankQuery(top_k=3, token_budget=10_000))
        assert ids(answer) == [dos[0].id, dos[1].id, avoid.id]

    def test_best_of_the_missing_polarity_is_chosen(self) -> None:
        dos = [exp({VECTOR: i}, polarity="do", alpha=9) for i in range(1, 3)]
        weak = exp({VECTOR: 3}, polarity="avoid", alpha=1, beta=9)
        strong = exp({VECTOR: 4}, polarity="avoid")
        answer = rank([weak, strong, *dos], RankQuery(top_k=2, token_budget=10_000))
        assert ids(answer) == [dos[0].id, strong.id]

    def test_both_polarities_already_present_changes_nothing(self) -> None:
        do = exp({VECTOR: 1}, polarity="do")
        avoid = exp({VECTOR: 2}, polarity="avoid")
        later = exp({VECTOR: 3}, polarity="avoid")
        assert ids(rank([later, avoid, do], RankQuery(top_k=2))) == [do.id, avoid.id]

    def test_no_swap_when_top_k_is_one(self) -> None:
        do = exp({VECTOR: 1}, polarity="do")
        avoid = exp({VECTOR: 2}, polarity="avoid")
        assert ids(rank([do, avoid], RankQuery(top_k=1))) == [do.id]

    def test_zero_scored_candidate_is_not_swapped_in(self) -> None:
        dos = [exp({VECTOR: i}, polarity="do") for i in range(1, 3)]
        harmful = exp({VECTOR: 3}, polarity="avoid", alpha=0, beta=5)
        answer = rank([*dos, harmful], RankQuery(top_k=2), RankConfig(utility_weight=2))
        assert ids(answer) == [dos[0].id, dos[1].id]

    def test_swapped_in_item_respects_the_budget(self) -> None:
        dos = [exp({VECTOR: i}, polarity="do", text="a b", template="t" + str(i)) for i in range(1, 3)]
        huge = exp({VECTOR: 3}, polarity="avoid", text=words(200))
        fits = exp({VECTOR: 4}, polarity="avoid", text="c d")
        query = RankQuery(top_k=2, token_budget=30)
        answer = rank([*dos, huge, fits], query)
        assert ids(answer) == [dos[0].id, fits.id]
        assert sum(r.tokens for r in answer) <= query.token_budget


class TestBudget:
    def test_sum_of_tokens_stays_within_budget(self) -> None:
        items = [exp({VECTOR: i}, text=words(5 + i)) for i in range(1, 30)]
        for budget in (1, 10, 37, 100, 250):
            answer = rank(items, RankQuery(top_k=30, token_budget=budget))
            assert sum(r.tokens for r in answer) <= budget
            assert all(r.tokens == payload_tokens(r.candidate, with_body=False) for r in answer)

    def test_greedy_fill_skips_an_item_too_big_and_takes_a_smaller_later_one(self) -> None:
        first = exp({VECTOR: 1}, text=words(6))
        big = exp({VECTOR: 2}, text=words(60))
        small = exp({VECTOR: 3}, text=words(6, "x"))
        query = RankQuery(top_k=5, token_budget=2 * payload_tokens(first, with_body=False) + 1)
        assert ids(rank([first, big, small], query)) == [first.id, small.id]

    def test_item_bigger_than_the_budget_is_never_returned(self) -> None:
        big = exp({VECTOR: 1}, text=words(100))
        small = exp({VECTOR: 2}, text=words(3))
        answer = rank([big, small], RankQuery(token_budget=50))
        assert ids(answer) == [small.id]

    def test_tiny_budget_returns_nothing(self) -> None:
        items = [exp({VECTOR: 1}), skill({VECTOR: 2})]
        assert rank(items, RankQuery(token_budget=2)) == []
        assert rank(items, RankQuery(token_budget=0)) == []

    def test_cut_to_top_k(self) -> None:
        items = [exp({VECTOR: i}) for i in range(1, 10)]
        assert ids(rank(items, RankQuery(top_k=3, token_budget=10_000))) == [i.id for i in items[:3]]
        assert rank(items, RankQuery(top_k=0)) == []


class TestPayloadTokens:
    def test_experience_counts_text_template_and_example(self) -> None:
        item = exp({VECTOR: 1}, text=words(9), template="open <door>", example="open red door")
        parts = (words(9), "open <door>", "open red door")
        expected = sum(estimate_tokens(part) for part in parts)
        assert payload_tokens(item, with_body=False) == expected
        assert payload_tokens(item, with_body=True) == expected

    def test_skill_counts_the_body_only_when_asked(self) -> None:
        item = skill({VECTOR: 1}, name="open-doors", description=words(12), body=words(90))
        head = estimate_tokens("open-doors") + estimate_tokens(words(12))
        assert payload_tokens(item, with_body=False) == head
        assert payload_tokens(item, with_body=True) == head + estimate_tokens(words(90))


class TestBodies:
    def test_include_body_adds_the_body(self) -> None:
        item = skill({VECTOR: 1}, body=words(40))
        (ranked,) = rank([item], RankQuery(include_body=True, token_budget=1_000))
        assert ranked.include_body
        assert ranked.tokens == payload_tokens(item, with_body=True)

    def test_asked_for_body_is_paid_before_later_items(self) -> None:
        item = skill({VECTOR: 1}, body=words(30))
        lesson = exp({VECTOR: 2})
        budget = payload_tokens(item, with_body=True) + payload_tokens(lesson, with_body=False) - 1
        asked = rank([item, lesson], RankQuery(include_body=True, token_budget=budget))
        assert ids(asked) == [item.id]
        assert asked[0].include_body
        assert ids(rank([item, lesson], RankQuery(token_budget=budget))) == [item.id, lesson.id]

    def test_include_body_falls_back_to_the_description_when_the_body_does_not_fit(self) -> None:
        item = skill({VECTOR: 1}, body=words(400))
        (ranked,) = rank([item], RankQuery(include_body=True, token_budget=100))
        assert not ranked.include_body
        assert ranked.tokens == payload_tokens(item, with_body=False)

    def test_body_disclosed_when_the_budget_has_room_after_every_item(self) -> None:
        item = skill({VECTOR: 1}, body=words(30))
        lesson = exp({VECTOR: 2})
        (first, second) = rank([item, lesson], RankQuery(token_budget=1_000))
        assert first.include_body
        assert first.tokens == payload_tokens(item, with_body=True)
        assert not second.include_body

    def test_body_never_displaces_an_item(self) -> None:
        item = skill({VECTOR: 1}, body=words(30))
        lesson = exp({VECTOR: 2})
        budget = payload_tokens(item, with_body=False) + payload_tokens(lesson, with_body=False) + 5
        answer = rank([item, lesson], RankQuery(token_budget=budget))
        assert ids(answer) == [item.id, lesson.id]
        assert not answer[0].include_body

    def test_later_smaller_body_still_disclosed(self) -> None:
        big = skill({VECTOR: 1}, body=words(300))
        small = skill({VECTOR: 2}, body=words(9))
        answer = rank([big, small], RankQuery(token_budget=100))
        assert [r.include_body for r in answer] == [False, True]
        assert sum(r.tokens for r in answer) <= 100


class TestFirstStep:
    def test_the_strategy_closest_to_the_task_is_pinned_whatever_the_room_words_say(self) -> None:
        wordy = skill({VECTOR: 2, TEXT: 1}, level="strategy", similarity=0.55)
        closest = skill({VECTOR: 1}, level="strategy", similarity=0.91)
        answer = rank([wordy, closest], RankQuery(first_step=True, top_k=8, token_budget=10_000))
        assert answer[0].candidate.id == closest.id and answer[0].pinned

    def test_best_strategy_leads_the_answer(self) -> None:
        lesson = exp({VECTOR: 1, TEXT: 1})
        weak = skill({VECTOR: 5}, level="strategy")
        strong = skill({VECTOR: 3}, level="strategy")
        answer = rank([lesson, weak, strong], RankQuery(first_step=True, top_k=8, token_budget=10_000))
        assert ids(answer) == [strong.id, lesson.id, weak.id]
        assert answer[0].pinned
        assert not any(r.pinned for r in answer[1:])

    def test_strategy_is_chosen_by_fused_score_with_utility(self) -> None:
        unproven = skill({VECTOR: 1}, level="strategy")
        proven = skill({VECTOR: 2}, level="strategy", alpha=9, beta=1)
        answer = rank([unproven, proven], RankQuery(first_step=True))
        assert answer[0].candidate.id == proven.id

    def test_strategy_too_big_for_the_budget_is_not_pinned(self) -> None:
        huge = skill({VECTOR: 1}, level="strategy", description=words(200))
        fits = skill({VECTOR: 2}, level="strategy")
        answer = rank([huge, fits], RankQuery(first_step=True, token_budget=50))
        assert ids(answer) == [fits.id]
        assert answer[0].pinned

    def test_without_first_step_nothing_is_pinned(self) -> None:
        lesson = exp({VECTOR: 1, TEXT: 1})
        strategy = skill({VECTOR: 3}, level="strategy")
        answer = rank([lesson, strategy], RankQuery())
        assert ids(answer) == [lesson.id, strategy.id]
        assert not any(r.pinned for r in answer)


class TestPinnedSession:
    def test_children_are_boosted_over_equal_rank_items(self) -> None:
        other = skill({VECTOR: 1})
        child = skill({TEXT: 1})
        pinned = skill({CLUSTER: 5}, level="strategy")
        query = RankQuery(pinned_strategy=pinned.id, strategy_children=frozenset({child.id}))
        answer = rank([other, child, pinned], query, RankConfig(child_boost=1.5))
        assert ids(answer)[:2] == [child.id, other.id]
        assert answer[0].score == pytest.approx(1.5 / 61)

    def test_other_strategies_are_demoted_below_everything(self) -> None:
        pinned = skill({VECTOR: 3}, level="strategy")
        rival = skill({VECTOR: 1, TEXT: 1}, level="strategy")
        child = skill({VECTOR: 40})  # boosted 1.5 / 100, still below the pinned 1 / 63
        lesson = exp({VECTOR: 30})
        query = RankQuery(pinned_strategy=pinned.id, strategy_children=frozenset({child.id}))
        answer = rank([rival, lesson, child, pinned], query)
        assert ids(answer) == [pinned.id, child.id, lesson.id, rival.id]

    def test_pinned_strategy_stays_eligible_and_marked(self) -> None:
        pinned = skill({VECTOR: 2}, level="strategy")
        lesson = exp({VECTOR: 1})
        answer = rank([lesson, pinned], RankQuery(pinned_strategy=pinned.id))
        assert ids(answer) == [lesson.id, pinned.id]
        assert [r.pinned for r in answer] == [False, True]

    def test_demoted_strategy_is_cut_first(self) -> None:
        pinned = skill({VECTOR: 2}, level="strategy")
        rival = skill({VECTOR: 1}, level="strategy")
        lesson = exp({VECTOR: 40})
        answer = rank([rival, lesson, pinned], RankQuery(top_k=2, pinned_strategy=pinned.id))
        assert ids(answer) == [pinned.id, lesson.id]


class TestStepContext:
    def test_a_lesson_to_repeat_the_action_just_taken_ranks_lower(self) -> None:
        again = exp({VECTOR: 1}, template="open door to <task:object>", example="open door to kitchen")
        next_move = exp({VECTOR: 2}, template="go to <task:object>", example="go to kitchen")
        plain = RankQuery(top_k=5, token_budget=10_000)
        assert ids(rank([again, next_move], plain)) == [again.id, next_move.id]
        after = RankQuery(
            top_k=5, token_budget=10_000, recent_actions=("Open door to  kitchen",), explain=True
        )
        answer = rank([again, next_move], after)
        assert ids(answer) == [next_move.id, again.id]
        assert answer[1].explain["repeat_penalty"] == RankConfig().repeat_factor

    def test_an_avoid_lesson_about_the_last_action_is_not_demoted(self) -> None:
        warn = exp({VECTOR: 1}, polarity="avoid", template="open oven", example="open oven")
        other = exp({VECTOR: 2}, template="go to hallway", example="go to hallway")
        answer = rank([warn, other], RankQuery(top_k=5, token_budget=10_000, recent_actions=("open oven",)))
        assert ids(answer) == [warn.id, other.id]

    def test_skills_are_capped_so_lessons_keep_their_place(self) -> None:
        skills = [skill({VECTOR: i}) for i in range(1, 5)]
        lessons = [exp({VECTOR: i}) for i in range(5, 8)]
        answer = rank([*skills, *lessons], RankQuery(top_k=5, token_budget=10_000, max_skills=2))
        assert ids(answer) == [skills[0].id, skills[1].id, *(e.id for e in lessons)]
        uncapped = rank([*skills, *lessons], RankQuery(top_k=5, token_budget=10_000))
        assert sum(r.candidate.kind == ItemKind.SKILL for r in uncapped) == 4


class TestExplain:
    def test_breakdown_of_a_boosted_child(self) -> None:
        child = skill({VECTOR: 1, TEXT: 3}, alpha=3, beta=1)
        query = RankQuery(explain=True, pinned_strategy=_id(), strategy_children=frozenset({child.id}))
        (ranked,) = rank([child], query, RankConfig(rrf_k=10, utility_weight=1.0, child_boost=2.0))
        explain = ranked.explain
        assert list(explain) == ["rrf_vector", "rrf_text", "utility", "child_boost", "fused", "final"]
        assert explain["rrf_vector"] == pytest.approx(1 / 11)
        assert explain["rrf_text"] == pytest.approx(1 / 13)
        assert explain["utility"] == pytest.approx(1.25)
        assert explain["fused"] == pytest.approx((1 / 11 + 1 / 13) * 1.25)
        assert explain["final"] == pytest.approx(explain["fused"] * 2.0) == pytest.approx(ranked.score)

    def test_pin_and_demotion_are_shown(self) -> None:
        best = skill({VECTOR: 1}, level="strategy")
        second = skill({VECTOR: 2}, level="strategy")
        first = rank([best, second], RankQuery(explain=True, first_step=True))
        assert first[0].explain["strategy_pin"] == 1.0
        assert "strategy_pin" not in first[1].explain
        later = rank([best, second], RankQuery(explain=True, pinned_strategy=best.id))
        assert "strategy_demoted" not in later[0].explain
        assert later[1].explain["strategy_demoted"] == 1.0

    def test_no_breakdown_unless_asked(self) -> None:
        (ranked,) = rank([exp({VECTOR: 1})], RankQuery())
        assert ranked.explain == {}


class TestWithheld:
    @staticmethod
    def _answer() -> list[Ranked]:
        pinned = skill({VECTOR: 5}, level="strategy")
        items = [pinned, *(exp({VECTOR: i}) for i in range(1, 4))]
        return rank(items, RankQuery(pinned_strategy=pinned.id, first_step=False))

    def test_nothing_withheld_when_draw_is_not_below_share(self) -> None:
        answer = self._answer()
        assert choose_withheld(answer, share=0.1, draw=0.1) is None
        assert choose_withheld(answer, share=0.1, draw=0.9) is None
        assert choose_withheld(answer, share=0.0, draw=0.0) is None

    def test_draw_picks_the_item_deterministically(self) -> None:
        answer = self._answer()
        eligible = [r for r in answer if not r.pinned]
        assert len(eligible) == 3
        assert choose_withheld(answer, share=0.3, draw=0.0) is eligible[0]
        assert choose_withheld(answer, share=0.3, draw=0.15) is eligible[1]
        assert choose_withheld(answer, share=0.3, draw=0.2999) is eligible[2]

    def test_pinned_strategy_is_never_withheld(self) -> None:
        answer = self._answer()
        draws = [i / 1000 for i in range(300)]
        withheld = [choose_withheld(answer, share=0.3, draw=d) for d in draws]
        assert all(r is not None and not r.pinned for r in withheld)
        assert len({r.candidate.id for r in withheld if r is not None}) == 3

    def test_only_item_is_never_withheld(self) -> None:
        (only,) = rank([exp({VECTOR: 1})], RankQuery())
        assert choose_withheld([only], share=1.0, draw=0.5) is None
        assert choose_withheld([], share=1.0, draw=0.5) is None

    def test_nothing_withheld_when_every_item_is_pinned(self) -> None:
        pinned = Ranked(skill({VECTOR: 1}, level="strategy"), 1.0, 5, pinned=True)
        assert choose_withheld([pinned, pinned], share=1.0, draw=0.5) is None


class TestDeterminism:
    def test_shuffled_input_gives_the_same_answer(self) -> None:
        rng = random.Random(7)  # noqa: S311 - a seeded shuffle, not a secret
        items = [
            *(exp({VECTOR: rng.randint(1, 5)}, polarity=rng.choice(["do", "avoid"])) for _ in range(30)),
            *(skill({TEXT: rng.randint(1, 5)}, level=rng.choice(["strategy", "atomic"])) for _ in range(15)),
            *(exp({VECTOR: 1}, template="same <x>") for _ in range(3)),
            *(skill({CLUSTER: 2}, name="same") for _ in range(3)),
        ]
        query = RankQuery(top_k=10, token_budget=200, first_step=True, explain=True)
        expected = rank(items, query)
        for _ in range(5):
            rng.shuffle(items)
            assert rank(items, query) == expected

    def test_ties_are_broken_by_kind_then_id(self) -> None:
        low, high = uuid.UUID(int=1), uuid.UUID(int=2)
        tied_skills = [skill({VECTOR: 1}, id=high), skill({VECTOR: 1}, id=low)]
        tied_exp = exp({VECTOR: 1})
        answer = rank([*tied_skills, tied_exp], BIG)
        assert [r.candidate.kind for r in answer] == [ItemKind.EXPERIENCE, ItemKind.SKILL, ItemKind.SKILL]
        assert ids(answer)[1:] == [low, high]


class TestEmpty:
    def test_no_candidates_no_answer(self) -> None:
        assert rank([], RankQuery()) == []
        assert rank([], RankQuery(first_step=True, explain=True, include_body=True)) == []
