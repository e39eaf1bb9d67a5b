"""The text rules the verifiable constraints (engine.rewards.constraints) share, each
written once:

* Words: runs of word characters, joined by inner apostrophes or hyphens
  (``don't``, ``well-known`` are one word each); see :func:`words`.
* Sentences: text ends a sentence at a run of ``.``, ``!``, ``?`` or ``…`` (plus any
  closing quotes or brackets) followed by whitespace or the end of the text. Pieces
  without a word character are not sentences. Abbreviations such as "e.g." count as
  sentence ends; see :func:`sentences`.
* Paragraphs: blocks of text separated by one or more lines that are blank or hold
  only a markdown horizontal rule (``***``, ``---``, ``___``); see :func:`paragraphs`.
* Keywords match whole words, case-insensitively; a multi-word keyword matches with
  any whitespace between its words.
* Phrases (``starts_with``, ``ends_with``) compare case-insensitively, after stripping
  surrounding whitespace and collapsing runs of whitespace to one space.
* Cased letters: a letter with an upper and a lower case (not a digit, punctuation, or
  a letter of a script without case); see :func:`has_cased_letter`.
"""

from __future__ import annotations

import re

WORD_RE = re.compile(r"\w+(?:['’-]\w+)*")
"""A word: word characters, optionally joined by inner apostrophes or hyphens."""

SENTENCE_END_RE = re.compile(r"(?:[.!?…]+)[\"'”’)\]]*(?=\s|$)")
"""The end of a sentence: terminal punctuation, closing quotes/brackets, then space or end."""

RULE_LINE_RE = re.compile(r"^\s*([*_-])(?:\s*\1){2,}\s*$")
"""A markdown horizontal rule line: three or more of the same ``*``, ``-`` or ``_``."""

BULLET_RE = re.compile(r"^[ \t]*[*-][ \t]+\S", re.MULTILINE)
"""A markdown bullet: a line starting (after indentation) with ``* `` or ``- ``, then text."""

HIGHLIGHT_RE = re.compile(r"\*\*(\S(?:[^\n*]*\S)?)\*\*|\*(\S(?:[^\n*]*\S)?)\*")
"""A markdown highlight on one line: ``*text*`` or ``**text**``, no space inside the stars."""

PLACEHOLDER_RE = re.compile(r"\[([^\[\]\n]*\S[^\[\]\n]*)\]")
"""A placeholder: non-blank text in square brackets on one line, such as ``[name]``."""

TITLE_RE = re.compile(r"<<([^\n<>]*\S[^\n<>]*)>>")
"""A title: non-blank text in double angle brackets on one line, such as ``<<Hello>>``."""

JSON_FENCE_RE = re.compile(r"^```[ \t]*(?:json)?[ \t]*\n?(.*?)\n?[ \t]*```$", re.DOTALL | re.I)
"""A fenced code block around the whole text, with an optional ``json`` tag."""


def words(text: str) -> list[str]:
    """The words of ``text`` in order (see the module docstring for the rule)."""
    return WORD_RE.findall(text)


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` in order, stripped (see the module docstring for the rule)."""
    pieces: list[str] = []
    start = 0
    for match in SENTENCE_END_RE.finditer(text):
        pieces.append(text[start : match.end()])
        start = match.end()
    pieces.append(text[start:])
    return [p.strip() for p in pieces if WORD_RE.search(p)]


def paragraphs(text: str) -> list[str]:
    """The paragraphs of ``text`` in order: blocks between blank or horizontal-rule lines."""
    blocks: list[list[str]] = [[]]
    for line in text.splitlines():
        if not line.strip() or RULE_LINE_RE.match(line):
            if blocks[-1]:
                blocks.append([])
        else:
            blocks[-1].append(line)
    return ["\n".join(block).strip() for block in blocks if block]


def normalize(text: str) -> str:
    """Lowercase, with runs of whitespace collapsed to one space and the ends stripped."""
    return " ".join(text.split()).lower()


def phrase_re(phrase: str) -> re.Pattern[str]:
    """A case-insensitive whole-word pattern for a word or phrase."""
    body = r"\s+".join(re.escape(part) for part in phrase.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def count_phrase(text: str, phrase: str) -> int:
    return len(phrase_re(phrase).findall(text))


def has_cased_letter(text: str) -> bool:
    """Whether `text` holds a letter that has a case (not digits, punctuation, or the
    letters of scripts without case)."""
    return any(ch.lower() != ch.upper() for ch in text)
