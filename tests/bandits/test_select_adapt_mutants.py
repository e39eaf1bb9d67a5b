"""bandits/select/adapt.py rules test_select_adapt.py leaves unpinned; each test killed
surviving mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from multisample.bandits.adaptation import sft_file
from multisample.bandits.select.adapt import duel_examples, own_examples
from multisample.bandits.select.config import CandidateSpec
from multisample.bandits.select.state import ANSWERS
from multisample.engine.training import Example
from multisample.engine.types import Message


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def answer(
    round_: int, name: str | tuple[str, str], score: float | None, text: str
) -> dict[str, Any]:
    """A single-model round's answer of `name` (or a duel's, when `name` is a pair)."""
    first, second = (name, name) if isinstance(name, str) else name
    return {
        "round": round_,
        "prompt": f"q{round_}",
        "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "first": first,
        "second": second,
        "first_answer": text,
        "first_score": score,
    }


def test_own_examples_are_the_candidates_accepted_answers_under_its_system_turn(
    tmp_path: Path,
) -> None:
    write_rows(
        tmp_path / ANSWERS,
        [
            answer(1, "a", 1.0, "kept"),
            answer(2, "a", 0.5, "below the threshold"),
            answer(3, "a", None, "unscored"),
            answer(4, "b", 1.0, "another candidate's"),
            answer(5, ("a", "b"), 1.0, "a duel's"),
            answer(6, "a", 1.0, "after the rounds asked for"),
        ],
    )
    brief = CandidateSpec(name="a", model="m", system_prompt="Be brief.")
    turns = (
        Message("system", "Be brief."),
        Message("user", "hi"),
        Message("assistant", "yo"),
        Message("user", "q1"),
    )
    assert own_examples(tmp_path, brief, 0, 5, accept=1.0) == [Example(turns, "kept")]
    plain = CandidateSpec(name="a", model="m")
    taught = own_examples(tmp_path, plain, 0, 5, accept=None)
    assert [e.chosen for e in taught] == ["kept", "below the threshold", "unscored"]
    assert taught[0].prompt == turns[1:]


def test_sft_duel_examples_teach_the_last_turn_after_the_others(tmp_path: Path) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Say hi."},
        {"role": "assistant", "content": "hi"},
    ]
    write_rows(tmp_path / sft_file("a"), [{"round": 2, "messages": messages}])
    assert duel_examples(tmp_path, "a", "sft", 1, 2) == [
        Example((Message("system", "Be brief."), Message("user", "Say hi.")), "hi")
    ]
    assert duel_examples(tmp_path, "a", "sft", 2, 3) == []  # round 2 is not after 2
