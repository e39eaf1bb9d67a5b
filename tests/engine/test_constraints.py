"""Tests for engine.rewards.constraints: every kind passes and fails, parsing errors, helpers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from multisample.engine.rewards.constraints import (
    CONSTRAINT_KINDS,
    AllLowercase,
    AllUppercase,
    MaxWords,
    NoCommas,
    fraction_met,
    instructions,
    parse_constraints,
)
from multisample.engine.rewards.text_rules import has_cased_letter, paragraphs, sentences, words

# (spec, response, expected): at least one True and one False row per kind.
CASES: list[tuple[dict[str, Any], str, bool]] = [
    # max_words
    ({"kind": "max_words", "n": 5}, "One two three four five.", True),
    ({"kind": "max_words", "n": 5}, "One two three four five six.", False),
    ({"kind": "max_words", "n": 3}, "Don't over-think it.", True),
    ({"kind": "max_words", "n": 3}, "", True),
    # min_words
    ({"kind": "min_words", "n": 3}, "one two three", True),
    ({"kind": "min_words", "n": 3}, "one two", False),
    ({"kind": "min_words", "n": 1}, "   ", False),
    # max_sentences
    ({"kind": "max_sentences", "n": 2}, "Hi there. How are you?", True),
    ({"kind": "max_sentences", "n": 2}, "Hi there. How are you? I am fine!", False),
    ({"kind": "max_sentences", "n": 1}, "Pi is 3.14 exactly.", True),
    # min_sentences
    ({"kind": "min_sentences", "n": 3}, "One. Two! Three?", True),
    ({"kind": "min_sentences", "n": 3}, "One. Two!", False),
    ({"kind": "min_sentences", "n": 2}, 'He said "stop." Then he left.', True),
    ({"kind": "min_sentences", "n": 2}, "... !!! ?", False),
    # paragraphs
    ({"kind": "paragraphs", "n": 2}, "First part.\n\nSecond part.", True),
    ({"kind": "paragraphs", "n": 2}, "First part.\n\n\n  \nSecond part.\n\n", True),
    ({"kind": "paragraphs", "n": 2}, "First part.\n***\nSecond part.", True),
    ({"kind": "paragraphs", "n": 2}, "First line.\nSecond line.", False),
    ({"kind": "paragraphs", "n": 1}, "Line one.\nLine two.", True),
    ({"kind": "paragraphs", "n": 2}, "A.\n\nB.\n\nC.", False),
    ({"kind": "paragraphs", "n": 1}, "", False),
    # include_keywords
    ({"kind": "include_keywords", "keywords": ["apple", "pie"]}, "Apple PIE is great.", True),
    ({"kind": "include_keywords", "keywords": ["apple", "pie"]}, "Apple tart.", False),
    ({"kind": "include_keywords", "keywords": ["pie"]}, "A piece of cake.", False),
    ({"kind": "include_keywords", "keywords": ["ice cream"]}, "I like ice\ncream.", True),
    # forbidden_words
    ({"kind": "forbidden_words", "words": ["very", "really"]}, "It is quite good.", True),
    ({"kind": "forbidden_words", "words": ["very", "really"]}, "It is Very good.", False),
    ({"kind": "forbidden_words", "words": ["cat"]}, "Concatenate the category.", True),
    # keyword_frequency
    ({"kind": "keyword_frequency", "keyword": "tea", "n": 2}, "Tea, tea and coffee.", True),
    ({"kind": "keyword_frequency", "keyword": "tea", "n": 2}, "Tea and teapots.", False),
    (
        {"kind": "keyword_frequency", "keyword": "tea", "n": 1, "relation": "at_most"},
        "Tea and tea.",
        False,
    ),
    (
        {"kind": "keyword_frequency", "keyword": "tea", "n": 1, "relation": "exactly"},
        "One tea please.",
        True,
    ),
    # letter_frequency
    ({"kind": "letter_frequency", "letter": "z", "n": 3}, "Zigzag zebra.", True),
    ({"kind": "letter_frequency", "letter": "z", "n": 3}, "Zigzag.", False),
    (
        {"kind": "letter_frequency", "letter": "e", "n": 0, "relation": "at_most"},
        "A fast cat.",
        True,
    ),
    (
        {"kind": "letter_frequency", "letter": "E", "n": 2, "relation": "exactly"},
        "Eve",
        True,
    ),
    # capital_word_frequency
    (
        {"kind": "capital_word_frequency", "n": 2},
        "This is VERY IMPORTANT.",
        True,
    ),
    ({"kind": "capital_word_frequency", "n": 2}, "I am A cat, NOT a dog.", False),
    (
        {"kind": "capital_word_frequency", "n": 0, "relation": "at_most"},
        "I think so.",
        True,
    ),
    (
        {"kind": "capital_word_frequency", "n": 1, "relation": "exactly"},
        "NASA and ESA.",
        False,
    ),
    # all_lowercase
    ({"kind": "all_lowercase"}, "all quiet here, 42 times.", True),
    ({"kind": "all_lowercase"}, "all quiet Here.", False),
    # all_uppercase
    ({"kind": "all_uppercase"}, "ALL LOUD HERE, 42 TIMES!", True),
    ({"kind": "all_uppercase"}, "ALL LOUD hERE", False),
    # no cased letter at all: fails both (IFEval would pass it; a search would find it)
    ({"kind": "all_lowercase"}, "1.\n2.\n3.", False),
    ({"kind": "all_uppercase"}, "1.\n2.\n3.", False),
    ({"kind": "all_lowercase"}, "四十二", False),
    ({"kind": "all_lowercase"}, "42 é", True),
    # no_commas
    ({"kind": "no_commas"}, "No commas here.", True),
    ({"kind": "no_commas"}, "Yes, a comma.", False),
    ({"kind": "no_commas"}, "全角，逗号", False),
    # quotation
    ({"kind": "quotation"}, '  "Quoted, all of it."\n', True),
    ({"kind": "quotation"}, "“Curly quotes.”", True),
    ({"kind": "quotation"}, '"Quoted" but then more.', False),
    ({"kind": "quotation"}, '"', False),
    # json_format
    ({"kind": "json_format"}, '{"a": 1, "b": [1, 2]}', True),
    ({"kind": "json_format"}, '```json\n{"a": 1}\n```', True),
    ({"kind": "json_format"}, "```\n[1, 2]\n```  ", True),
    ({"kind": "json_format"}, 'Here it is: {"a": 1}', False),
    ({"kind": "json_format"}, "42", False),
    ({"kind": "json_format"}, "{'a': 1}", False),
    # title
    ({"kind": "title"}, "<<My Day>>\nText.", True),
    ({"kind": "title"}, "<< >>\nText.", False),
    ({"kind": "title"}, "<My Day>\nText.", False),
    # bullet_count
    ({"kind": "bullet_count", "n": 2}, "Intro:\n* one\n- two\n", True),
    ({"kind": "bullet_count", "n": 2}, "* one\n* two\n* three", False),
    ({"kind": "bullet_count", "n": 1}, "* one\n***\n-not a bullet", True),
    ({"kind": "bullet_count", "n": 2}, "  * nested one\n  - nested two", True),
    # highlighted_sections
    ({"kind": "highlighted_sections", "n": 2}, "Some *bold* and **very bold** text.", True),
    ({"kind": "highlighted_sections", "n": 2}, "Only *one* here.", False),
    ({"kind": "highlighted_sections", "n": 1}, "* a bullet\n* another bullet", False),
    ({"kind": "highlighted_sections", "n": 1}, "* a bullet with *one* highlight", True),
    # placeholders
    ({"kind": "placeholders", "n": 2}, "Dear [name], meet me at [address].", True),
    ({"kind": "placeholders", "n": 2}, "Dear [name], meet me at [ ].", False),
    # postscript
    ({"kind": "postscript"}, "Hello.\n\nP.S. See you soon.", True),
    ({"kind": "postscript"}, "Hello.\n\np. s. see you soon.", True),
    ({"kind": "postscript"}, "Hello.\n**P.S.** See you soon.", True),
    ({"kind": "postscript"}, "Hello. P.S. inline does not count.", False),
    ({"kind": "postscript", "marker": "P.P.S"}, "Hi.\nP.S. one\nP.P.S two", True),
    ({"kind": "postscript", "marker": "P.P.S"}, "Hi.\nP.S. one", False),
    # starts_with
    ({"kind": "starts_with", "phrase": "Dear team,"}, "  dear   Team, hello.", True),
    ({"kind": "starts_with", "phrase": "Dear team,"}, "Hello. Dear team,", False),
    ({"kind": "starts_with", "phrase": "Dear"}, "Dearest Sam,", False),
    # ends_with
    ({"kind": "ends_with", "phrase": "Any questions?"}, "Done. Any questions?  \n", True),
    ({"kind": "ends_with", "phrase": "Any questions?"}, "Any questions? Bye.", False),
    ({"kind": "ends_with", "phrase": "the end"}, "This is the weekend", False),
    ({"kind": "ends_with", "phrase": "the end"}, "And that was THE END", True),
]


@pytest.mark.parametrize(("spec", "response", "expected"), CASES)
def test_check(spec: dict[str, Any], response: str, expected: bool) -> None:
    (constraint,) = parse_constraints([spec])
    assert constraint.check(response) is expected


def test_every_kind_has_a_passing_and_a_failing_case() -> None:
    seen: dict[str, set[bool]] = {}
    for spec, _, expected in CASES:
        seen.setdefault(spec["kind"], set()).add(expected)
    assert set(seen) == set(CONSTRAINT_KINDS)
    assert all(outcomes == {True, False} for outcomes in seen.values()), seen


def _example(kind: str) -> dict[str, Any]:
    """A valid spec for a kind, filling required fields with plausible values."""
    values: dict[str, Any] = {
        "n": 2,
        "keywords": ["apple"],
        "words": ["apple"],
        "keyword": "apple",
        "letter": "a",
        "phrase": "Thanks.",
    }
    fields = CONSTRAINT_KINDS[kind].model_fields
    spec = {"kind": kind}
    spec.update({name: values[name] for name, f in fields.items() if f.is_required()})
    return spec


@pytest.mark.parametrize("kind", sorted(CONSTRAINT_KINDS))
def test_describe_is_a_sentence(kind: str) -> None:
    (constraint,) = parse_constraints([_example(kind)])
    text = constraint.describe()
    assert text and text == text.strip()
    assert text[0].isupper()
    assert text.rstrip('"')[-1] in ".!?"
    assert "\n" not in text


@pytest.mark.parametrize("kind", sorted(CONSTRAINT_KINDS))
def test_models_are_frozen_and_forbid_extras(kind: str) -> None:
    cls = CONSTRAINT_KINDS[kind]
    constraint = cls.model_validate(_example(kind))
    assert constraint.kind == kind
    with pytest.raises(ValidationError):
        cls.model_validate({**_example(kind), "unexpected": 1})
    hash(constraint)  # frozen models are hashable


def test_at_least_twenty_kinds() -> None:
    assert len(CONSTRAINT_KINDS) >= 20


def test_describe_wording() -> None:
    specs = [
        {"kind": "max_words", "n": 50},
        {"kind": "keyword_frequency", "keyword": "tea", "n": 1, "relation": "exactly"},
        {"kind": "letter_frequency", "letter": "E", "n": 0, "relation": "at_most"},
        {"kind": "include_keywords", "keywords": ["a", "b", "c"]},
        {"kind": "forbidden_words", "words": ["x", "y"]},
        {"kind": "paragraphs", "n": 1},
    ]
    got = [c.describe() for c in parse_constraints(specs)]
    assert got == [
        "Answer in at most 50 words.",
        'Use the word "tea" exactly once.',
        'Do not use the letter "e" at all.',
        'Include the keywords "a", "b" and "c".',
        'Do not use the words "x" or "y".',
        "Write exactly 1 paragraph, with no blank lines.",
    ]
    assert instructions(parse_constraints(specs[:2])) == " ".join(got[:2])


# --------------------------------------------------------------------------- parsing errors


@pytest.mark.parametrize(
    ("specs", "expected"),
    [
        (
            [{"kind": "max_words", "n": 50}, {"kind": "max_words", "n": -3}],
            "constraints[1].n: Input should be greater than 0 (got -3)",
        ),
        ([{"kind": "foo"}], "constraints[0].kind: unknown constraint kind 'foo'; known: "),
        ([{"kind": 3}], "constraints[0].kind: unknown constraint kind 3"),
        ([{"n": 3}], "constraints[0].kind: Field required"),
        ([{"kind": "min_words"}], "constraints[0].n: Field required"),
        ([{"kind": "max_words", "n": 5, "m": 1}], "constraints[0].m: Extra inputs are not"),
        ([{"kind": "max_words", "n": "5"}], "constraints[0].n: Input should be a valid integer"),
        ([{"kind": "max_words", "n": True}], "constraints[0].n: Input should be a valid integer"),
        (
            [{"kind": "include_keywords", "keywords": ["ok", " "]}],
            "constraints[0].keywords[1]: String should have at least 1 character",
        ),
        ([{"kind": "include_keywords", "keywords": []}], "constraints[0].keywords: "),
        (
            [{"kind": "letter_frequency", "letter": "ab", "n": 1}],
            "constraints[0].letter: Value error, should be exactly one letter (got 'ab')",
        ),
        (
            [{"kind": "keyword_frequency", "keyword": "x", "n": 1, "relation": "more"}],
            "constraints[0].relation: Input should be 'at_least', 'at_most' or 'exactly'",
        ),
        (["max_words"], "constraints[0]: expected an object with a 'kind' field, got str"),
    ],
)
def test_parse_errors(specs: list[Any], expected: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_constraints(specs)
    message = str(info.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_parse_unknown_kind_lists_known_kinds() -> None:
    with pytest.raises(ValueError, match=r"known: .*max_words"):
        parse_constraints([{"kind": "response_language"}])


def test_parse_rejects_non_list() -> None:
    with pytest.raises(ValueError, match="expected a list"):
        parse_constraints("max_words")  # type: ignore[arg-type]


def test_parse_returns_models_in_order() -> None:
    parsed = parse_constraints(
        [{"kind": "no_commas"}, {"kind": "max_words", "n": 10}, {"kind": "postscript"}]
    )
    assert [c.kind for c in parsed] == ["no_commas", "max_words", "postscript"]
    assert parsed[1] == MaxWords(n=10)
    assert parse_constraints([]) == []


def test_parse_accepts_tuple_fields_from_json_lists() -> None:
    (constraint,) = parse_constraints([{"kind": "include_keywords", "keywords": [" tea "]}])
    assert constraint.model_dump() == {"kind": "include_keywords", "keywords": ("tea",)}


# --------------------------------------------------------------------------- fraction_met


def test_fraction_met() -> None:
    constraints = parse_constraints(
        [
            {"kind": "max_words", "n": 3},
            {"kind": "no_commas"},
            {"kind": "all_lowercase"},
            {"kind": "ends_with", "phrase": "bye"},
        ]
    )
    assert fraction_met(constraints, "hi, bye") == 0.75
    assert fraction_met(constraints, "hi there bye") == 1.0
    assert fraction_met(constraints, "Hello, my dear friend") == 0.0
    assert fraction_met([], "anything") == 1.0
    assert fraction_met([], "") == 1.0


# Kinds that only forbid something; as in IFEval, an empty response meets them. Not
# all_lowercase / all_uppercase: they need a cased letter (ours, unlike IFEval).
VACUOUS_ON_EMPTY = {
    "max_words",
    "max_sentences",
    "forbidden_words",
    "no_commas",
}


@pytest.mark.parametrize("kind", sorted(CONSTRAINT_KINDS))
@pytest.mark.parametrize("response", ["", "   \n\t  \n"])
def test_empty_response(kind: str, response: str) -> None:
    (constraint,) = parse_constraints([_example(kind)])
    assert constraint.check(response) is (kind in VACUOUS_ON_EMPTY)


# --------------------------------------------------------------------------- text helpers


def test_words() -> None:
    assert words("Don't over-think it, 3.5 times!") == [
        "Don't",
        "over-think",
        "it",
        "3",
        "5",
        "times",
    ]
    assert words("") == []
    assert words("café naïve") == ["café", "naïve"]


def test_sentences() -> None:
    assert sentences("Hi. How are you?! Fine...") == ["Hi.", "How are you?!", "Fine..."]
    assert sentences("Version 2.0 is out. Yay") == ["Version 2.0 is out.", "Yay"]
    assert sentences("") == []
    assert sentences("(Really.) Yes.") == ["(Really.)", "Yes."]


def test_paragraphs() -> None:
    text = "  First\nstill first\n\n---\n\nSecond\n \n\nThird  \n"
    assert paragraphs(text) == ["First\nstill first", "Second", "Third"]
    assert paragraphs("") == []
    assert paragraphs("\n\n***\n\n") == []


# --------------------------------------------------------------------------- properties


@given(st.text())
def test_lowercased_text_passes_all_lowercase_iff_it_has_a_cased_letter(text: str) -> None:
    lowered = text.lower()
    assert AllLowercase().check(lowered) is has_cased_letter(lowered)


@given(st.text())
def test_uppercased_text_passes_all_uppercase_iff_it_has_a_cased_letter(text: str) -> None:
    raised = text.upper()
    assert AllUppercase().check(raised) is has_cased_letter(raised)


@given(st.text())
def test_text_without_commas_passes_no_commas(text: str) -> None:
    assert NoCommas().check(text.replace(",", "").replace("，", ""))


@given(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), max_size=30), st.integers(1, 30))
def test_word_limits_agree_with_word_count(tokens: list[str], n: int) -> None:
    text = " ".join(tokens)
    max_ok, min_ok = parse_constraints(
        [{"kind": "max_words", "n": n}, {"kind": "min_words", "n": n}]
    )
    assert max_ok.check(text) == (len(tokens) <= n)
    assert min_ok.check(text) == (len(tokens) >= n)


@given(st.text(), st.text())
def test_whitespace_around_response_does_not_matter(text: str, pad: str) -> None:
    space = "".join(ch for ch in pad if ch in " \t\n")
    for kind in CONSTRAINT_KINDS:
        (constraint,) = parse_constraints([_example(kind)])
        assert constraint.check(text) == constraint.check(space + text + space), kind


@given(st.text(max_size=50))
def test_fraction_met_is_a_share(text: str) -> None:
    constraints = parse_constraints([_example(k) for k in CONSTRAINT_KINDS])
    share = fraction_met(constraints, text)
    assert 0.0 <= share <= 1.0
    assert share * len(constraints) == pytest.approx(sum(c.check(text) for c in constraints))
