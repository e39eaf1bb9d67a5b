"""Final answers: reading one from a response, and telling whether two are the same.

Extraction tries each extractor in order and takes the first that finds something:
- `boxed`: the content of the last `\\boxed{...}` (or `\\fbox{...}`), braces balanced;
- `answer_is`: the text after the last "the answer is" / "answer:" / "####", up to the
  end of its line, less a trailing period;
- `last_number`: the last number in the text (an integer, a decimal, a fraction `a/b`,
  with or without thousands separators and a sign).
A task set may choose its extractors (`Prompt.extract`); the default is all three in this
order. A response with none of them has no answer (None), which counts as wrong and is
recorded as such.

Two answers are the same when their canonical forms are equal (numbers compared exactly
as fractions: `1,000` = `1000` = `1000.0`, `0.5` = `1/2` = `\\frac{1}{2}`; other text
without spaces, `$` and case), or, where the `math-verify` package is installed, when it
finds them equal (LaTeX expressions, sets, intervals).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from fractions import Fraction
from typing import Any, Literal

Extractor = Literal["boxed", "answer_is", "last_number"]
EXTRACTORS: tuple[Extractor, ...] = ("boxed", "answer_is", "last_number")
"""The default extractors, in the order they are tried."""

_NUMBER = r"[-−+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-−+]?\.\d+"
_NUMBER_RE = re.compile(rf"(?<![\w.]){_NUMBER}(?![\w])")
_ANSWER_IS_RE = re.compile(
    r"(?:the\s+)?(?:final\s+)?answer\s*(?:is\s*:?|:)\s*|####\s*", re.IGNORECASE
)
_FRAC_RE = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_WRAPPERS = re.compile(r"^\\text\{(.*)\}$|^\\mathrm\{(.*)\}$")


def _last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (or \\fbox{...}), its braces balanced."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    opened = text.index("{", start)
    depth = 0
    for index in range(opened, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0)
        if depth == 0:
            return text[opened + 1 : index].strip() or None
    return None  # never closed


def _after_answer_is(text: str) -> str | None:
    matches = list(_ANSWER_IS_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end() :].split("\n", 1)[0].strip()
    rest = rest.rstrip(".").strip().strip("*").strip()  # "**42**." as models write it
    return rest or None


def _last_number(text: str) -> str | None:
    found = _NUMBER_RE.findall(text)
    return found[-1].strip() if found else None


_READERS = {"boxed": _last_boxed, "answer_is": _after_answer_is, "last_number": _last_number}


def extract_answer(text: str, extractors: Sequence[Extractor] = EXTRACTORS) -> str | None:
    """The response's final answer by the first extractor that finds one, else None."""
    for name in extractors:
        found = _READERS[name](text)
        if found is not None:
            return found
    return None


def as_number(answer: str) -> Fraction | None:
    """`answer` as an exact number, if it is one: integers, decimals, fractions (a/b or
    \\frac{a}{b}), thousands separators, a sign, a trailing % (a percentage), in $...$."""
    text = answer.strip().strip("$").strip().replace("−", "-").replace(" ", "")
    text = text.removeprefix("\\(").removesuffix("\\)")
    percent = text.endswith("%") or text.endswith("\\%")
    text = text.removesuffix("\\%").removesuffix("%")
    fraction = _FRAC_RE.match(text)
    if fraction is not None:
        text = f"{fraction.group(1)}/{fraction.group(2)}"
    if re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+(\.\d+)?", text):
        text = text.replace(",", "")
    try:
        if "/" in text:
            numerator, denominator = text.split("/")
            value = Fraction(Fraction(numerator), Fraction(denominator))
        else:
            value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value / 100 if percent else value


def canonical(answer: str) -> str:
    """The form answers are compared and voted by: an exact number as a fraction's
    string ('1/2', '1000'), other text unwrapped, without spaces or $, lowercased."""
    number = as_number(answer)
    if number is not None:
        return str(number)
    text = answer.strip().strip("$").strip()
    wrapped = _WRAPPERS.match(text)
    if wrapped is not None:
        text = next(group for group in wrapped.groups() if group is not None)
    return re.sub(r"\s+", "", text).rstrip(".").lower()


def equivalent(answer: str, reference: str) -> bool:
    """Whether `answer` is the same as `reference`: equal canonical forms, or (where
    math-verify is installed) equal to it as math."""
    if canonical(answer) == canonical(reference):
        return True
    verify = _math_verify()
    if verify is None:
        return False
    parse, check = verify
    try:
        gold, given = parse(f"${reference}$"), parse(f"${answer}$")
        return bool(gold and given and check(gold, given))
    except Exception:  # math-verify raises on what it cannot read: not the same
        return False


def readable_reference(reference: str) -> bool:
    """Whether a reference answer can be compared with anything: a number, or (where
    math-verify is installed) an expression it reads, or plain text."""
    if not reference.strip():
        return False
    if as_number(reference) is not None:
        return True
    verify = _math_verify()
    if verify is None:
        return bool(canonical(reference))
    try:
        return bool(verify[0](f"${reference}$"))
    except Exception:
        return False


def _math_verify() -> tuple[Callable[..., Any], Callable[..., Any]] | None:
    """math-verify's parse and verify, or None where it is not installed."""
    try:
        from math_verify import parse, verify
    except ImportError:
        return None
    return parse, verify
