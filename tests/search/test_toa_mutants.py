"""TOA's pure rules that test_toa.py leaves unpinned; each test killed surviving mutants
of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import pytest

from search.base import ROOT, Candidate
from search.toa import TOASettings, _Tree, is_fully_expanded


def response(i: int, reward: float) -> Candidate:
    return Candidate(i, "a", "generate", (), 1, f"text {i}", reward, 0, 0, "stop", 0, 0.0, i)


def test_is_fully_expanded_defaults_to_no_responses_and_width_0() -> None:
    # Omitted counts are 0: width 1 is not reached without responses on the next layer;
    # with width omitted too, the root's child with a response is fully expanded.
    assert not is_fully_expanded("model", width=1, child_rewards=[0.5])
    assert is_fully_expanded("model", child_rewards=[0.5])


def test_top_k_keeps_a_response_whose_normalized_reward_is_0_last() -> None:
    # r~ = 0.0 (a sigmoid saturated by a very low reward) ranks below r~ = 0.3: with
    # topk_child 1, selection descends into response 1 and expands its first refine node.
    tree = _Tree("q", ["a"], width=1, alpha=0.01, topk_child=1)
    model = tree.root.children[0]
    tree.finish([tree.root, model], response(0, -100.0), 0.0)
    tree.finish([tree.root, model], response(1, 0.2), 0.3)
    assert [node.id for node in tree.select(3)] == [ROOT, model.id, 1, "m:1/refine/a"]


def test_a_width_below_k_names_the_rule_and_its_source() -> None:
    message = (
        r"^toa width 2 is below the number of models \(3\); "
        r"TOA needs width >= K \(as the authors' code asserts\)$"
    )
    with pytest.raises(ValueError, match=message):
        TOASettings(width=2).check_pool(["a", "b", "c"])


def test_sequential_rounds_are_the_plays_over_the_plays_in_flight() -> None:
    assert TOASettings(plays_in_flight=4).sequential_rounds(16, ["a", "b"]) == 4
    assert TOASettings().sequential_rounds(16, ["a", "b"]) == 16
