"""Parallel ensemble: each of the K models samples N/K times; the highest reward wins."""

from __future__ import annotations

import asyncio
from typing import Literal

from engine.types import Message, Prompt
from search.base import ManyModels, Search, SearchContext, SearchResult, split_evenly
from search.best_of_n import sample_until_spent


class EnsembleSettings(ManyModels):
    kind: Literal["ensemble"] = "ensemble"


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
                sample_until_spent(search, m, limit=k)
                for m, k in zip(models, shares, strict=True)
                if k
            )
        )
    return search.result()
