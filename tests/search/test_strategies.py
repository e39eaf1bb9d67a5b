"""Rules every registered strategy keeps, on the deterministic toy pool."""

from __future__ import annotations

from collections import Counter

import pytest
from pydantic import TypeAdapter

from multisample.engine.config import BudgetConfig, ConfigError
from multisample.engine.registry import kind_of
from multisample.engine.types import Prompt, SamplingSettings
from multisample.search.base import ROOT, SearchContext
from multisample.search.best_of_n import BestOfNSettings
from multisample.search.ensemble import EnsembleSettings
from multisample.search.registry import STRATEGIES, StrategySettings, run_strategy
from multisample.search.steps import StepSearchSettings
from multisample.search.synthesize.config import SynthesizeConfig
from tests.search.toy import ToyPool, ToyReward

PROMPT = Prompt(id="q1", prompt="Say something.")


def context(
    budget: BudgetConfig, seed: int = 0, names: tuple[str, ...] = ("a", "b")
) -> SearchContext:
    return SearchContext(ToyPool(names), ToyReward(), SamplingSettings(), budget, seed)  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@pytest.mark.parametrize("generations", [1, 2, 5, 16])
async def test_every_strategy_spends_exactly_its_generation_budget(
    kind: str, generations: int
) -> None:
    settings_cls, _ = STRATEGIES[kind]
    result = await run_strategy(
        PROMPT, context(BudgetConfig(generations=generations)), settings_cls()
    )
    assert result.spend["generations"] == generations == len(result.candidates)
    assert result.spend["tokens"] == 15 * generations
    assert result.spend["flops"] == pytest.approx(2 * 1e6 * 15 * generations)
    # Every answer is scored once; feedback (not an answer) is not.
    assert result.spend["reward_calls"] == len(result.scored())


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
async def test_every_strategy_respects_a_token_budget(kind: str) -> None:
    settings_cls, _ = STRATEGIES[kind]
    result = await run_strategy(
        PROMPT, context(BudgetConfig(generations=None, tokens=100)), settings_cls()
    )
    # 15 tokens a generation: allowed while below 100, so 7 generations (105 tokens);
    # a step-level search without a generation limit finishes M solutions, 4 here.
    step_level = issubclass(settings_cls, StepSearchSettings)
    assert result.spend["tokens"] == (15 * 4 if step_level else 105)


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
async def test_every_strategy_is_reproducible_and_seed_sensitive(kind: str) -> None:
    settings_cls, _ = STRATEGIES[kind]
    budget = BudgetConfig(generations=6)
    first = await run_strategy(PROMPT, context(budget, seed=1), settings_cls())
    again = await run_strategy(PROMPT, context(budget, seed=1), settings_cls())
    other = await run_strategy(PROMPT, context(budget, seed=2), settings_cls())
    assert [c.text for c in first.candidates] == [c.text for c in again.candidates]
    assert [c.text for c in first.candidates] != [c.text for c in other.candidates]
    assert len({c.seed for c in first.candidates}) == 6


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
async def test_every_strategy_returns_a_tree_rooted_at_the_prompt(kind: str) -> None:
    settings_cls, _ = STRATEGIES[kind]
    result = await run_strategy(PROMPT, context(BudgetConfig(generations=4)), settings_cls())
    tree = result.tree
    assert tree.nodes[ROOT]["kind"] == "prompt"
    # TOA's tree also holds the MCTS model nodes ("call model m") between responses.
    model_nodes = {n for n, data in tree.nodes(data=True) if data.get("kind") == "model"}
    assert set(tree.nodes) - model_nodes == {ROOT, *(c.id for c in result.candidates)}
    for candidate in result.candidates:
        parents = set(tree.predecessors(candidate.id))
        if not model_nodes:
            assert parents == (set(candidate.parents) or {ROOT})
            continue
        (model_node,) = parents
        assert tree.nodes[model_node]["model"] == candidate.model
        if candidate.action == "refine":
            assert set(tree.predecessors(model_node)) == set(candidate.parents)
    best = result.best()
    assert best is not None
    assert best.reward == max(c.reward for c in result.candidates if c.reward is not None)


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_every_strategy_is_in_the_config_union_and_its_schema(kind: str) -> None:
    settings_cls, _ = STRATEGIES[kind]
    assert kind_of(settings_cls) == kind
    union = TypeAdapter(StrategySettings)
    assert type(union.validate_python({"kind": kind})) is settings_cls
    schema = union.json_schema()
    assert kind in schema["discriminator"]["mapping"]
    assert settings_cls.__name__ in schema["$defs"]
    assert schema["$defs"][settings_cls.__name__].get("properties", {}).get("kind")


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
def test_every_strategy_says_how_long_its_search_runs(kind: str) -> None:
    settings_cls, _ = STRATEGIES[kind]
    rounds = [settings_cls().sequential_rounds(b, ["a", "b"]) for b in (1, 2, 4, 16)]
    assert all(r > 0 for r in rounds)
    assert rounds == sorted(rounds)  # a larger budget never makes a shorter search


@pytest.mark.parametrize(
    "kind", sorted(k for k, (settings, _) in STRATEGIES.items() if settings.prefix_reusable)
)
async def test_a_prefix_reusable_search_is_a_prefix_of_a_larger_one(kind: str) -> None:
    settings_cls, _ = STRATEGIES[kind]
    small = await run_strategy(PROMPT, context(BudgetConfig(generations=3)), settings_cls())
    large = await run_strategy(PROMPT, context(BudgetConfig(generations=8)), settings_cls())
    assert [c.text for c in small.candidates] == [c.text for c in large.candidates[:3]]


async def test_best_of_n_samples_one_model_in_one_batch() -> None:
    ctx = context(BudgetConfig(generations=8))
    result = await run_strategy(PROMPT, ctx, BestOfNSettings(model="b"))
    assert ctx.pool.calls == [("b", 8)]  # type: ignore[attr-defined]
    assert {c.model for c in result.candidates} == {"b"}
    assert all(c.action == "generate" and c.parents == () for c in result.candidates)


async def test_best_of_n_defaults_to_the_first_model() -> None:
    result = await run_strategy(PROMPT, context(BudgetConfig(generations=2)), BestOfNSettings())
    assert {c.model for c in result.candidates} == {"a"}


async def test_ensemble_splits_the_budget_evenly_over_the_models() -> None:
    ctx = context(BudgetConfig(generations=7), names=("a", "b", "c"))
    result = await run_strategy(PROMPT, ctx, EnsembleSettings())
    assert Counter(c.model for c in result.candidates) == {"a": 3, "b": 2, "c": 2}
    assert sorted(ctx.pool.calls) == [("a", 3), ("b", 2), ("c", 2)]  # type: ignore[attr-defined]
    chosen = await run_strategy(
        PROMPT,
        context(BudgetConfig(generations=4), names=("a", "b", "c")),
        EnsembleSettings(models=["c"]),
    )
    assert {c.model for c in chosen.candidates} == {"c"}


def test_strategy_models_must_exist() -> None:
    config = SynthesizeConfig.model_validate(
        {
            "models": [{"name": "a", "model": "x"}],
            "strategy": {"kind": "best_of_n", "model": "nope"},
        }
    )
    with pytest.raises(ConfigError, match="no model named 'nope'"):
        config.check_models()
