"""Final answers: extraction from tricky responses, and equivalence with and without
math-verify."""

from __future__ import annotations

import pytest

from multisample.engine import answers
from multisample.engine.answers import (
    as_number,
    canonical,
    equivalent,
    extract_answer,
    readable_reference,
)
from multisample.engine.rewards.correct import CorrectReward
from multisample.engine.types import Prompt


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("So x = 3, and \\boxed{12}.", "12"),
        ("first \\boxed{1}, then corrected: \\boxed{2}", "2"),  # several: the last
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces kept whole
        ("\\fbox{7}", "7"),
        ("\\boxed{12", "12"),  # never closed: the last number instead
        ("The answer is 42.", "42"),
        ("The final answer is: **-17**.", "-17"),
        ("Answer: 1,000\nThanks!", "1,000"),
        ("#### 72", "72"),
        ("the answer is 5. Wait, the answer is 6.", "6"),
        ("3 + 4 = 7, so we get 7 apples", "7"),
        ("It costs $1,234.50 in all", "1,234.50"),
        ("a ratio of 3/4", "3/4"),
        ("−5 degrees", "−5"),
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extraction_finds_the_final_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_a_task_set_can_choose_its_extractors() -> None:
    text = "The answer is 5 and I counted 6"
    assert extract_answer(text, ("last_number",)) == "6"
    assert extract_answer(text, ("boxed",)) is None


@pytest.mark.parametrize(
    ("answer", "number"),
    [
        ("1,000", 1000),
        ("1000.0", 1000),
        ("-3", -3),
        ("−3", -3),
        ("0.5", 0.5),
        ("1/2", 0.5),
        ("\\frac{1}{2}", 0.5),
        ("\\dfrac{3}{4}", 0.75),
        ("$12$", 12),
        ("50%", 0.5),
        ("1/0", None),
        ("twelve", None),
        ("1,00", None),  # not a thousands separator
    ],
)
def test_numbers_are_read_exactly(answer: str, number: float | None) -> None:
    value = as_number(answer)
    assert (None if value is None else float(value)) == number


@pytest.mark.parametrize(
    ("answer", "reference", "same"),
    [
        ("1,000", "1000", True),
        ("1000.0", "1000", True),
        ("\\frac{1}{2}", "0.5", True),
        ("-3", "−3", True),
        ("$12$", "12", True),
        ("12", "13", False),
        ("\\text{Paris}", "paris", True),
        ("0.333", "1/3", False),  # exact: a rounded decimal is not the fraction
    ],
)
def test_equivalence_without_math_verify(
    answer: str, reference: str, same: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(answers, "_math_verify", lambda: None)
    assert equivalent(answer, reference) is same


def test_math_verify_compares_what_exact_forms_cannot() -> None:
    pytest.importorskip("math_verify")
    assert equivalent("x^2 + 1", "1 + x^2")
    assert equivalent("\\{1, 2\\}", "\\{2, 1\\}")
    assert not equivalent("x^2 + 2", "1 + x^2")
    assert canonical("x^2 + 1") != canonical("1 + x^2")  # only math-verify sees it


def test_a_reference_must_be_readable() -> None:
    assert readable_reference("42") and readable_reference("\\frac{1}{2}")
    assert not readable_reference("   ")


async def test_the_correct_reward_scores_one_for_the_reference_and_zero_otherwise() -> None:
    prompt = Prompt(id="p", prompt="2 + 2?", reference="4")
    scores = await CorrectReward().score(
        prompt, ["The answer is 4.", "The answer is 5.", "I do not know", "\\boxed{4.0}"]
    )
    assert scores == [1.0, 0.0, 0.0, 1.0]
    boxed_only = prompt.model_copy(update={"extract": ("boxed",)})
    assert await CorrectReward().score(boxed_only, ["The answer is 4."]) == [0.0]
