"""bandits/select/state.py rules test_select.py leaves unpinned; each test killed
surviving mutants of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from multisample.bandits.adaptation import dpo_file, sft_file
from multisample.bandits.select.arbiters import Verdict
from multisample.bandits.select.state import (
    ADAPTERS,
    ANSWERS,
    ROUNDS,
    STATE,
    AdapterVersion,
    Round,
    SelectRun,
    SelectState,
    _version_number,
    merged_folder,
    round_records,
)
from multisample.engine.storage import RunDirectoryError, read_jsonl
from multisample.engine.types import Message, Prompt
from tests.bandits.test_select import config, fresh_state

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
    assert "history" not in tied[ANSWERS][0]  # a query without history records none
    with pytest.raises(ValueError):  # a version for each of the pair, no fewer
        round_records(played, ("a", "b"), (None, None), "a", None, (2,))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "number"),
    [("v1", 1), ("v12", 12), ("v", None), ("V3", None), ("x3", None), ("vv3", None)],
)
def test_only_folders_named_v_and_a_number_are_versions(name: str, number: int | None) -> None:
    assert _version_number(name) == number


def test_a_state_without_adapters_is_a_run_that_does_not_adapt(tmp_path: Path) -> None:
    document = fresh_state(["a", "b"]).document()
    del document["adapters"]
    (tmp_path / STATE).write_text(json.dumps(document))
    assert SelectState.parse(tmp_path / STATE, ["a", "b"], "co_ucb").adapters == {}


def test_a_run_killed_before_its_first_commit_resumes_from_nothing(tmp_path: Path) -> None:
    run = SelectRun.open(tmp_path / "run", config(), resume=False)
    run.append(ROUNDS, [{"round": 1}])  # round 1 reached the file; no state.json yet
    SelectRun.open(tmp_path / "run", config(), resume=True)
    assert list(read_jsonl(tmp_path / "run" / ROUNDS)) == []


def test_resume_deletes_versions_not_committed_and_keeps_the_rest(tmp_path: Path) -> None:
    run = SelectRun.open(tmp_path / "run", config(), resume=False)
    state = fresh_state(["a", "b"])
    state.adapters = {"a": AdapterVersion(1, 2)}
    run.commit_state(state)
    folders = ["a/v1", "a/v2", "a/v2.partial", "a/merged", "a/merged.partial", "b/v1"]
    for folder in folders:
        (tmp_path / "run" / ADAPTERS / folder).mkdir(parents=True)
    SelectRun.open(tmp_path / "run", config(), resume=True)
    # a's committed v1 and its merged weights stay; b has committed nothing.
    kept = sorted(
        str(p.relative_to(tmp_path / "run" / ADAPTERS))
        for p in (tmp_path / "run" / ADAPTERS).glob("*/*")
    )
    assert kept == ["a/merged", "a/v1"]
    assert merged_folder(tmp_path / "run", "a") == tmp_path / "run" / ADAPTERS / "a" / "merged"


def test_a_record_without_a_round_is_named_by_its_line(tmp_path: Path) -> None:
    run = SelectRun.open(tmp_path / "run", config(), resume=False)
    run.append(ROUNDS, [{"round": 0}, {"round": "one"}])
    with pytest.raises(RunDirectoryError, match=r"rounds.jsonl:2: round: not a round number"):
        SelectRun.open(tmp_path / "run", config(), resume=True)
