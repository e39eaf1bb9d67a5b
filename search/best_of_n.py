"""Best-of-N (the 'Rand' baseline): one model, N samples, the highest reward wins."""

from __future__ import annotations

from typing import Literal

from engine.types import Message, Prompt
from search.base import OneModel, Search, SearchContext, SearchResult


class BestOfNSettings(OneModel):
    kind: Literal["best_of_n"] = "best_of_n"


async def run(prompt: Prompt, ctx: SearchContext, settings: BestOfNSettings) -> SearchResult:
    search = Search(prompt, ctx, "best_of_n")
    (model,) = settings.models_used(ctx.pool.names)
    await sample_until_spent(search, model)
    return search.result()


async def sample_until_spent(search: Search, model: str, limit: int | None = None) -> None:
    """Sample `model` on the prompt until the budget (or `limit` samples) is spent.

    With a generation budget all samples go out in one batch, so the engine batches them
    and reuses the prompt's KV cache. Under a token budget they go one at a time, so the
    spend overshoots the token limit by at most one response.
    """
    messages = (Message("user", search.prompt.prompt),)
    made = 0
    while search.budget.can_generate() and (limit is None or made < limit):
        remaining = search.budget.remaining_generations()
        n = remaining if remaining is not None and search.ctx.budget.tokens is None else 1
        if limit is not None:
            n = min(n, limit - made)
        await search.sample(model, messages, n)
        made += n
