"""bandits/select/state.py rules test_select.py leaves unpinned; each test killed
surviving mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import numpy as np
import pytest

from multisample.bandits.adaptation import dpo_file, sft_file
from multisample.bandits.select.arbiters import Verdict
from multisample.bandits.select.state import ANSWERS, ROUNDS, Round, _version_number, round_records
from multisample.engine.types import Message, Prompt
from tests.bandits.test_select import fresh_state

TRUTH = np.array([[0.5, 0.7, 0.9], [0.3, 0.5, 0.6], [0.1, 0.4, 0.5]])
"""Candidate 0 beats 1 with probability 0.7 and 2 with 0.9: the true best."""


def verdicts(count: int, preferred: int | None = 0) -> list[Verdict]:
    return [
        Verdict(Prompt(id=f"q{i}", prompt="p"), ("x", "y"), (0.25, 0.75), preferred)
        for i in range(count)
    ]


def test_regret_adds_up_per_query_answered_against_the_true_best() -> None:
    state = fresh_state(["a", "b", "c"])
    state.add_regret(TRUTH, 0, Round(1, 1, 2, verdicts(3)))
    # Strong: 3 x (0.2 + 0.4) / 2; weak: 3 x min(0.2, 0.4).
    assert state.regret == pytest.approx({"strong": 0.9, "weak": 0.6})
    state.add_regret(TRUTH, 0, Round(2, 0, 2, verdicts(2)))
    # Strong: + 2 x (0 + 0.4) / 2; weak: + 2 x min(0, 0.4).
    assert state.regret == pytest.approx({"strong": 1.3, "weak": 0.6})


def test_a_rounds_records_name_every_field() -> None:
    query = Prompt(id="q0", prompt="p", history=(Message("user", "hi"), Message("assistant", "yo")))
    played = Round(4, 0, 1, [Verdict(query, ("x", "y"), (0.25, 0.75), 1)])
    regret = {"strong": 1.5, "weak": 0.5}
    records = round_records(played, ("a", "b"), (None, "Be brief."), "a", regret, (2, 0))
    assert records[ROUNDS] == [
        {
            "round": 4,
            "first": "a",
            "second": "b",
            "queries": ["q0"],
            "first_wins": 0,
            "second_wins": 1,
            "ties": 0,
            "best": "a",
            "versions": {"a": 2, "b": 0},
            "cumulative_regret": regret,
        }
    ]
    (answer,) = records[ANSWERS]
    assert answer == {
        "round": 4,
        "query_id": "q0",
        "prompt": "p",
        "history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
        "first": "a",
        "second": "b",
        "first_answer": "x",
        "second_answer": "y",
        "first_score": 0.25,
        "second_score": 0.75,
        "preferred": "b",
    }
    assert records[sft_file("a")][0]["query_id"] == records[dpo_file("b")][0]["query_id"] == "q0"
    # Without a truth there is no regret to report; a tie teaches nothing.
    tied = round_records(Round(5, 0, 1, verdicts(1, None)), ("a", "b"), (None, None), "a", None)
    assert "cumulative_regret" not in tied[ROUNDS][0] and set(tied) == {ROUNDS, ANSWERS}


@pytest.mark.parametrize(
    ("name", "number"),
    [("v1", 1), ("v12", 12), ("v", None), ("V3", None), ("x3", None), ("vv3", None)],
)
def test_only_folders_named_v_and_a_number_are_versions(name: str, number: int | None) -> None:
    assert _version_number(name) == number
