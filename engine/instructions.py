"""Generated instruction-following prompts: a task on a topic, with 1 to 3 verifiable
constraints of the 22 kinds (engine.rewards.constraints), made from a seed.

A prompt is a task ("Write a short story about a lighthouse keeper.") followed by one
sentence per constraint, and carries its constraints, so the `verifiable` reward scores
it as it scores the shipped tasks. Two splits share nothing a model could learn a
shortcut from:
- `in_distribution`: the shipped tasks' own constraint wordings (each kind's
  `describe()`), the task frames and topics of TRAIN_FRAMES and TRAIN_TOPICS, and only the
  pairs of constraint kinds that `in_distribution_pair` allows;
- `out_of_distribution`: other wordings of every kind (OOD_WORDINGS), other task frames
  and topics, and only the pairs of kinds the in-distribution split never combines.
So an adapted model's gain on the first is the training distribution's, and on the second
it must carry over to new wordings, topics and combinations.

`difficulty` sets how many constraints a prompt has (easy: 1, medium: 1-2, hard: 2-3) and
how tight their numbers are. The same settings and seed give the same prompts on any
machine (`random.Random(seed)`, one prompt after another); ids are
`<split>-<seed>-<index>`, so the two splits never share one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from multisample.engine.config import InstructionTasks
from multisample.engine.rewards.constraints import parse_constraints
from multisample.engine.types import Prompt

TRAIN_FRAMES = (
    "Write a short story about {topic}.",
    "Explain {topic} to a ten-year-old.",
    "Write a product description for {topic}.",
    "Write a short email to a friend about {topic}.",
    "Give some advice about {topic}.",
    "Describe {topic} in a few lines.",
)
OOD_FRAMES = (
    "Draft a speech for a town meeting on {topic}.",
    "Compose a diary entry written on a day spent with {topic}.",
    "Summarize the main arguments for and against {topic}.",
    "Write a job advertisement that mentions {topic}.",
)
TRAIN_TOPICS = (
    "a lost umbrella", "a lighthouse keeper", "the water cycle", "a reusable water bottle",
    "learning to cook", "a rainy weekend", "honeybees", "a new bicycle", "the night sky",
    "saving money", "a school garden", "a friendly robot", "moving to a new city",
    "a mountain hike", "recycling at home", "a museum visit", "a birthday surprise",
    "the first day of school", "a broken clock", "winter mornings", "a local bakery",
    "healthy breakfasts", "a train journey", "a library card", "the ocean tides",
    "volcanoes", "a backyard camping trip", "solar panels", "a stray cat", "board games",
)  # fmt: skip
OOD_TOPICS = (
    "public transport fares", "an old pocket watch", "electric scooters", "a desert oasis",
    "a community orchestra", "remote work", "a hot air balloon", "bird migration",
    "a vintage typewriter", "urban beekeeping", "glaciers", "a chess tournament",
    "a night market", "wind turbines", "a village festival", "paper airplanes",
)  # fmt: skip

KEYWORDS = ("window", "river", "lantern", "garden", "silver", "morning", "bridge", "orange")
"""Words for keyword constraints: common, so a response can use or avoid them."""
PHRASES = ("Here is", "In short", "Thank you", "To begin", "All in all", "That is all")
LETTERS = "aeinorst"


def _n(rng: random.Random, easy: tuple[int, int], hard: tuple[int, int], hard_mode: bool) -> int:
    return rng.randint(*(hard if hard_mode else easy))


SAMPLERS: dict[str, Callable[[random.Random, bool], dict[str, Any]]] = {
    "max_words": lambda r, h: {"n": _n(r, (80, 150), (30, 60), h)},
    "min_words": lambda r, h: {"n": _n(r, (40, 80), (120, 200), h)},
    "max_sentences": lambda r, h: {"n": _n(r, (4, 6), (2, 3), h)},
    "min_sentences": lambda r, h: {"n": _n(r, (2, 4), (6, 9), h)},
    "paragraphs": lambda r, h: {"n": _n(r, (2, 2), (3, 4), h)},
    "include_keywords": lambda r, h: {"keywords": r.sample(KEYWORDS, 3 if h else 2)},
    "forbidden_words": lambda r, h: {"words": r.sample(KEYWORDS, 2)},
    "keyword_frequency": lambda r, h: {
        "keyword": r.choice(KEYWORDS),
        "n": _n(r, (2, 2), (3, 4), h),
        "relation": "at_least",
    },
    "letter_frequency": lambda r, h: {
        "letter": r.choice(LETTERS),
        "n": _n(r, (5, 10), (15, 25), h),
        "relation": "at_least",
    },
    "capital_word_frequency": lambda r, h: {"n": _n(r, (1, 2), (3, 5), h), "relation": "at_least"},
    "all_lowercase": lambda r, h: {},
    "all_uppercase": lambda r, h: {},
    "no_commas": lambda r, h: {},
    "quotation": lambda r, h: {},
    "json_format": lambda r, h: {},
    "title": lambda r, h: {},
    "bullet_count": lambda r, h: {"n": _n(r, (2, 3), (4, 6), h)},
    "highlighted_sections": lambda r, h: {"n": _n(r, (1, 2), (3, 4), h)},
    "placeholders": lambda r, h: {"n": _n(r, (1, 2), (3, 4), h)},
    "postscript": lambda r, h: {"marker": "P.S."},
    "starts_with": lambda r, h: {"phrase": r.choice(PHRASES)},
    "ends_with": lambda r, h: {"phrase": r.choice(PHRASES)},
}
"""Each kind's parameters, drawn (loose, or tight with `hard`)."""

