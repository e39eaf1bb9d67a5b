"""TOA's pure rules that test_toa.py leaves unpinned; each test killed surviving mutants
of `make mutation` (docs/TESTING.md)."""

from __future__ import annotations

import pytest

from multisample.engine.rewards.normalization import ZScore
from multisample.search.base import ROOT, Candidate
from multisample.search.toa import TOASettings, _Node, _Tree, is_fully_expanded


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


def test_selection_ranks_children_by_the_prompts_z_scores_so_far() -> None:
    # Rewards 0.002 (three under a, one a refinement of another) and 0.001 (b): raw means
    # differ by 0.001, less than b's larger exploration bonus, but as z-scores a's mean is
    # +0.58 and b's -1.73, so with alpha = 1 selection goes down a (1.41 against -0.55).
    tree = _Tree("q", ["a", "b"], width=2, alpha=1.0, topk_child=1, normalization=ZScore())
    root = tree.root
    a, b = root.children

    def play(path: list, i: int, reward: float) -> _Node:
        tree.begin(path)
        return tree.finish(path, response(i, reward), reward)

    r0 = play([root, a], 0, 0.002)
    play([root, b], 1, 0.001)
    tree.select(2)  # gives r0 its refine children
    refine = r0.children[0]
    play([root, a, r0, refine], 2, 0.002)
    play([root, a, r0, refine], 3, 0.002)
    assert (a.visits, b.visits) == (4, 2)  # a node's first visit is its creation
    assert tree.select(4)[1] is a
