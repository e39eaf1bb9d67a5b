"""search/toa.py: TOA's MCTS, checked exactly on the deterministic toy pool.

The toy reward of candidate i is derive_seed(run seed, prompt id, i) % 100 / 100, so every
reward, and from them every selection, is known in advance and worked out by hand here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import networkx as nx
import pytest
from pydantic import ValidationError

from multisample.engine.config import BudgetConfig
from multisample.engine.rewards.normalization import Affine, Scale, Sigmoid, ZScore
from multisample.engine.seeds import derive_seed
from multisample.engine.types import Generation, GenerationRequest, Prompt, SamplingSettings
from multisample.engine.ucb import ucb
from multisample.search.base import ROOT, Candidate, SearchContext, SearchResult
from multisample.search.toa import (
    TOASettings,
    _Node,
    _Tree,
    is_fully_expanded,
    run,
    tree_width,
)
from tests.search.toy import ToyPool, ToyReward

PROMPT = Prompt(id="q1", prompt="Say something.")
INF = math.inf

# Seed 3's first rewards (asserted below) and their normalization with tau = 0.1.
R3 = [0.6, 0.2, 0.94, 0.58, 0.64, 0.54]


def sig(reward: float, tau: float = 0.1) -> float:
    return 1 / (1 + math.exp(-reward / tau))


S = [sig(r) for r in R3]


def bonus(n: int, visits: int) -> float:
    """UCB's exploration term with the published alpha = 0.01."""
    return 0.01 * math.sqrt(2 * math.log(n) / visits)


def toy_rewards(seed: int, n: int) -> list[float]:
    return [derive_seed(seed, PROMPT.id, i) % 100 / 100 for i in range(n)]


class RecordingPool(ToyPool):
    """The toy pool, keeping every request's last message."""

    def __init__(self, names: Sequence[str] = ("a", "b")) -> None:
        super().__init__(names)
        self.messages: list[str] = []

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.messages.extend(r.messages[-1].content for r in requests)
        return await super().generate(model, requests)


class FailingPool(ToyPool):
    """The toy pool, failing on its third call."""

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        if len(self.calls) == 2:
            raise RuntimeError("backend down")
        return await super().generate(model, requests)


def context(
    budget: BudgetConfig,
    seed: int = 3,
    names: tuple[str, ...] = ("a", "b"),
    pool: ToyPool | None = None,
) -> SearchContext:
    return SearchContext(pool or ToyPool(names), ToyReward(), SamplingSettings(), budget, seed)  # type: ignore[arg-type]


async def toa(
    generations: int | None = 6, seed: int = 3, names: tuple[str, ...] = ("a", "b"), **settings
) -> SearchResult:
    budget = BudgetConfig(generations=generations, tokens=None if generations else 100)
    return await run(PROMPT, context(budget, seed, names), TOASettings(**settings))


def plays(result: SearchResult) -> list[tuple[str, str, tuple[int, ...], int]]:
    """(model, action, parents, depth) of each play, in play order."""
    assert [c.step for c in result.candidates] == list(range(len(result.candidates)))
    return [(c.model, c.action, c.parents, c.depth) for c in result.candidates]


def stats(result: SearchResult, node: str | int) -> tuple[int, float, int]:
    data = result.tree.nodes[node]
    return data["visits"], data["reward_sum"], data["n_rewards"]


def scores(tree: _Tree, node: str | int, n: int) -> dict[str | int, float]:
    return {c.id: c.ucb(n, tree.alpha) for c in tree.nodes[node].children}


def candidate(i: int, model: str, action: str = "generate", parents: tuple[int, ...] = ()):
    return Candidate(i, model, action, parents, 1, f"text {i}", R3[i], 0, 0, "stop", 0, 0.0, i)  # type: ignore[arg-type]


# --- Pure functions ------------------------------------------------------------------------


def test_ucb_is_the_mean_plus_the_exploration_term() -> None:
    assert ucb(0.5, 2, 3, scale=0.01) == pytest.approx(0.5 + 0.01 * math.sqrt(2 * math.log(3) / 2))
    assert ucb(0.5, 4, 10, scale=1.0) == pytest.approx(0.5 + math.sqrt(2 * math.log(10) / 4))
    assert ucb(0.7, 3, 5, scale=0.0) == 0.7


