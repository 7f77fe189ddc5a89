"""Fuzzing the two parsers that read what clients send: trajectories and SKILL.md.

Whatever comes in, a parser either gives a value or raises its own typed error (which the API turns
into a 4xx); nothing else escapes. Valid inputs built from the parts survive a round trip.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from app import skill_md
from app.api.schemas.trajectories import TrajectoryBatch, TrajectoryIn

BATCH: TypeAdapter[Any] = TypeAdapter(TrajectoryBatch)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
clean_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
clean_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | clean_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(clean_text, inner, max_size=4),
    max_leaves=20,
)
words = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40)
step = st.fixed_dictionaries(
    {"observation": words, "action": words},
    optional={"reward": st.floats(-10, 10), "tool_output": clean_json, "error": words},
)
trajectory = st.fixed_dictionaries(
    {"task": words, "agent_id": words, "steps": st.lists(step, max_size=5)},
    optional={
        "outcome": st.fixed_dictionaries({}, optional={"success": st.booleans(), "score": st.floats(0, 1)}),
        "metadata": st.dictionaries(clean_text, words, max_size=3),
    },
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_any_json_is_a_batch_or_a_validation_error(value: Any) -> None:
    try:
        BATCH.validate_python(value)
    except ValidationError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.lists(trajectory, min_size=1, max_size=3))
def test_valid_trajectories_parse_and_round_trip(items: list[dict[str, Any]]) -> None:
    parsed = BATCH.validate_python(items)
    assert [t.task for t in parsed] == [i["task"] for i in items]
    for model in parsed:
        assert TrajectoryIn.model_validate(model.model_dump()) == model


@settings(max_examples=200, deadline=None)
@given(trajectory, st.sampled_from(["task", "agent_id"]))
def test_nul_anywhere_is_refused(item: dict[str, Any], field: str) -> None:
    item = {**item, field: item[field] + "\x00"}
    try:
        BATCH.validate_python(item)
    except ValidationError as error:
        assert any(e["type"] == "nul_in_text" for e in error.errors())
    else:
        raise AssertionError("a NUL character was accepted")


frontmatter_lines = st.lists(
    st.sampled_from(["name: x", "description: y", "metadata:", "  a: b", "- item", "key: [", "'", "---", ""]),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(
    st.text(max_size=400) | frontmatter_lines.map(lambda lines: "---\n" + "\n".join(lines) + "\n---\n# T\n")
)
def test_any_text_is_a_document_or_a_format_error(text: str) -> None:
    try:
        skill_md.parse(text)
    except skill_md.SkillFormatError:
        pass


names = st.from_regex(r"[a-z][a-z0-9]{0,10}(-[a-z0-9]{1,8}){0,2}", fullmatch=True)
sentences = st.text(alphabet="abcdefghij klmnop.,", min_size=1, max_size=60).map(str.strip).filter(bool)
titles = st.sampled_from([skill_md.WHEN_TO_USE, skill_md.PROCEDURE, skill_md.PITFALLS, "Notes", "Examples"])


@settings(max_examples=200, deadline=None)
@given(names, sentences, st.dictionaries(titles, sentences, max_size=4))
def test_rendered_documents_parse_back(name: str, description: str, sections: dict[str, str]) -> None:
    doc = skill_md.SkillDocument(
        name=name,
        description=description,
        sections=tuple(skill_md.Section(title, body) for title, body in sections.items()),
    )
    back = skill_md.parse(skill_md.render(doc))
    assert (back.name, back.description) == (doc.name, doc.description)
    assert [(s.title, s.body.strip()) for s in back.sections] == [
        (s.title, s.body.strip()) for s in doc.sections
    ]


def test_non_finite_numbers_in_tool_json_are_refused() -> None:
    """Found by this file: Python's JSON reader takes NaN, JSONB does not (it answered 500)."""
    item = {
        "task": "t",
        "agent_id": "a",
        "steps": [{"observation": "o", "action": "a", "tool_output": float("nan")}],
    }
    try:
        BATCH.validate_python(item)
    except ValidationError as error:
        assert any(e["type"] == "non_finite_number" for e in error.errors())
    else:
        raise AssertionError("NaN was accepted")
