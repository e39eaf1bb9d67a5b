"""Verifiable instruction-following constraints, checked with plain string rules.

This follows IFEval (Zhou et al., 2023, "Instruction-Following Evaluation for Large
Language Models") in spirit: every constraint is a property of the response text that
a short deterministic rule can check, so the share of constraints met is a reward that
needs no model. The kinds, their parameters and the text rules were written for this
project; they use only the standard library and pydantic.

The text rules the kinds share (words, sentences, paragraphs, keywords, phrases) are
engine.rewards.text_rules's, documented there. As in IFEval, constraints that only forbid
something (``max_words``, ``forbidden_words``, ``no_commas``, ...) are met by an empty
response; the constraints that ask for something are not. Unlike IFEval, ``all_lowercase``
and ``all_uppercase`` need at least one cased letter: a response without any ("1.\n2.\n3.",
or an empty one) fails them, because a search that optimizes this reward would otherwise
find such answers (`text_rules.has_cased_letter`).

Constraints are frozen pydantic models discriminated by ``kind``; records store them as
plain dicts (``{"kind": "max_words", "n": 50}``) and :func:`parse_constraints` turns a
list of such dicts into models, with one-line error messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from multisample.engine.registry import by_kind, tagged_union
from multisample.engine.rewards import text_rules


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _plural(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _quoted_list(items: Sequence[str], conjunction: str) -> str:
    quoted = [f'"{item}"' for item in items]
    if len(quoted) == 1:
        return quoted[0]
    return f"{', '.join(quoted[:-1])} {conjunction} {quoted[-1]}"


Relation = Literal["at_least", "at_most", "exactly"]
"""How a count compares with the bound ``n``."""

_RELATION_WORDS: dict[str, str] = {
    "at_least": "at least",
    "at_most": "at most",
    "exactly": "exactly",
}


def _compare(count: int, relation: Relation, n: int) -> bool:
    if relation == "at_least":
        return count >= n
    if relation == "at_most":
        return count <= n
    return count == n


_Count = Annotated[int, Field(strict=True)]
_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _one_letter(value: str) -> str:
    if len(value) != 1 or not value.isalpha():
        raise ValueError("should be exactly one letter")
    return value


_Letter = Annotated[str, AfterValidator(_one_letter)]


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def check(self, response: str) -> bool:  # pragma: no cover - every kind overrides it
        """Whether ``response`` meets this constraint."""
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - every kind overrides it
        """The instruction, as one English sentence for a prompt."""
        raise NotImplementedError


# --------------------------------------------------------------------------- length


class MaxWords(_Base):
    """At most ``n`` words."""

    kind: Literal["max_words"] = "max_words"
    n: _Count = Field(gt=0, le=100_000)
    """The largest allowed number of words."""

    def check(self, response: str) -> bool:
        return len(text_rules.words(response)) <= self.n

    def describe(self) -> str:
        return f"Answer in at most {_plural(self.n, 'word')}."


class MinWords(_Base):
    """At least ``n`` words."""

    kind: Literal["min_words"] = "min_words"
    n: _Count = Field(gt=0, le=100_000)
    """The smallest required number of words."""

    def check(self, response: str) -> bool:
        return len(text_rules.words(response)) >= self.n

    def describe(self) -> str:
        return f"Answer in at least {_plural(self.n, 'word')}."


class MaxSentences(_Base):
    """At most ``n`` sentences."""

    kind: Literal["max_sentences"] = "max_sentences"
    n: _Count = Field(gt=0, le=10_000)
    """The largest allowed number of sentences."""

    def check(self, response: str) -> bool:
        return len(text_rules.sentences(response)) <= self.n

    def describe(self) -> str:
        return f"Use at most {_plural(self.n, 'sentence')}."


class MinSentences(_Base):
    """At least ``n`` sentences."""

    kind: Literal["min_sentences"] = "min_sentences"
    n: _Count = Field(gt=0, le=10_000)
    """The smallest required number of sentences."""

    def check(self, response: str) -> bool:
        return len(text_rules.sentences(response)) >= self.n

    def describe(self) -> str:
        return f"Use at least {_plural(self.n, 'sentence')}."


class Paragraphs(_Base):
    """Exactly ``n`` paragraphs, separated by blank lines (or horizontal-rule lines)."""

    kind: Literal["paragraphs"] = "paragraphs"
    n: _Count = Field(gt=0, le=100)
    """The required number of paragraphs."""

    def check(self, response: str) -> bool:
        return len(text_rules.paragraphs(response)) == self.n

    def describe(self) -> str:
        if self.n == 1:
            return "Write exactly 1 paragraph, with no blank lines."
        return f"Write exactly {self.n} paragraphs, separated from each other by a blank line."


# --------------------------------------------------------------------------- keywords


class IncludeKeywords(_Base):
    """Every keyword appears at least once (whole words, any case)."""

    kind: Literal["include_keywords"] = "include_keywords"
    keywords: tuple[_Text, ...] = Field(min_length=1, max_length=20)
    """The words or phrases that must all appear."""

    def check(self, response: str) -> bool:
        return all(text_rules.count_phrase(response, kw) > 0 for kw in self.keywords)

    def describe(self) -> str:
        label = "keyword" if len(self.keywords) == 1 else "keywords"
        return f"Include the {label} {_quoted_list(self.keywords, 'and')}."


class ForbiddenWords(_Base):
    """None of the words appears (whole words, any case)."""

    kind: Literal["forbidden_words"] = "forbidden_words"
    words: tuple[_Text, ...] = Field(min_length=1, max_length=20)
    """The words or phrases that must not appear."""

    def check(self, response: str) -> bool:
        return not any(text_rules.count_phrase(response, word) for word in self.words)

    def describe(self) -> str:
        label = "word" if len(self.words) == 1 else "words"
        return f"Do not use the {label} {_quoted_list(self.words, 'or')}."


class KeywordFrequency(_Base):
    """A keyword appears at least / at most / exactly ``n`` times (whole words, any case)."""

    kind: Literal["keyword_frequency"] = "keyword_frequency"
    keyword: _Text
    """The word or phrase to count."""
    n: _Count = Field(ge=0, le=1000)
    """The bound on the number of occurrences."""
    relation: Relation = "at_least"
    """How the count compares with ``n``."""

    def check(self, response: str) -> bool:
        return _compare(text_rules.count_phrase(response, self.keyword), self.relation, self.n)

    def describe(self) -> str:
        return f'Use the word "{self.keyword}" {_RELATION_WORDS[self.relation]} {_times(self.n)}.'


class LetterFrequency(_Base):
    """A letter appears at least / at most / exactly ``n`` times (any case)."""

    kind: Literal["letter_frequency"] = "letter_frequency"
    letter: _Letter
    """The letter to count: one alphabetic character."""
    n: _Count = Field(ge=0, le=10_000)
    """The bound on the number of occurrences."""
    relation: Relation = "at_least"
    """How the count compares with ``n``."""

    def check(self, response: str) -> bool:
        count = response.casefold().count(self.letter.casefold())
        return _compare(count, self.relation, self.n)

    def describe(self) -> str:
        letter = self.letter.lower()
        if self.relation == "at_most" and self.n == 0:
            return f'Do not use the letter "{letter}" at all.'
        return f'Use the letter "{letter}" {_RELATION_WORDS[self.relation]} {_times(self.n)}.'


class CapitalWordFrequency(_Base):
    """Words in all capitals (two letters or more) appear at least / at most / exactly n times."""

    kind: Literal["capital_word_frequency"] = "capital_word_frequency"
    n: _Count = Field(ge=0, le=10_000)
    """The bound on the number of all-capital words."""
    relation: Relation = "at_least"
    """How the count compares with ``n``."""

    def check(self, response: str) -> bool:
        count = sum(1 for w in text_rules.words(response) if len(w) >= 2 and w.isupper())
        return _compare(count, self.relation, self.n)

    def describe(self) -> str:
        if self.relation == "at_most" and self.n == 0:
            return "Do not write any word in all capital letters."
        return (
            f"Write {_RELATION_WORDS[self.relation]} {_plural(self.n, 'word')} "
            "in all capital letters, such as IMPORTANT."
        )


# --------------------------------------------------------------------------- case and punctuation


class AllLowercase(_Base):
    """No capital letters anywhere, and at least one cased letter (ours; IFEval passes a
    response without letters)."""

    kind: Literal["all_lowercase"] = "all_lowercase"

    def check(self, response: str) -> bool:
        return response == response.lower() and text_rules.has_cased_letter(response)

    def describe(self) -> str:
        return "Write your entire response in lowercase letters, with no capital letters at all."


class AllUppercase(_Base):
    """No lowercase letters anywhere, and at least one cased letter (ours; IFEval passes
    a response without letters)."""

    kind: Literal["all_uppercase"] = "all_uppercase"

    def check(self, response: str) -> bool:
        return response == response.upper() and text_rules.has_cased_letter(response)

    def describe(self) -> str:
        return "Write your entire response in capital letters, with no lowercase letters at all."


class NoCommas(_Base):
    """No commas (ASCII or full-width)."""

    kind: Literal["no_commas"] = "no_commas"

    def check(self, response: str) -> bool:
        return "," not in response and "，" not in response

    def describe(self) -> str:
        return "Do not use any commas in your response."


class Quotation(_Base):
    """The whole response is wrapped in double quotation marks."""

    kind: Literal["quotation"] = "quotation"

    def check(self, response: str) -> bool:
        text = response.strip()
        if len(text) < 2:
            return False
        return (text[0], text[-1]) in {('"', '"'), ("“", "”")}

    def describe(self) -> str:
        return "Wrap your entire response in double quotation marks."


# --------------------------------------------------------------------------- format


class JsonFormat(_Base):
    """The whole response is one JSON object or array (a fenced code block is allowed)."""

    kind: Literal["json_format"] = "json_format"

    def check(self, response: str) -> bool:
        text = response.strip()
        fenced = text_rules.JSON_FENCE_RE.match(text)
        if fenced:
            text = fenced.group(1).strip()
        try:
            value: Any = json.loads(text)
        except ValueError:
            return False
        return isinstance(value, dict | list)

    def describe(self) -> str:
        return (
            "Format your entire response as a JSON object, with no text outside it "
            "(a ```json code block is fine)."
        )


class Title(_Base):
    """A title in double angle brackets, such as <<Hello>>."""

    kind: Literal["title"] = "title"

    def check(self, response: str) -> bool:
        return text_rules.TITLE_RE.search(response) is not None

    def describe(self) -> str:
        return "Give your answer a title wrapped in double angle brackets, such as <<my title>>."


class BulletCount(_Base):
    """Exactly ``n`` markdown bullet lines (starting with ``* `` or ``- ``)."""

    kind: Literal["bullet_count"] = "bullet_count"
    n: _Count = Field(gt=0, le=100)
    """The required number of bullet points."""

    def check(self, response: str) -> bool:
        return len(text_rules.BULLET_RE.findall(response)) == self.n

    def describe(self) -> str:
        return (
            f"Use exactly {_plural(self.n, 'bullet point')} in markdown, "
            'each on its own line starting with "* ".'
        )


class HighlightedSections(_Base):
    """At least ``n`` markdown highlights: ``*text*`` or ``**text**``."""

    kind: Literal["highlighted_sections"] = "highlighted_sections"
    n: _Count = Field(gt=0, le=100)
    """The smallest required number of highlighted sections."""

    def check(self, response: str) -> bool:
        return len(text_rules.HIGHLIGHT_RE.findall(response)) >= self.n

    def describe(self) -> str:
        return (
            f"Highlight at least {_plural(self.n, 'section')} with markdown, "
            "such as *highlighted section*."
        )


class Placeholders(_Base):
    """At least ``n`` placeholders in square brackets, such as [name]."""

    kind: Literal["placeholders"] = "placeholders"
    n: _Count = Field(gt=0, le=100)
    """The smallest required number of placeholders."""

    def check(self, response: str) -> bool:
        return len(text_rules.PLACEHOLDER_RE.findall(response)) >= self.n

    def describe(self) -> str:
        return (
            f"Include at least {_plural(self.n, 'placeholder')} in square brackets, "
            "such as [address]."
        )


class Postscript(_Base):
    """A line that starts with the marker (default ``P.S.``), any case, spaces inside allowed."""

    kind: Literal["postscript"] = "postscript"
    marker: _Text = "P.S."
    """What the postscript line starts with, such as "P.S." or "P.P.S"."""

    def check(self, response: str) -> bool:
        body = r"\s*".join(re.escape(ch) for ch in self.marker if not ch.isspace())
        pattern = re.compile(rf"^[ \t>*_]*{body}", re.IGNORECASE | re.MULTILINE)
        return pattern.search(response) is not None

    def describe(self) -> str:
        end = "" if self.marker.endswith(".") else "."
        return f"At the end of your response, add a postscript starting with {self.marker}{end}"


# --------------------------------------------------------------------------- start and end


class StartsWith(_Base):
    """The response starts with the phrase (any case, whitespace-insensitive)."""

    kind: Literal["starts_with"] = "starts_with"
    phrase: _Text
    """The phrase the response must start with."""

    def check(self, response: str) -> bool:
        text, phrase = text_rules.normalize(response), text_rules.normalize(self.phrase)
        # A phrase that ends in a word character must end a word: "Dear" does not start "Dearest".
        cut = text[len(phrase) : len(phrase) + 1]
        return text.startswith(phrase) and not (cut.isalnum() and phrase[-1].isalnum())

    def describe(self) -> str:
        end = "" if self.phrase[-1] in ".!?" else "."
        return f'Start your response with the exact phrase "{self.phrase}"{end}'


class EndsWith(_Base):
    """The response ends with the phrase and nothing after it (any case, whitespace-insensitive)."""

    kind: Literal["ends_with"] = "ends_with"
    phrase: _Text
    """The phrase the response must end with."""

    def check(self, response: str) -> bool:
        text, phrase = text_rules.normalize(response), text_rules.normalize(self.phrase)
        # A phrase starting with a word character must start a word: "end" does not end "weekend".
        cut = text[-len(phrase) - 1 : -len(phrase)]
        return text.endswith(phrase) and not (cut.isalnum() and phrase[0].isalnum())

    def describe(self) -> str:
        return (
            f'End your response with the exact phrase "{self.phrase}" and write nothing after it.'
        )


# --------------------------------------------------------------------------- the registry

CONSTRAINT_KINDS: dict[str, type[_Base]] = by_kind(
    MaxWords,
    MinWords,
    MaxSentences,
    MinSentences,
    Paragraphs,
    IncludeKeywords,
    ForbiddenWords,
    KeywordFrequency,
    LetterFrequency,
    CapitalWordFrequency,
    AllLowercase,
    AllUppercase,
    NoCommas,
    Quotation,
    JsonFormat,
    Title,
    BulletCount,
    HighlightedSections,
    Placeholders,
    Postscript,
    StartsWith,
    EndsWith,
)
"""Every constraint by kind: the one list a new constraint class is added to."""

Constraint = tagged_union(CONSTRAINT_KINDS.values())
"""Any constraint; pydantic picks the class from the ``kind`` field."""


def _format_error(index: int, error: Mapping[str, Any]) -> str:
    path = f"constraints[{index}]"
    for part in error["loc"]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    message = f"{path}: {error['msg']}"
    if error["type"] not in {"missing", "extra_forbidden"} and error["loc"]:
        message += f" (got {error['input']!r})"
    return message


def parse_constraints(specs: Sequence[Mapping[str, Any]]) -> list[Constraint]:
    """Validate constraint dicts such as ``{"kind": "max_words", "n": 50}`` into models.

    Raises ValueError with a one-line message naming the index and field of the first
    bad entry, e.g. ``constraints[1].n: Input should be greater than 0 (got -3)``.
    """
    if isinstance(specs, str | bytes) or not isinstance(specs, Sequence):
        raise ValueError(f"constraints: expected a list of objects, got {type(specs).__name__}")
    parsed: list[Constraint] = []
    for index, spec in enumerate(specs):
        if not isinstance(spec, Mapping):
            raise ValueError(
                f"constraints[{index}]: expected an object with a 'kind' field, "
                f"got {type(spec).__name__}"
            )
        if "kind" not in spec:
            raise ValueError(f"constraints[{index}].kind: Field required")
        kind = spec["kind"]
        cls = CONSTRAINT_KINDS.get(kind) if isinstance(kind, str) else None
        if cls is None:
            known = ", ".join(sorted(CONSTRAINT_KINDS))
            raise ValueError(
                f"constraints[{index}].kind: unknown constraint kind {kind!r}; known: {known}"
            )
        try:
            parsed.append(cls.model_validate(dict(spec)))
        except ValidationError as exc:
            details = "; ".join(_format_error(index, err) for err in exc.errors())
            raise ValueError(details) from None
    return parsed


def fraction_met(constraints: Sequence[Constraint], response: str) -> float:
    """The share of ``constraints`` that ``response`` meets; 1.0 when there are none."""
    if not constraints:
        return 1.0
    return sum(1 for c in constraints if c.check(response)) / len(constraints)


def instructions(constraints: Sequence[Constraint]) -> str:
    """The constraints as instruction sentences, joined with spaces (for a prompt)."""
    return " ".join(c.describe() for c in constraints)
