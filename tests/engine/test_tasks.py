"""The shipped instruction-following task set, engine/data/tasks.jsonl."""

from __future__ import annotations

import json
from collections import Counter
from importlib.resources import files
from typing import Any

import pytest

from multisample.engine.rewards.constraints import CONSTRAINT_KINDS, parse_constraints
from multisample.engine.types import Prompt


@pytest.fixture(scope="module")
def tasks() -> list[dict[str, Any]]:
    text = (files("multisample.engine") / "data" / "tasks.jsonl").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert all(line.strip() for line in lines), "blank line in tasks.jsonl"
    return [json.loads(line) for line in lines]


def test_size(tasks: list[dict[str, Any]]) -> None:
    assert len(tasks) >= 100


def test_keys_and_unique_ids(tasks: list[dict[str, Any]]) -> None:
    for task in tasks:
        assert set(task) == {"id", "prompt", "constraints"}, task.get("id")
    ids = [task["id"] for task in tasks]
    assert len(set(ids)) == len(ids)
    prompts = [task["prompt"] for task in tasks]
    assert len(set(prompts)) == len(prompts)


def test_every_line_is_a_prompt(tasks: list[dict[str, Any]]) -> None:
    for task in tasks:
        record = Prompt.model_validate(task)
        assert record.id == task["id"]
        assert len(record.constraints) == len(task["constraints"])


def test_constraints_parse_and_count(tasks: list[dict[str, Any]]) -> None:
    for task in tasks:
        parsed = parse_constraints(task["constraints"])
        assert 1 <= len(parsed) <= 3, task["id"]
        kinds = [c.kind for c in parsed]
        assert len(set(kinds)) == len(kinds), task["id"]


def test_every_kind_used_at_least_three_times(tasks: list[dict[str, Any]]) -> None:
    counts = Counter(spec["kind"] for task in tasks for spec in task["constraints"])
    rare = {kind: counts[kind] for kind in CONSTRAINT_KINDS if counts[kind] < 3}
    assert not rare, rare


def test_prompts_state_their_constraints(tasks: list[dict[str, Any]]) -> None:
    for task in tasks:
        prompt = task["prompt"]
        assert len(prompt.split()) <= 80, task["id"]
        for constraint in parse_constraints(task["constraints"]):
            assert constraint.describe() in prompt, (task["id"], constraint.kind)