def test_ucb_without_rewards_is_infinite_and_n_is_at_least_one() -> None:
    node = _Node("m", "model", 1)  # no reward backed up through it yet
    assert node.ucb(1, 0.01) == INF and node.ucb(0, 0.01) == INF
    node.reward_sum, node.n_rewards = 0.3, 1
    # ln(1) = 0: no exploration term at the first play; n = 0 is read as 1, not ln(0).
    assert node.ucb(1, 0.01) == 0.3
    assert node.ucb(0, 0.01) == 0.3
    assert ucb(0.3, 1, 1, scale=0.01) == 0.3 and ucb(0.3, 1, 0, scale=0.01) == 0.3


def test_normalize_is_a_sigmoid_of_reward_over_tau() -> None:
    def normalize(reward: float, tau: float) -> float:
        return Sigmoid(tau=tau).pointwise(reward)

    assert normalize(0.0, 0.1) == 0.5
    assert normalize(0.2, 0.1) == pytest.approx(1 / (1 + math.exp(-2)))
    assert normalize(-0.2, 0.1) == pytest.approx(1 - normalize(0.2, 0.1))
    assert normalize(3.0, 1.5) == pytest.approx(1 / (1 + math.exp(-2)))
    # No overflow far out; the sigmoid saturates there.
    assert normalize(1e4, 0.1) == 1.0
    assert normalize(-1e4, 0.1) == 0.0


def test_root_and_response_nodes_are_always_fully_expanded() -> None:
    assert is_fully_expanded("prompt")
    assert is_fully_expanded("response")


def test_a_model_node_is_fully_expanded_once_width_is_reached_and_a_child_beats_its_parent() -> (
    None
):
    # Under the root: the width alone decides.
    assert is_fully_expanded("model", next_layer_responses=3, width=3, child_rewards=[0.1])
    assert not is_fully_expanded("model", next_layer_responses=2, width=3, child_rewards=[0.9])
    # Under a response: also a child must beat the parent's r~ (strictly).
    under = {"next_layer_responses": 3, "width": 2, "parent_reward": 0.6}
    assert is_fully_expanded("model", child_rewards=[0.5, 0.7], **under)
    assert not is_fully_expanded("model", child_rewards=[0.5, 0.6], **under)
    assert not is_fully_expanded(
        "model", next_layer_responses=1, width=2, parent_reward=0.6, child_rewards=[0.9]
    )


def test_child_choice_uses_the_plays_of_the_whole_tree_not_the_parents_visits() -> None:
    # a: mean 0.6 over 10 visits; b: mean 0.5 over 2. With alpha = 0.1, b's larger
    # exploration term wins only once ln(n) is large: at n = 100 plays in the tree, b
    # (0.500 + 0.215 > 0.600 + 0.096); at n = 12, the root's own visits, a would.
    tree = _Tree("q", ["a", "b"], width=1, alpha=0.1, topk_child=1)
    a, b = tree.root.children
    a.visits, a.reward_sum, a.n_rewards = 10, 6.0, 10
    b.visits, b.reward_sum, b.n_rewards = 2, 1.0, 2
    tree.root.visits = 12
    assert tree.select(plays=100)[-1] is b
    assert tree.select(plays=12)[-1] is a


def test_width_counts_the_responses_of_a_layer_over_the_whole_tree() -> None:
    # Two refine model nodes under two different responses each get one response: the
    # layer holds 2 = width responses, so each is fully expanded (its child beats its
    # parent), although it and its siblings hold only one of them.
    tree = _Tree("q", ["a", "b"], width=2, alpha=0.01, topk_child=1)
    root = tree.root
    first, second = root.children
    r0 = tree.finish([root, first], candidate(0, "a"), 0.5)
    r1 = tree.finish([root, second], candidate(1, "b"), 0.5)
    refine_0, refine_1 = r0.children[0], r1.children[0]
    tree.finish([root, first, r0, refine_0], candidate(2, "a", "refine", (0,)), 0.7)
    assert not tree.fully_expanded(refine_0)  # 1 response on the layer, width 2
    tree.finish([root, second, r1, refine_1], candidate(3, "a", "refine", (1,)), 0.7)
    assert tree.fully_expanded(refine_0) and tree.fully_expanded(refine_1)


