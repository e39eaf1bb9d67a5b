"""Best-of-N (the 'Rand' baseline): one model, N samples, the highest reward wins."""

from __future__ import annotations

from typing import ClassVar, Literal

from multisample.engine.types import Message, Prompt
from multisample.search.base import (
    BaseStrategySettings,
    OneModel,
    Search,
    SearchContext,
    SearchResult,
)


class BestOfNSettings(OneModel):
    kind: Literal["best_of_n"] = "best_of_n"
    prefix_reusable: ClassVar[bool] = True  # its first b samples are the search at budget b

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return 1  # every sample in one batch

    def same_search(self, other: BaseStrategySettings) -> bool:
        # Majority voting and weighted best-of-N sample as best-of-N does.
        return isinstance(other, BestOfNSettings) and other.model == self.model


async def run(prompt: Prompt, ctx: SearchContext, settings: OneModel) -> SearchResult:
    """N samples of one model in one batch; the settings' `choose` picks the answer
    (majority voting and weighted best-of-N search the same way)."""
    search = Search(prompt, ctx, settings.kind)
    (model,) = settings.models_used(ctx.pool.names)
    await search.sample_until_spent(model, (Message("user", prompt.prompt),))
    return search.result()
