"""Mixture-of-Agents: layers of the K models, each layer synthesizing the one before.

Mixture-of-Agents (Wang et al., 2024, "Mixture-of-Agents Enhances Large Language Model
Capabilities"), in the repeated-block form that the TOA paper (Ye et al., 2025) uses as
a baseline (docs/METHODS.md, "moa"). Layer 1 of a block: every
model answers the prompt. Each later layer: every model answers the aggregate template,
which shows the previous layer's answers as numbered references to synthesize from.
Blocks of `layers_per_block` layers repeat until the budget is spent. Every answer of
every layer is a candidate, scored against the original prompt.

As the authors' AlpacaEval / UltraFeedback scripts: blocks of 4 layers (`n_iter=4`; 3 is
their translation setting), and the aggregator prompt with the references is a system
message, the question the user turn (`aggregator_role: system`). A model whose pool
config has its own `system_prompt` gets the user-turn form instead (the project's
`aggregate` template: question and references in one user turn), because many chat
templates take one system message only; `aggregator_role: user` sends that form to
every model.

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
from collections.abc import Callable, Sequence
from functools import partial
from typing import Literal

from pydantic import Field

from multisample.engine.types import Message, Prompt
from multisample.search.base import (
    Action,
    Candidate,
    ManyModels,
    Search,
    SearchContext,
    SearchResult,
)


class MoASettings(ManyModels):
    kind: Literal["moa"] = "moa"
    layers_per_block: int = Field(4, ge=1)
    """Layers of one block: the first answers the prompt, each next one aggregates the
    layer before it. Blocks repeat until the budget is spent. 4 as the authors'
    AlpacaEval and UltraFeedback scripts (3 is their translation setting)."""
    aggregator_role: Literal["system", "user"] = "system"
    """How an aggregating layer is asked. system (the authors'): the `aggregate_system`
    template with the references as a system message, then the question as the user
    turn; a model with its own `system_prompt` gets the user form. user: the `aggregate`
    template, question and references together, as the one user turn."""

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return math.ceil(budget / len(self.models_used(pool_models)))  # layers


def format_references(answers: Sequence[Candidate]) -> str:
    """The previous layer's answers, numbered from 1, as the aggregate template shows them."""
    return "\n\n".join(f"{i}. {answer.text}" for i, answer in enumerate(answers, 1))


def aggregate_messages(
    templates: dict[str, str],
    role: Literal["system", "user"],
    question: str,
    references: str,
    own_system_prompt: str | None,
) -> tuple[Message, ...]:
    """What an aggregating model is sent: the aggregator as a system message and the
    question as the user turn, or (role user, or a model with a system prompt of its
    own, which most chat templates would not take a second of) one user turn."""
    if role == "system" and own_system_prompt is None:
        system = templates["aggregate_system"].format(references=references)
        return (Message("system", system), Message("user", question))
    return (
        Message("user", templates["aggregate"].format(question=question, references=references)),
    )


async def run_layer(
    search: Search,
    models: Sequence[str],
    messages: Callable[[str], Sequence[Message]],
    *,
    concurrent: bool,
    action: Action,
    parents: tuple[int, ...],
    depth: int,
    step: int,
) -> list[Candidate]:
    """One layer: each model answers `messages(model)` once, as far as the budget allows."""

    async def call(model: str) -> Candidate:
        (made,) = await search.sample(
            model, messages(model), action=action, parents=parents, depth=depth, step=step
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
    concurrent = ctx.budget.tokens is None

    def sent(model: str, references: str | None) -> tuple[Message, ...]:
        """The messages `model` gets: the prompt, or (`references` given) the aggregator."""
        if references is None:
            return (Message("user", prompt.prompt),)
        own = ctx.pool.spec(model).system_prompt
        return aggregate_messages(
            ctx.templates, settings.aggregator_role, prompt.prompt, references, own
        )

    layer_index = 0  # over all blocks: the candidates' step
    previous: list[Candidate] = []
    while search.budget.can_generate():
        depth = layer_index % settings.layers_per_block + 1
        references: str | None = None
        if depth == 1:
            # First layer of a block: every model answers the prompt.
            action: Action = "generate"
            parents: tuple[int, ...] = ()
        else:
            # Later layer: every model synthesizes the previous layer's answers.
            action = "aggregate"
            parents = tuple(c.id for c in previous)
            references = format_references(previous)
        previous = await run_layer(
            search,
            models,
            partial(sent, references=references),
            concurrent=concurrent,
            action=action,
            parents=parents,
            depth=depth,
            step=layer_index,
        )
        layer_index += 1
    return search.result()