def test_a_model_node_without_responses_is_never_fully_expanded() -> None:
    assert not is_fully_expanded("model", next_layer_responses=5, width=1)
    assert not is_fully_expanded("model", next_layer_responses=5, width=0, parent_reward=0.1)


# --- Settings --------------------------------------------------------------------------------


def test_settings_defaults_are_the_published_ones() -> None:
    settings = TOASettings()
    assert settings.kind == "toa"
    assert (settings.alpha, settings.tau, settings.width, settings.topk_child) == (
        0.01,
        0.1,
        None,
        1,
    )
    assert (settings.plays_in_flight, settings.n, settings.models) == (1, 16, None)
    assert settings.models_used(["a", "b"]) == ["a", "b"]
    assert TOASettings(models=["b"]).models_used(["a", "b"]) == ["b"]


@pytest.mark.parametrize(
    "bad",
    [
        {"models": ["a", "a"]},
        {"models": []},
        {"tau": 0},
        {"alpha": -1},
        {"width": 0},
        {"topk_child": 0},
        {"plays_in_flight": 0},
        {"n": 0},
        {"temperature": 0.7},
    ],
)
def test_settings_reject_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TOASettings(**bad)  # type: ignore[arg-type]


# --- One tree, play by play, with the UCB values worked out by hand --------------------------


def test_toy_rewards_of_seed_3() -> None:
    assert toy_rewards(3, 6) == R3


def test_selection_walk_with_hand_computed_ucb() -> None:
    # K = 2, width = floor(6 / 3) = 2, alpha = 0.01; n = the play's number, from 1.
    tree = _Tree(PROMPT.prompt, ["a", "b"], width=2, alpha=0.01, topk_child=1)
    a, b = "m:root/generate/a", "m:root/generate/b"

    def play(n: int, i: int, path: list[str | int], action: str = "generate", parents=()):
        selected = tree.select(n)
        assert [node.id for node in selected] == path
        tree.begin(selected)
        tree.finish(selected, candidate(i, str(selected[-1].model), action, parents), S[i])

    # Play 1: neither root child has a reward: both +inf, the first wins.
    assert scores(tree, ROOT, 1) == {a: INF, b: INF}
    play(1, 0, [ROOT, a])
    # Play 2: b is still untried.
    assert scores(tree, ROOT, 2) == {a: pytest.approx(S[0] + bonus(2, 2)), b: INF}
    play(2, 1, [ROOT, b])
    # Play 3: layer 1 holds 2 = width responses, so both root children are fully
    # expanded; a has the higher mean, its best response is 0; passing 0 the first time
    # adds fresh a and b with the root children's statistics; refine-a is the first +inf.
    assert scores(tree, ROOT, 3) == {
        a: pytest.approx(S[0] + bonus(3, 2)),
        b: pytest.approx(S[1] + bonus(3, 2)),
    }
    assert tree.fully_expanded(tree.nodes[a]) and tree.fully_expanded(tree.nodes[b])
    play(3, 2, [ROOT, a, 0, "m:0/refine/a"], "refine", (0,))
    fresh = {c.id: (c.visits, c.reward_sum, c.n_rewards) for c in tree.nodes[0].children[2:]}
    assert fresh == {
        "m:0/fresh/a": (2, pytest.approx(S[0]), 1),
        "m:0/fresh/b": (2, pytest.approx(S[1]), 1),
    }
    assert [c.id for c in tree.nodes[1].children] == ["m:1/refine/a", "m:1/refine/b"]
    # Play 4: refine-b is still untried.
    assert scores(tree, ROOT, 4) == {
        a: pytest.approx((S[0] + S[2]) / 2 + bonus(4, 3)),
        b: pytest.approx(S[1] + bonus(4, 2)),
    }
    assert scores(tree, 0, 4) == {
        "m:0/refine/a": pytest.approx(S[2] + bonus(4, 2)),
        "m:0/refine/b": INF,
        "m:0/fresh/a": pytest.approx(S[0] + bonus(4, 2)),
        "m:0/fresh/b": pytest.approx(S[1] + bonus(4, 2)),
    }
    play(4, 3, [ROOT, a, 0, "m:0/refine/b"], "refine", (0,))
    # Play 5: refine-a has the best mean; it is fully expanded (layer 4 holds 2 = width
    # responses and S[2] > S[0]), so selection goes on into response 2, adds its fresh
    # children and expands its first refine child.
    assert scores(tree, 0, 5) == {
        "m:0/refine/a": pytest.approx(S[2] + bonus(5, 2)),
        "m:0/refine/b": pytest.approx(S[3] + bonus(5, 2)),
        "m:0/fresh/a": pytest.approx(S[0] + bonus(5, 2)),
        "m:0/fresh/b": pytest.approx(S[1] + bonus(5, 2)),
    }
    assert S[2] > S[0] > S[3] > S[1]
    assert tree.fully_expanded(tree.nodes["m:0/refine/a"])
    assert not tree.fully_expanded(tree.nodes["m:0/refine/b"])  # S[3] < S[0]
    play(5, 4, [ROOT, a, 0, "m:0/refine/a", 2, "m:2/refine/a"], "refine", (2,))
    copied = {c.id: (c.visits, c.reward_sum, c.n_rewards) for c in tree.nodes[2].children[2:]}
    assert copied == {
        "m:2/fresh/a": (4, pytest.approx(S[0] + S[2] + S[3]), 3),
        "m:2/fresh/b": (2, pytest.approx(S[1]), 1),
    }
    # Play 6: fresh-a now has the highest UCB (by a small margin: checked by hand).
    expected = {
        "m:0/refine/a": (S[2] + S[4]) / 2 + bonus(6, 3),
        "m:0/refine/b": S[3] + bonus(6, 2),
        "m:0/fresh/a": S[0] + bonus(6, 2),
        "m:0/fresh/b": S[1] + bonus(6, 2),
    }
    assert scores(tree, 0, 6) == pytest.approx(expected)
    assert max(expected, key=expected.__getitem__) == "m:0/fresh/a"
    play(6, 5, [ROOT, a, 0, "m:0/fresh/a"])