KINDS = tuple(SAMPLERS)

CLASHES = {
    frozenset(p)
    for p in [
        ("all_lowercase", "all_uppercase"), ("all_lowercase", "capital_word_frequency"),
        ("all_uppercase", "capital_word_frequency"), ("max_words", "min_words"),
        ("max_sentences", "min_sentences"), ("starts_with", "quotation"),
        ("ends_with", "quotation"), ("ends_with", "postscript"),
        ("include_keywords", "forbidden_words"), ("keyword_frequency", "forbidden_words"),
        ("starts_with", "title"),
    ]
} | {frozenset(("json_format", k)) for k in KINDS if k != "json_format"}  # fmt: skip
"""Pairs no response could meet both of (or that JSON leaves no room for)."""


def in_distribution_pair(first: str, second: str) -> bool:
    """Whether the in-distribution split may combine two kinds: the pairs whose positions
    in KINDS do not sum to a multiple of 3; the out-of-distribution split takes the others.
    (Each split then still has triples whose every pair is its own, for 3 constraints.)"""
    return (KINDS.index(first) + KINDS.index(second)) % 3 != 0


def _quoted(words: Any) -> str:
    return " and ".join(f"'{w}'" for w in words)


OOD_WORDINGS: dict[str, Callable[[dict[str, Any]], str]] = {
    "max_words": lambda p: f"Keep it under {p['n'] + 1} words in total.",
    "min_words": lambda p: f"Your reply needs {p['n']} words or more.",
    "max_sentences": lambda p: f"No more than {p['n']} sentences, please.",
    "min_sentences": lambda p: f"Write {p['n']} sentences or more.",
    "paragraphs": lambda p: (
        f"Split the text into {p['n']} paragraphs with an empty line between them."
    ),
    "include_keywords": lambda p: f"Make sure the words {_quoted(p['keywords'])} appear.",
    "forbidden_words": lambda p: f"Avoid the words {_quoted(p['words'])} entirely.",
    "keyword_frequency": lambda p: (
        f"The word '{p['keyword']}' must show up {p['n']} times or more."
    ),
    "letter_frequency": lambda p: (
        f"The letter '{p['letter']}' has to occur {p['n']} times or more."
    ),
    "capital_word_frequency": lambda p: f"Put {p['n']} or more whole words in CAPITALS.",
    "all_lowercase": lambda p: "Every letter of the reply must be small: no capitals anywhere.",
    "all_uppercase": lambda p: "Every letter of the reply must be a capital.",
    "no_commas": lambda p: "The reply must not contain a single comma.",
    "quotation": lambda p: "Put the whole reply between double quotes.",
    "json_format": lambda p: "Reply only with valid JSON and nothing else.",
    "title": lambda p: "Begin with a title in double angle brackets, like <<A Title>>.",
    "bullet_count": lambda p: (
        f"Give exactly {p['n']} markdown bullets, each line starting with '* '."
    ),
    "highlighted_sections": lambda p: (
        f"Mark {p['n']} or more passages as *highlighted* with asterisks."
    ),
    "placeholders": lambda p: (
        f"Leave {p['n']} or more fill-in blanks in square brackets, e.g. [name]."
    ),
    "postscript": lambda p: "Close with an afterthought that starts with P.S.",
    "starts_with": lambda p: f'Your very first words must be "{p["phrase"]}".',
    "ends_with": lambda p: f'Your very last words must be "{p["phrase"]}".',
}
"""Another way to say each kind's constraint than its `describe()` (the shipped tasks'
wording, which the in-distribution split uses)."""


def generate(tasks: InstructionTasks) -> list[Prompt]:
    """The prompts `tasks` describes, in a fixed order."""
    rng = random.Random(f"{tasks.split}/{tasks.seed}")
    ood = tasks.split == "out_of_distribution"
    frames, topics = (OOD_FRAMES, OOD_TOPICS) if ood else (TRAIN_FRAMES, TRAIN_TOPICS)
    return [
        _prompt(rng, tasks, f"{tasks.split}-{tasks.seed}-{index}", frames, topics, ood)
        for index in range(tasks.count)
    ]


def _prompt(
    rng: random.Random,
    tasks: InstructionTasks,
    id: str,
    frames: tuple[str, ...],
    topics: tuple[str, ...],
    ood: bool,
) -> Prompt:
    low, high = {"easy": (1, 1), "medium": (1, 2), "hard": (2, 3)}[tasks.difficulty]
    count = rng.randint(low, high)
    kinds = _kinds(rng, count, ood)
    hard = tasks.difficulty == "hard"
    documents = [{"kind": kind, **SAMPLERS[kind](rng, hard)} for kind in kinds]
    constraints = parse_constraints(documents)  # they must parse, as a prompts file's do
    sentences = [
        OOD_WORDINGS[c.kind](d) if ood else c.describe()
        for c, d in zip(constraints, documents, strict=True)
    ]
    task = rng.choice(frames).format(topic=rng.choice(topics))
    return Prompt(
        id=id,
        prompt=" ".join([task, *sentences]),
        constraints=tuple(c.model_dump() for c in constraints),
        metadata={"split": tasks.split, "difficulty": tasks.difficulty},
    )


def _kinds(rng: random.Random, count: int, ood: bool) -> list[str]:
    """`count` kinds, pairwise compatible, every pair in the split's combinations."""
    while True:
        kinds = rng.sample(KINDS, count)
        pairs = [(a, b) for i, a in enumerate(kinds) for b in kinds[i + 1 :]]
        if all(
            frozenset(pair) not in CLASHES and in_distribution_pair(*pair) != ood for pair in pairs
        ):
            return kinds
