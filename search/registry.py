"""Every strategy by kind: the config, the CLI and the tests all look them up here.

Adding a strategy is one new module and one line in `STRATEGIES` below, or, from a
package of your own, an entry point in the `multisample.strategies` group naming the
pair `(SettingsClass, run)` of its module. The module holds a settings class (a
`OneModel` or `ManyModels` with a `kind: Literal["..."]` field and a `sequential_rounds`
method; `prefix_reusable = True` when its search at a budget is a prefix of the one at a
larger budget; a `choose` of its own when the answer is not the best-rewarded sample)
and an async `run(prompt, ctx, settings) -> SearchResult`. The `strategy` union of every
config (and so its JSON schema) is derived from `STRATEGIES`, and the strategy contract
tests (tests/search/test_strategies.py) run over it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from multisample.engine.registry import kind_of, tagged_union, with_plugins
from multisample.engine.types import Prompt
from multisample.search import best_of_n, ensemble, moa, prs, refine, steps, toa, voting
from multisample.search.base import BaseStrategySettings, SearchContext, SearchResult

RunFunction = Callable[[Prompt, SearchContext, Any], Awaitable[SearchResult]]

Strategy = tuple[type[BaseStrategySettings], RunFunction]
"""A strategy: its settings class and its run function."""

STRATEGIES: dict[str, Strategy] = with_plugins(
    "multisample.strategies",
    [
        (best_of_n.BestOfNSettings, best_of_n.run),
        (voting.MajoritySettings, best_of_n.run),
        (voting.WeightedBestOfNSettings, best_of_n.run),
        (ensemble.EnsembleSettings, ensemble.run),
        (refine.RefineSettings, refine.run),
        (moa.MoASettings, moa.run),
        (prs.PRSSettings, prs.run),
        (toa.TOASettings, toa.run),
        (steps.BeamSearchSettings, steps.run),
        (steps.DVTSSettings, steps.run),
    ],
    lambda strategy: kind_of(strategy[0]),
)

StrategySettings = tagged_union(settings for settings, _ in STRATEGIES.values())
"""Any strategy's settings; pydantic picks the class from the `kind` field."""


async def run_strategy(
    prompt: Prompt, ctx: SearchContext, settings: BaseStrategySettings
) -> SearchResult:
    """One prompt's search, and the candidate it answers with (`settings.choose`)."""
    _, run = STRATEGIES[kind_of(type(settings))]
    result = await run(prompt, ctx, settings)
    result.selected = settings.choose(result.candidates, prompt)
    return result