async def test_run_follows_the_hand_computed_walk() -> None:
    result = await toa(6)
    assert plays(result) == [
        ("a", "generate", (), 1),
        ("b", "generate", (), 1),
        ("a", "refine", (0,), 2),
        ("b", "refine", (0,), 2),
        ("a", "refine", (2,), 3),
        ("a", "generate", (), 2),
    ]
    assert [c.reward for c in result.candidates] == R3
    assert list(result.tree.predecessors(5)) == ["m:0/fresh/a"]


async def test_backup_adds_a_visit_and_the_normalized_reward_on_every_node_of_the_path() -> None:
    result = await toa(6)
    expected = {
        ROOT: (7, sum(S), 6),
        "m:root/generate/a": (6, S[0] + S[2] + S[3] + S[4] + S[5], 5),
        "m:root/generate/b": (2, S[1], 1),
        0: (5, S[2] + S[3] + S[4] + S[5], 4),
        "m:0/refine/a": (3, S[2] + S[4], 2),
        "m:0/refine/b": (2, S[3], 1),
        "m:0/fresh/a": (3, S[0] + S[5], 2),  # copied (2, S[0], 1) + play 6
        "m:0/fresh/b": (2, S[1], 1),  # copied, never played
        2: (2, S[4], 1),
        "m:2/refine/a": (2, S[4], 1),
        "m:2/refine/b": (1, 0.0, 0),
        "m:2/fresh/a": (4, S[0] + S[2] + S[3], 3),
        "m:2/fresh/b": (2, S[1], 1),
    }
    for node, (visits, total, count) in expected.items():
        assert stats(result, node) == (visits, pytest.approx(total), count), node
    for response in (1, 3, 4, 5):  # leaves, never passed: no fresh children
        assert stats(result, response) == (1, 0.0, 0)
        assert [*result.tree.successors(response)] == [
            f"m:{response}/refine/a",
            f"m:{response}/refine/b",
        ]
    assert result.tree.number_of_nodes() == 1 + 2 + 6 + 6 * 2 + 2 * 2
    assert result.tree.nodes["m:0/fresh/a"]["copied_visits"] == 2
    assert result.tree.nodes["m:0/fresh/a"]["copied_reward_sum"] == pytest.approx(S[0])


