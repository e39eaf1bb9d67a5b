"""Best-of-N (the 'Rand' baseline): one model, N samples, the highest reward wins."""

from __future__ import annotations

from typing import ClassVar, Literal

from multisample.engine.types import Message, Prompt
from multisample.search.base import OneModel, Search, SearchContext, SearchResult


class BestOfNSettings(OneModel):
    kind: Literal["best_of_n"] = "best_of_n"
    prefix_reusable: ClassVar[bool] = True  # its first b samples are the search at budget b

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return 1  # every sample in one batch


async def run(prompt: Prompt, ctx: SearchContext, settings: BestOfNSettings) -> SearchResult:
    search = Search(prompt, ctx, "best_of_n")
    (model,) = settings.models_used(ctx.pool.names)
    await search.sample_until_spent(model, (Message("user", prompt.prompt),))
    return search.result()
