"""Parallel ensemble: each of the K models samples N/K times; the highest reward wins."""

from __future__ import annotations

import asyncio
from typing import Literal

from multisample.engine.types import Message, Prompt
from multisample.search.base import ManyModels, Search, SearchContext, SearchResult, split_evenly


class EnsembleSettings(ManyModels):
    kind: Literal["ensemble"] = "ensemble"

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return 1  # every sample in one batch


async def run(prompt: Prompt, ctx: SearchContext, settings: EnsembleSettings) -> SearchResult:
    search = Search(prompt, ctx, "ensemble")
    models = settings.models_used(ctx.pool.names)
    total = search.budget.remaining_generations()
    if total is None:
        # Token budget only: take turns in small rounds until it is spent.
        while search.budget.can_generate():
            for model in models:
                if search.budget.can_generate():
                    await search.sample(model, (Message("user", prompt.prompt),))
    else:
        shares = split_evenly(total, len(models))
        await asyncio.gather(
            *(
                search.sample_until_spent(m, (Message("user", prompt.prompt),), limit=k)
                for m, k in zip(models, shares, strict=True)
                if k
            )
        )
    return search.result()