async def test_responses_hold_the_raw_and_the_normalized_reward() -> None:
    for tau in (0.1, 0.5):
        result = await toa(6, tau=tau)
        for c in result.candidates:
            node = result.tree.nodes[c.id]
            assert node["kind"] == "response"
            assert node["reward"] == c.reward
            assert node["normalized"] == pytest.approx(sig(c.reward or 0.0, tau))


# --- Full expansion in a run -----------------------------------------------------------------


async def test_root_children_are_expanded_until_their_layer_reaches_width() -> None:
    # Width 5 (also the default for a budget of 16): the first five plays all generate
    # from the prompt; the sixth goes down a (the higher mean) into its best response,
    # 2 (0.94).
    result = await toa(8, width=5)
    assert toy_rewards(3, 5) == [0.6, 0.2, 0.94, 0.58, 0.64]
    assert plays(result)[:6] == [
        ("a", "generate", (), 1),
        ("b", "generate", (), 1),
        ("a", "generate", (), 1),
        ("a", "generate", (), 1),
        ("a", "generate", (), 1),
        ("a", "refine", (2,), 2),
    ]
    default = await toa(16)
    assert plays(default)[:6] == plays(result)[:6]


async def test_a_model_node_whose_responses_do_not_beat_its_parent_is_expanded_again() -> None:
    # Seed 0: response 1 (0.98) is refined by a into 2 (0.43) and by b into 3 (0.24); then
    # fresh b makes 4. At play 6 layer 4 holds 3 >= width responses, but no child of
    # refine-a beats 0.98, so refine-a is not fully expanded: it refines 1 again.
    assert toy_rewards(0, 6) == [0.02, 0.98, 0.43, 0.24, 0.2, 0.04]
    result = await toa(6, seed=0)
    assert plays(result) == [
        ("a", "generate", (), 1),
        ("b", "generate", (), 1),
        ("a", "refine", (1,), 2),
        ("b", "refine", (1,), 2),
        ("b", "generate", (), 2),
        ("a", "refine", (1,), 2),
    ]
    assert [*result.tree.successors("m:1/refine/a")] == [2, 5]
    assert list(result.tree.predecessors(4)) == ["m:1/fresh/b"]


async def test_topk_child_lets_ucb_choose_among_the_best_responses() -> None:
    # Width 5: a's responses are 0 (0.6), 2 (0.94), 3 (0.58), 4 (0.64). Top-1 keeps 2
    # only; top-2 keeps 2 and 4, and 4 (never passed, +inf) is chosen once 2 has a reward.
    top1 = await toa(8, width=5)
    top2 = await toa(8, width=5, topk_child=2)
    assert plays(top1)[5:7] == [("a", "refine", (2,), 2), ("b", "refine", (2,), 2)]
    assert plays(top2)[5:7] == [("a", "refine", (2,), 2), ("a", "refine", (4,), 2)]


# --- Prompts, budget, reproducibility --------------------------------------------------------


async def test_refine_prompts_hold_the_question_and_the_parent_answer() -> None:
    pool = RecordingPool()
    ctx = context(BudgetConfig(generations=16), pool=pool)
    result = await run(PROMPT, ctx, TOASettings())
    texts = {c.id: c.text for c in result.candidates}
    assert len(pool.messages) == 16
    refined = 0
    for c, message in zip(result.candidates, pool.messages, strict=True):
        if c.action == "refine":
            (parent,) = c.parents
            assert texts[parent] in message
            assert message == ctx.templates["refine"].format(
                question=PROMPT.prompt, answer=texts[parent]
            )
            refined += 1
        else:
            assert c.parents == ()
            assert message == PROMPT.prompt
    assert refined > 0


@pytest.mark.parametrize("in_flight", [1, 2, 3])
@pytest.mark.parametrize("generations", [1, 2, 3, 5, 16, 40])
async def test_plays_equal_the_generation_budget(generations: int, in_flight: int) -> None:
    result = await toa(generations, plays_in_flight=in_flight)
    assert len(result.candidates) == generations
    assert result.spend["generations"] == result.spend["reward_calls"] == generations
    assert sorted(c.step for c in result.candidates) == list(range(generations))


