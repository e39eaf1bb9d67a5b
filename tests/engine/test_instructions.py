"""Generated instruction-following prompts: reproducible, their constraints the verifiable
reward's, and the out-of-distribution split sharing no wording, topic, task frame or pair
of constraint kinds with the in-distribution one."""

from __future__ import annotations

from collections import Counter
from itertools import combinations

import pytest

from multisample.engine.config import InstructionTasks
from multisample.engine.instructions import (
    CLASHES,
    OOD_FRAMES,
    OOD_TOPICS,
    OOD_WORDINGS,
    SAMPLERS,
    TRAIN_FRAMES,
    TRAIN_TOPICS,
    generate,
    in_distribution_pair,
)
from multisample.engine.prompts import load_prompts
from multisample.engine.rewards.constraints import CONSTRAINT_KINDS, parse_constraints
from multisample.engine.types import Prompt


def tasks(**settings: object) -> InstructionTasks:
    return InstructionTasks.model_validate({"generate": "instructions", "count": 300, **settings})


def kinds(prompt: Prompt) -> list[str]:
    return [c["kind"] for c in prompt.constraints]


def test_every_constraint_kind_has_a_sampler_and_a_second_wording() -> None:
    assert set(SAMPLERS) == set(OOD_WORDINGS) == set(CONSTRAINT_KINDS)


@pytest.mark.parametrize("split", ["in_distribution", "out_of_distribution"])
def test_the_same_settings_and_seed_give_the_same_prompts(split: str) -> None:
    assert generate(tasks(split=split)) == generate(tasks(split=split))
    assert generate(tasks(split=split, count=10)) == generate(tasks(split=split))[:10]
    assert generate(tasks(split=split, seed=1)) != generate(tasks(split=split))


@pytest.mark.parametrize("difficulty", ["easy", "medium", "hard"])
@pytest.mark.parametrize("split", ["in_distribution", "out_of_distribution"])
def test_prompts_carry_compatible_constraints_of_their_splits_pairs(
    split: str, difficulty: str
) -> None:
    prompts = generate(tasks(split=split, difficulty=difficulty))
    sizes = Counter(len(p.constraints) for p in prompts)
    expected = {"easy": {1}, "medium": {1, 2}, "hard": {2, 3}}[difficulty]
    assert set(sizes) == expected
    for prompt in prompts:
        parse_constraints(list(prompt.constraints))  # the verifiable reward reads them
        for pair in combinations(kinds(prompt), 2):
            assert frozenset(pair) not in CLASHES
            assert in_distribution_pair(*pair) == (split == "in_distribution")
        assert prompt.metadata == {"split": split, "difficulty": difficulty}


def test_the_splits_share_no_wording_topic_frame_or_id() -> None:
    inside = generate(tasks(split="in_distribution", difficulty="easy"))
    outside = generate(tasks(split="out_of_distribution", difficulty="easy"))
    assert not {p.id for p in inside} & {p.id for p in outside}
    assert not set(TRAIN_TOPICS) & set(OOD_TOPICS)
    assert not set(TRAIN_FRAMES) & set(OOD_FRAMES)
    for prompt in inside:  # the shipped tasks' own wording of each constraint
        (constraint,) = parse_constraints(list(prompt.constraints))
        assert prompt.prompt.endswith(constraint.describe())
        assert any(t in prompt.prompt for t in TRAIN_TOPICS)
    for prompt in outside:
        (constraint,) = parse_constraints(list(prompt.constraints))
        assert constraint.describe() not in prompt.prompt
        assert prompt.prompt.endswith(OOD_WORDINGS[constraint.kind](prompt.constraints[0]))
        assert any(t in prompt.prompt for t in OOD_TOPICS)


def test_both_splits_cover_every_kind() -> None:
    for split in ("in_distribution", "out_of_distribution"):
        seen = {k for p in generate(tasks(split=split, count=600)) for k in kinds(p)}
        assert seen == set(CONSTRAINT_KINDS)


def test_hard_prompts_ask_for_tighter_numbers() -> None:
    def bound(difficulty: str, kind: str) -> float:
        found = [
            c["n"]
            for p in generate(tasks(difficulty=difficulty, count=600))
            for c in p.constraints
            if c["kind"] == kind
        ]
        return sum(found) / len(found)

    assert bound("hard", "max_words") < bound("easy", "max_words")
    assert bound("hard", "min_words") > bound("easy", "min_words")


def test_generated_instructions_are_a_prompts_source() -> None:
    prompts = load_prompts(tasks(count=5), limit=3)
    assert [p.id for p in prompts.prompts] == [f"in_distribution-0-{i}" for i in range(3)]
    assert prompts.where("in_distribution-0-2").endswith(" row 3")
