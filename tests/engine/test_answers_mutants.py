"""engine/answers.py rules test_answers.py leaves unpinned; each test killed surviving
mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest

from multisample.engine import answers
from multisample.engine.answers import as_number, canonical, extract_answer, readable_reference


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),
        ("The answer is 12 apples", "12 apples"),  # the rest of the line, not a word
        ("The answer is 7\nsince 3 + 4 = 7\nDone.", "7"),  # its line only
        ("The answer is X.", "X"),  # a trailing period goes, not the X before it
        ("The answer is **X**.", "X"),  # bold goes, not the X inside it
        ("no such phrase", None),
    ],
)
def test_the_answer_is_reads_the_rest_of_its_line(text: str, expected: str | None) -> None:
    assert extract_answer(text, ("answer_is",)) == expected


def test_the_last_fbox_is_the_boxed_answer() -> None:
    assert extract_answer("\\fbox{5}", ("boxed",)) == "5"
    assert extract_answer("\\fbox{1} at first, then \\fbox{2}", ("boxed",)) == "2"


@pytest.mark.parametrize(
    ("answer", "value"),
    [
        ("- 5", Fraction(-5)),  # spaces inside a number
        ("\\(5\\)", Fraction(5)),  # inline math
        ("50\\%", Fraction(1, 2)),  # LaTeX's escaped percent
        ("1.5/3", Fraction(1, 2)),  # a fraction of decimals
        ("5X", None),
    ],
)
def test_numbers_in_the_forms_models_write_them(answer: str, value: Fraction | None) -> None:
    assert as_number(answer) == value


@pytest.mark.parametrize(
    ("answer", "form"),
    [
        ("Paris.", "paris"),
        ("New York", "newyork"),
        ("Malcolm X", "malcolmx"),
        ("$Malcolm X$", "malcolmx"),
        ("$Paris$", "paris"),
    ],
)
def test_text_answers_compare_without_case_spaces_dollars_or_a_final_period(
    answer: str, form: str
) -> None:
    assert canonical(answer) == form


def fake_math_verify(parse: Any) -> Any:
    return lambda: (parse, lambda gold, given: True)


def unreadable(text: str) -> list[Any]:
    raise ValueError(text)  # as math-verify may on what it cannot read


def test_without_math_verify_only_equal_forms_are_equivalent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(answers, "_math_verify", lambda: None)
    assert not answers.equivalent("1", "2")
    assert readable_reference("Paris") and not readable_reference("$ $")


def test_a_reference_is_readable_as_a_number_or_as_math_verify_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert readable_reference("x^2 + 1")  # math-verify reads it
    assert not readable_reference("\\\\")  # a LaTeX line break: math-verify finds nothing
    monkeypatch.setattr(answers, "_math_verify", fake_math_verify(lambda text: []))
    assert readable_reference("5")  # a number needs no math-verify
    assert not readable_reference("x")
    monkeypatch.setattr(answers, "_math_verify", fake_math_verify(unreadable))
    assert not readable_reference("x")


def test_answers_math_verify_cannot_read_are_not_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(answers, "_math_verify", fake_math_verify(unreadable))
    assert not answers.equivalent("x", "y")
