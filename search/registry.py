"""Every strategy by name: the config, the CLI and the tests all look them up here.

Adding a strategy is one new module with a settings model (with a `kind` literal) and an
async `run(prompt, ctx, settings)`, plus one line in each of the two places below.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from pydantic import BaseModel, Field

from engine.types import Prompt
from search import best_of_n, ensemble, moa, prs, refine, toa
from search.base import SearchContext, SearchResult

RunFunction = Callable[[Prompt, SearchContext, Any], Awaitable[SearchResult]]

STRATEGIES: dict[str, tuple[type[BaseModel], RunFunction]] = {
    "best_of_n": (best_of_n.BestOfNSettings, best_of_n.run),
    "ensemble": (ensemble.EnsembleSettings, ensemble.run),
    "refine": (refine.RefineSettings, refine.run),
    "moa": (moa.MoASettings, moa.run),
    "prs": (prs.PRSSettings, prs.run),
    "toa": (toa.TOASettings, toa.run),
}

StrategySettings = Annotated[
    best_of_n.BestOfNSettings
    | ensemble.EnsembleSettings
    | refine.RefineSettings
    | moa.MoASettings
    | prs.PRSSettings
    | toa.TOASettings,
    Field(discriminator="kind"),
]


async def run_strategy(prompt: Prompt, ctx: SearchContext, settings: BaseModel) -> SearchResult:
    _, run = STRATEGIES[settings.kind]  # type: ignore[attr-defined]
    return await run(prompt, ctx, settings)
