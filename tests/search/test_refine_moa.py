"""Exact bookkeeping of sequential refine and Mixture-of-Agents on the toy pool."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import pytest
from pydantic import ValidationError

from multisample.engine.config import BudgetConfig
from multisample.engine.seeds import derive_seed
from multisample.engine.types import Generation, GenerationRequest, Prompt, SamplingSettings
from multisample.search.base import ROOT, SearchContext, SearchResult
from multisample.search.moa import MoASettings
from multisample.search.moa import run as run_moa
from multisample.search.refine import RefineSettings
from multisample.search.refine import run as run_refine
from tests.search.toy import ToyPool, ToyReward

PROMPT = Prompt(id="q1", prompt="Say something.")


class RecordingPool(ToyPool):
    """The toy pool, also keeping every request's last message and whole conversation
    (by seed) and the most calls it had in flight at once."""

    def __init__(self, names: Sequence[str], system_prompts: dict[str, str] | None = None) -> None:
        super().__init__(names, system_prompts=system_prompts)
        self.messages: dict[int, str] = {}
        self.conversations: dict[int, tuple[tuple[str, str], ...]] = {}
        self.in_flight = 0
        self.most_in_flight = 0

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let concurrent calls of a layer overlap
            for r in requests:
                self.messages[r.seed] = r.messages[-1].content
                self.conversations[r.seed] = tuple((m.role, m.content) for m in r.messages)
            return await super().generate(model, requests)
        finally:
            self.in_flight -= 1


def context(
    budget: BudgetConfig, seed: int = 0, names: tuple[str, ...] = ("a", "b")
) -> SearchContext:
    return SearchContext(RecordingPool(names), ToyReward(), SamplingSettings(), budget, seed)  # type: ignore[arg-type]


def pool_of(ctx: SearchContext) -> RecordingPool:
    assert isinstance(ctx.pool, RecordingPool)
    return ctx.pool


def layout(result: SearchResult) -> list[tuple[str, str, tuple[int, ...], int, int]]:
    return [(c.model, c.action, c.parents, c.depth, c.step) for c in result.candidates]


def order(models: list[str], seed: int, round_index: int) -> list[str]:
    shuffled = list(models)
    random.Random(derive_seed(seed, PROMPT.id, "refine", round_index)).shuffle(shuffled)
    return shuffled


def assert_tree_matches(result: SearchResult) -> None:
    assert set(result.tree.nodes) == {ROOT, *(c.id for c in result.candidates)}
    for c in result.candidates:
        assert set(result.tree.predecessors(c.id)) == (set(c.parents) or {ROOT})


# --- sequential refine ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 7])
async def test_refine_chains_two_models_per_round(seed: int) -> None:
    ctx = context(BudgetConfig(generations=5), seed=seed)
    result = await run_refine(PROMPT, ctx, RefineSettings())
    o0, o1, o2 = (order(["a", "b"], seed, r) for r in range(3))
    assert layout(result) == [
        (o0[0], "generate", (), 1, 0),
        (o0[1], "refine", (0,), 2, 0),
        (o1[0], "generate", (), 1, 1),
        (o1[1], "refine", (2,), 2, 1),
        (o2[0], "generate", (), 1, 2),  # the budget ends mid-chain
    ]
    assert [c.id for c in result.candidates] == [0, 1, 2, 3, 4]
    assert result.spend["generations"] == 5 == result.spend["reward_calls"]
    assert ctx.pool.calls == [(c.model, 1) for c in result.candidates]  # type: ignore[attr-defined]
    assert_tree_matches(result)


async def test_refine_message_holds_the_question_and_the_previous_answer() -> None:
    ctx = context(BudgetConfig(generations=5))
    result = await run_refine(PROMPT, ctx, RefineSettings())
    messages = pool_of(ctx).messages
    for c in result.candidates:
        sent = messages[c.seed]
        if c.action == "generate":
            assert sent == PROMPT.prompt
            assert c.text.endswith(f"|{PROMPT.prompt}")
        else:
            (parent,) = c.parents
            previous = result.candidates[parent]
            assert sent == ctx.templates["refine"].format(
                question=PROMPT.prompt, answer=previous.text
            )
            assert previous.text in sent and PROMPT.prompt in sent
            # The toy text shows the refine template's opening was the message.
            assert c.text.endswith("|" + ctx.templates["refine"][:20])


async def test_refine_shuffles_the_order_per_round() -> None:
    seed = 3
    ctx = context(BudgetConfig(generations=30), seed=seed, names=("a", "b", "c"))
    result = await run_refine(PROMPT, ctx, RefineSettings())
    rounds = [[c.model for c in result.candidates if c.step == r] for r in range(10)]
    assert rounds == [order(["a", "b", "c"], seed, r) for r in range(10)]
    assert len({tuple(r) for r in rounds}) > 1  # the order does change between rounds
    assert [c.depth for c in result.candidates] == [1, 2, 3] * 10
    assert [c.parents for c in result.candidates[:3]] == [(), (0,), (1,)]


async def test_refine_uses_the_chosen_models_only() -> None:
    ctx = context(BudgetConfig(generations=4), names=("a", "b", "c"))
    result = await run_refine(PROMPT, ctx, RefineSettings(models=["c", "a"]))
    assert {c.model for c in result.candidates} == {"a", "c"}
    assert [c.action for c in result.candidates] == ["generate", "refine"] * 2


async def test_refine_stops_under_a_token_budget() -> None:
    ctx = context(BudgetConfig(generations=None, tokens=100))
    result = await run_refine(PROMPT, ctx, RefineSettings())
    # 15 tokens a generation, allowed while below 100: 7 generations, the last mid-chain.
    assert result.spend["tokens"] == 105
    assert [c.action for c in result.candidates] == ["generate", "refine"] * 3 + ["generate"]


# --- Mixture-of-Agents ---------------------------------------------------------------


async def test_moa_layout_with_two_layers_per_block() -> None:
    ctx = context(BudgetConfig(generations=8), names=("a", "b", "c"))
    result = await run_moa(PROMPT, ctx, MoASettings(layers_per_block=2))
    assert layout(result) == [
        ("a", "generate", (), 1, 0),
        ("b", "generate", (), 1, 0),
        ("c", "generate", (), 1, 0),
        ("a", "aggregate", (0, 1, 2), 2, 1),
        ("b", "aggregate", (0, 1, 2), 2, 1),
        ("c", "aggregate", (0, 1, 2), 2, 1),
        # A new block starts from the prompt; 2 generations left: the first 2 models.
        ("a", "generate", (), 1, 2),
        ("b", "generate", (), 1, 2),
    ]
    assert result.spend["generations"] == 8 == result.spend["reward_calls"]
    assert_tree_matches(result)


async def test_moa_second_block_aggregates_its_own_first_layer() -> None:
    ctx = context(BudgetConfig(generations=11), names=("a", "b", "c"))
    result = await run_moa(PROMPT, ctx, MoASettings(layers_per_block=2))
    assert [c.step for c in result.candidates] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 2
    assert [c.depth for c in result.candidates] == [1] * 3 + [2] * 3 + [1] * 3 + [2] * 2
    assert [c.parents for c in result.candidates[9:]] == [(6, 7, 8)] * 2
    assert [c.model for c in result.candidates[9:]] == ["a", "b"]


async def test_moa_default_blocks_have_four_layers_as_the_authors_scripts() -> None:
    assert MoASettings().layers_per_block == 4
    ctx = context(BudgetConfig(generations=11))
    result = await run_moa(PROMPT, ctx, MoASettings())
    assert [c.action for c in result.candidates] == (
        ["generate"] * 2 + ["aggregate"] * 6 + ["generate"] * 2 + ["aggregate"]
    )
    assert [c.parents for c in result.candidates] == [
        *[()] * 2,
        *[(0, 1)] * 2,
        *[(2, 3)] * 2,
        *[(4, 5)] * 2,
        *[()] * 2,
        (8, 9),
    ]
    assert [c.depth for c in result.candidates] == [1, 1, 2, 2, 3, 3, 4, 4, 1, 1, 2]


async def test_moa_blocks_of_three_layers() -> None:
    ctx = context(BudgetConfig(generations=9))
    result = await run_moa(PROMPT, ctx, MoASettings(layers_per_block=3))
    assert [c.action for c in result.candidates] == (
        ["generate"] * 2 + ["aggregate"] * 4 + ["generate"] * 2 + ["aggregate"]
    )
    assert [c.parents for c in result.candidates] == [
        (),
        (),
        (0, 1),
        (0, 1),
        (2, 3),
        (2, 3),
        (),
        (),
        (6, 7),
    ]
    assert [c.depth for c in result.candidates] == [1, 1, 2, 2, 3, 3, 1, 1, 2]


async def test_moa_aggregator_is_a_system_message_and_the_question_the_user_turn() -> None:
    # The authors' form; model c has a system prompt of its own, so it gets the user form.
    pool = RecordingPool(("a", "b", "c"), system_prompts={"c": "Be brief."})
    ctx = SearchContext(pool, ToyReward(), SamplingSettings(), BudgetConfig(generations=6))  # type: ignore[arg-type]
    result = await run_moa(PROMPT, ctx, MoASettings(layers_per_block=2))
    references = "\n\n".join(f"{i}. {result.candidates[i - 1].text}" for i in (1, 2, 3))
    system = ctx.templates["aggregate_system"].format(references=references)
    user_form = ctx.templates["aggregate"].format(question=PROMPT.prompt, references=references)
    aggregated = {c.model: pool.conversations[c.seed] for c in result.candidates[3:]}
    assert aggregated["a"] == (("system", system), ("user", PROMPT.prompt))
    assert aggregated["b"] == (("system", system), ("user", PROMPT.prompt))
    assert aggregated["c"] == (("user", user_form),)
    assert all(
        pool.conversations[c.seed] == (("user", PROMPT.prompt),) for c in result.candidates[:3]
    )


async def test_moa_aggregate_message_lists_every_previous_answer() -> None:
    # aggregator_role user: question and references in one user turn, for every model.
    ctx = context(BudgetConfig(generations=8), names=("a", "b", "c"))
    result = await run_moa(PROMPT, ctx, MoASettings(layers_per_block=2, aggregator_role="user"))
    messages = pool_of(ctx).messages
    for c in result.candidates:
        sent = messages[c.seed]
        if c.action == "generate":
            assert sent == PROMPT.prompt
            continue
        references = "\n\n".join(
            f"{i}. {result.candidates[p].text}" for i, p in enumerate(c.parents, 1)
        )
        assert sent == ctx.templates["aggregate"].format(
            question=PROMPT.prompt, references=references
        )
        assert all(result.candidates[p].text in sent for p in c.parents)
        assert c.text.endswith("|" + ctx.templates["aggregate"][:20])


async def test_moa_calls_the_models_of_a_layer_concurrently() -> None:
    ctx = context(BudgetConfig(generations=6), names=("a", "b", "c"))
    await run_moa(PROMPT, ctx, MoASettings())
    assert pool_of(ctx).most_in_flight == 3


async def test_moa_stops_under_a_token_budget() -> None:
    ctx = context(BudgetConfig(generations=None, tokens=100), names=("a", "b", "c"))
    result = await run_moa(PROMPT, ctx, MoASettings(layers_per_block=2))
    # One call at a time under a token limit: 7 generations (105 tokens), the last layer
    # stops after its first model.
    assert result.spend["tokens"] == 105
    assert layout(result)[6:] == [("a", "generate", (), 1, 2)]
    assert [c.parents for c in result.candidates[3:6]] == [(0, 1, 2)] * 3


async def test_moa_settings_validate() -> None:
    with pytest.raises(ValidationError):
        MoASettings(layers_per_block=0)
    with pytest.raises(ValidationError):
        MoASettings(width=3)  # type: ignore[call-arg]
    assert MoASettings(models=["b"]).models_used(["a", "b"]) == ["b"]


# --- both ----------------------------------------------------------------------------

STRATEGIES = [
    pytest.param(run_refine, RefineSettings(), id="refine"),
    pytest.param(run_moa, MoASettings(layers_per_block=2), id="moa"),
]


@pytest.mark.parametrize(("run", "settings"), STRATEGIES)
@pytest.mark.parametrize("generations", [1, 2, 3, 5, 8, 13])
async def test_the_generation_budget_is_spent_exactly(run, settings, generations: int) -> None:
    ctx = context(BudgetConfig(generations=generations), names=("a", "b", "c"))
    result = await run(PROMPT, ctx, settings)
    assert result.spend["generations"] == generations == len(result.candidates)
    assert result.spend["reward_calls"] == generations
    assert result.spend["tokens"] == 15 * generations


@pytest.mark.parametrize(("run", "settings"), STRATEGIES)
async def test_every_candidate_is_scored_against_the_prompt(run, settings) -> None:
    ctx = context(BudgetConfig(generations=8), names=("a", "b", "c"))
    result = await run(PROMPT, ctx, settings)
    assert all(c.reward is not None for c in result.candidates)
    assert result.scored() == result.candidates
    # The toy reward is read back from the text: the score of the response itself.
    assert [c.reward for c in result.candidates] == [
        int(c.text.split("|")[1]) % 100 / 100 for c in result.candidates
    ]


@pytest.mark.parametrize(("run", "settings"), STRATEGIES)
async def test_same_seed_same_candidates(run, settings) -> None:
    def run_with(seed: int):
        return run(PROMPT, context(BudgetConfig(generations=7), seed=seed), settings)

    first, again, other = await run_with(5), await run_with(5), await run_with(6)
    assert first.candidates == again.candidates
    assert [c.text for c in first.candidates] != [c.text for c in other.candidates]
