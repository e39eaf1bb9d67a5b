"""Mixture-of-Agents: layers of the K models, each layer synthesizing the one before.

Mixture-of-Agents (Wang et al., 2024, "Mixture-of-Agents Enhances Large Language Model
Capabilities"), in the repeated-block form that the TOA paper (Ye et al., 2025) uses as
a baseline (docs/METHODS.md, "moa"). Layer 1 of a block: every
model answers the prompt. Each later layer: every model answers the aggregate template,
which shows the previous layer's answers as numbered references to synthesize from.
Blocks of `layers_per_block` layers repeat until the budget is spent. Every answer of
every layer is a candidate, scored against the original prompt.

Project choices that the papers leave open, or where the project differs:
- Unlike the original MoA, the last layer has all K models too (not one aggregator),
  and every layer's answers are candidates (as the TOA paper's baseline does).
- A new block starts afresh from the prompt; it does not see the previous block.
- When fewer than K generations are left, the last layer uses the first `remaining`
  models of the configured list.
- The models of a layer are called concurrently, so the engines batch them, when the
  budget has no token limit. With a token limit they are called one at a time, checking
  the budget before each call, so the spend overshoots the token limit by at most one
  response (as BudgetConfig promises); a layer may then stop part-way.
- `depth` is the layer within its block (1-based); `step` counts layers over all
  blocks (0-based).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from engine.types import Message, Prompt
from search.base import Action, Candidate, ManyModels, Search, SearchContext, SearchResult


class MoASettings(ManyModels):
    kind: Literal["moa"] = "moa"
    layers_per_block: int = Field(3, ge=1)
    """Layers of one block: the first answers the prompt, each next one aggregates the
    layer before it. Blocks repeat until the budget is spent."""

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return math.ceil(budget / len(self.models_used(pool_models)))  # layers


def format_references(answers: Sequence[Candidate]) -> str:
    """The previous layer's answers, numbered from 1, as the aggregate template shows them."""
    return "\n\n".join(f"{i}. {answer.text}" for i, answer in enumerate(answers, 1))


async def run_layer(
    search: Search,
    models: Sequence[str],
    messages: Sequence[Message],
    *,
    concurrent: bool,
    action: Action,
    parents: tuple[int, ...],
    depth: int,
    step: int,
) -> list[Candidate]:
    """One layer: each model answers `messages` once, as far as the budget allows."""

    async def call(model: str) -> Candidate:
        (made,) = await search.sample(
            model, messages, action=action, parents=parents, depth=depth, step=step
        )
        return made

    if concurrent:
        # All at once so the engines batch them; a short budget cuts the layer to the
        # first `remaining` models.
        remaining = search.budget.remaining_generations()
        chosen = models if remaining is None else models[:remaining]
        return list(await asyncio.gather(*(call(m) for m in chosen)))
    # One at a time, checking the budget before each call (a token limit is set).
    made: list[Candidate] = []
    for model in models:
        if not search.budget.can_generate():
            break
        made.append(await call(model))
    return made


async def run(prompt: Prompt, ctx: SearchContext, settings: MoASettings) -> SearchResult:
    search = Search(prompt, ctx, "moa")
    models = settings.models_used(ctx.pool.names)
    template = ctx.templates["aggregate"]
    concurrent = ctx.budget.tokens is None
    layer_index = 0  # over all blocks: the candidates' step
    previous: list[Candidate] = []
    while search.budget.can_generate():
        depth = layer_index % settings.layers_per_block + 1
        if depth == 1:
            # First layer of a block: every model answers the prompt.
            action: Action = "generate"
            parents: tuple[int, ...] = ()
            content = prompt.prompt
        else:
            # Later layer: every model synthesizes the previous layer's answers.
            action = "aggregate"
            parents = tuple(c.id for c in previous)
            content = template.format(
                question=prompt.prompt, references=format_references(previous)
            )
        previous = await run_layer(
            search,
            models,
            (Message("user", content),),
            concurrent=concurrent,
            action=action,
            parents=parents,
            depth=depth,
            step=layer_index,
        )
        layer_index += 1
    return search.result()