async def test_a_token_budget_plays_n_times_at_most() -> None:
    # 15 tokens a generation, allowed while below 100: 7 plays although n = 16.
    spent = await toa(None)
    assert spent.spend["tokens"] == 105 and len(spent.candidates) == 7
    capped = await run(
        PROMPT, context(BudgetConfig(generations=None, tokens=10_000)), TOASettings(n=4)
    )
    assert len(capped.candidates) == 4


async def test_the_same_seed_gives_the_same_result() -> None:
    for in_flight in (1, 2):
        first = await toa(16, plays_in_flight=in_flight)
        again = await toa(16, plays_in_flight=in_flight)
        other = await toa(16, seed=4, plays_in_flight=in_flight)
        assert [c.text for c in first.candidates] == [c.text for c in again.candidates]
        assert first.tree_document() == again.tree_document()
        assert [c.text for c in first.candidates] != [c.text for c in other.candidates]


async def test_plays_in_flight_use_virtual_loss() -> None:
    # Two plays at once (plays finish in the order they began). Play 3 starts while play
    # 2 (b) is in flight: b counts a visit with reward 0 and layer 1 holds one response
    # (< width 2), so a generates again; sequentially play 3 refines 0. Play 4 starts
    # while play 3 (a) is in flight, so it goes to b and refines response 1.
    result = await toa(6, plays_in_flight=2)
    assert plays(result) == [
        ("a", "generate", (), 1),
        ("b", "generate", (), 1),
        ("a", "generate", (), 1),
        ("a", "refine", (1,), 2),
        ("a", "refine", (2,), 2),
        ("b", "refine", (1,), 2),
    ]
    # Every virtual loss became a real visit and reward.
    assert_backup_invariants(result)


def test_virtual_loss_is_a_visit_with_reward_zero_until_the_play_finishes() -> None:
    tree = _Tree(PROMPT.prompt, ["a", "b"], width=2, alpha=0.01, topk_child=1)
    first = tree.select(1)
    tree.begin(first)
    # a: one visit more and a reward of 0 -> mean 0, no longer +inf.
    assert scores(tree, ROOT, 2) == {
        "m:root/generate/a": pytest.approx(0.0 + bonus(2, 2)),
        "m:root/generate/b": INF,
    }
    second = tree.select(2)
    assert second[-1].id == "m:root/generate/b"
    tree.begin(second)
    tree.finish(first, candidate(0, "a"), S[0])
    node = tree.nodes["m:root/generate/a"]
    assert (node.visits, node.reward_sum, node.n_rewards, node.pending) == (2, S[0], 1, 0)
    assert tree.root.pending == 1  # the second play is still in flight


async def test_a_failed_generation_fails_the_search() -> None:
    ctx = context(BudgetConfig(generations=6), pool=FailingPool())
    with pytest.raises(RuntimeError, match="backend down"):
        await run(PROMPT, ctx, TOASettings(plays_in_flight=2))


# --- The exported tree -----------------------------------------------------------------------


