"""Parallel ensemble: each of the K models samples N/K times; the highest reward wins."""

from __future__ import annotations

import asyncio
from typing import Literal

from pydantic import BaseModel, ConfigDict

from engine.types import Message, Prompt
from search.base import Search, SearchContext, SearchResult, split_evenly
from search.best_of_n import sample_until_spent


class EnsembleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    kind: Literal["ensemble"] = "ensemble"
    models: list[str] | None = None
    """Pool models that take part; None takes all of them."""

    def models_used(self, pool_models: list[str]) -> list[str]:
        return self.models or pool_models


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