def assert_backup_invariants(result: SearchResult) -> None:
    """Each node's visits and reward sum = its start (1, or the copied statistics) plus
    one visit and r~ per response below it: every play backs up its whole path."""
    tree = result.tree
    for node, data in tree.nodes(data=True):
        below = [tree.nodes[n] for n in nx.descendants(tree, node)]
        below = [d for d in below if d["kind"] == "response"]
        start = (data.get("copied_visits", 1), data.get("copied_reward_sum", 0.0))
        assert data["visits"] == start[0] + len(below), node
        assert data["reward_sum"] == pytest.approx(start[1] + sum(d["normalized"] for d in below))


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_the_exported_tree_alternates_model_and_response_nodes(in_flight: int) -> None:
    names = ("a", "b", "c")
    result = await toa(24, names=names, plays_in_flight=in_flight)
    tree = result.tree
    assert nx.is_arborescence(tree)
    assert tree.nodes[ROOT]["kind"] == "prompt" and tree.nodes[ROOT]["text"] == PROMPT.prompt
    assert [*tree.successors(ROOT)] == [f"m:root/generate/{m}" for m in names]
    kinds = {(tree.nodes[u]["kind"], tree.nodes[v]["kind"]) for u, v in tree.edges}
    assert kinds == {("prompt", "model"), ("model", "response"), ("response", "model")}
    for node, data in tree.nodes(data=True):
        if data["kind"] == "model":
            (parent,) = tree.predecessors(node)
            assert node == f"m:{parent}/{data['action']}/{data['model']}"
            assert data["layer"] % 2 == 1
            assert (data["action"] == "generate") == (parent == ROOT)
        elif data["kind"] == "response":
            children = [*tree.successors(node)]
            assert children[:3] == [f"m:{node}/refine/{m}" for m in names]
            assert children[3:] in ([], [f"m:{node}/fresh/{m}" for m in names])
            assert data["layer"] % 2 == 0 and data["depth"] == data["layer"] // 2
    assert {n for n, d in tree.nodes(data=True) if d["kind"] == "response"} == {
        c.id for c in result.candidates
    }
    for c in result.candidates:
        data = tree.nodes[c.id]
        (model_node,) = tree.predecessors(c.id)
        (origin,) = tree.predecessors(model_node)
        assert tree.nodes[model_node]["model"] == data["model"] == c.model
        assert (data["depth"], data["step"], data["reward"]) == (c.depth, c.step, c.reward)
        if c.action == "refine":
            assert tree.nodes[model_node]["action"] == "refine" and c.parents == (origin,)
        else:
            assert tree.nodes[model_node]["action"] in ("generate", "fresh") and c.parents == ()
    assert_backup_invariants(result)
    json.dumps(result.tree_document())
    best = result.best()
    assert best is not None and best.reward == max(c.reward or 0.0 for c in result.candidates)


# --- width >= K, as the authors' code asserts ------------------------------------------------


def test_a_width_below_the_number_of_models_is_refused() -> None:
    with pytest.raises(ValidationError, match="width 2 is below the number of models"):
        TOASettings(models=["a", "b", "c"], width=2)
    TOASettings(models=["a", "b", "c"], width=3)  # = K is fine
    # All pool models (models None): checked against the pool's names.
    with pytest.raises(ValueError, match="width 2 is below the number of models \\(3\\)"):
        TOASettings(width=2).check_pool(["a", "b", "c"])
    TOASettings(width=2).check_pool(["a", "b"])


def test_a_synthesize_config_with_a_width_below_k_is_a_config_error() -> None:
    from multisample.engine.config import ConfigError
    from multisample.search.synthesize.config import SynthesizeConfig

    config = SynthesizeConfig.model_validate(
        {
            "models": [{"name": n, "model": f"/no/{n}"} for n in "abc"],
            "strategy": {"kind": "toa", "width": 2},
        }
    )
    with pytest.raises(ConfigError, match="strategy: toa width 2 is below"):
        config.check_models()


async def test_run_refuses_a_width_below_k() -> None:
    with pytest.raises(ValueError, match="below the number of models"):
        await toa(6, names=("a", "b", "c"), width=2)


def test_the_default_width_is_plays_over_3_and_at_least_k() -> None:
    assert tree_width(None, 30, 4) == 10  # the authors' K x samples / 3
    assert tree_width(None, 8, 4) == 4  # 8 // 3 = 2 < K: raised to K
    assert tree_width(None, 12, 4) == 4
    assert tree_width(5, 30, 4) == 5  # a configured width is kept


# --- Reward normalization (engine/rewards/normalization.py) ----------------------------------


class AffineToyReward(ToyReward):
    """The toy reward on a reward model's logit scale: 1000 r - 300 (every toy reward
    but 0.30 is then at least +-10, so the published sigmoid(r / 0.1) saturates)."""

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        return [1000 * r - 300 for r in await super()._score(prompt, responses, reference)]


async def toa_scaled(generations: int, **settings) -> SearchResult:
    ctx = SearchContext(
        ToyPool(), AffineToyReward(), SamplingSettings(), BudgetConfig(generations=generations), 3
    )  # type: ignore[arg-type]
    return await run(PROMPT, ctx, TOASettings(**settings))


def test_the_default_normalization_is_the_published_sigmoid() -> None:
    assert TOASettings().normalization() == Sigmoid(tau=0.1)
    assert TOASettings(tau=0.5).normalization() == Sigmoid(tau=0.5)
    assert TOASettings(normalize="zscore").normalization() == ZScore()
    assert TOASettings(normalize={"kind": "scale", "factor": 0.2}).normalization() == Scale(
        factor=0.2
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"tau": 0.2, "normalize": "zscore"},  # two ways to say one thing
        {"tau": 0.2, "normalize": {"kind": "sigmoid", "tau": 0.3}},
        {"normalize": "scale"},  # no factor
        {"normalize": "softmax"},
    ],
)
def test_normalize_settings_are_checked(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TOASettings(**bad)  # type: ignore[arg-type]


async def test_an_explicit_sigmoid_is_the_default_search() -> None:
    default = await toa(16)
    explicit = await toa(16, normalize={"kind": "sigmoid", "tau": 0.1})
    assert plays(explicit) == plays(default)
    assert nx.node_link_data(explicit.tree, edges="edges") == nx.node_link_data(
        default.tree, edges="edges"
    )


def test_ucb_uses_the_prompts_z_scores_so_far() -> None:
    # Rewards 3 and -1: mean 1, standard deviation 2, so the root children's means are +1
    # and -1 standard deviations; after a third response of 7 (mean 3, standard
    # deviation sqrt(32 / 3)), a's mean is that of z(3) = 0 and z(7).
    tree = _Tree(
        PROMPT.prompt, ["a", "b"], width=2, alpha=0.01, topk_child=1, normalization=ZScore()
    )
    root = tree.root
    first, second = root.children

    def play(path: list, i: int, value: float, action: str = "generate", parents=()):
        tree.begin(path)
        return tree.finish(path, candidate(i, str(path[-1].model), action, parents), value)

    r0 = play([root, first], 0, 3.0)
    play([root, second], 1, -1.0)
    assert tree.affine() == Affine(1.0, 2.0)
    affine = tree.affine()
    assert {c.id: c.ucb(3, tree.alpha, affine) for c in root.children} == {
        first.id: 1.0 + bonus(3, 2),
        second.id: -1.0 + bonus(3, 2),
    }
    play([root, first, r0, r0.children[0]], 2, 7.0, "refine", (0,))
    spread = math.sqrt(32 / 3)
    affine = tree.affine()
    assert first.ucb(4, tree.alpha, affine) == pytest.approx((0 + 4 / spread) / 2 + bonus(4, 3))
    assert second.ucb(4, tree.alpha, affine) == pytest.approx(-4 / spread + bonus(4, 2))


async def test_per_prompt_normalization_is_blind_to_the_reward_models_scale() -> None:
    # z-score and min-max of 1000 r - 300 are those of r: the same plays either way.
    for kind in ("zscore", "minmax"):
        assert plays(await toa_scaled(16, normalize=kind)) == plays(await toa(16, normalize=kind))
    # The published sigmoid saturates on that scale: r~ is 0 or 1 (or 0.5 for 0.30).
    saturated = await toa_scaled(16)
    normalized = [saturated.tree.nodes[c.id]["normalized"] for c in saturated.candidates]
    assert all(v == 0.5 or min(v, 1 - v) < 1e-40 for v in normalized), normalized
    assert plays(saturated) != plays(await toa(16))


async def test_the_tree_is_written_with_the_prompts_final_statistics() -> None:
    result = await toa(12, normalize="zscore")
    rewards = [c.reward or 0.0 for c in result.candidates]
    mean = sum(rewards) / len(rewards)
    spread = math.sqrt(sum((r - mean) ** 2 for r in rewards) / len(rewards))
    for c in result.candidates:
        node = result.tree.nodes[c.id]
        assert node["reward"] == c.reward
        assert node["normalized"] == pytest.approx(((c.reward or 0.0) - mean) / spread)
    # The root backed up every response once: z-scores sum to 0.
    assert stats(result, ROOT)[1:] == (pytest.approx(0.0, abs=1e-12), 12)
