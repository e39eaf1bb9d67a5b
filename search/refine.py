"""Sequential refine: chains of the K models, each refining the previous answer.

The sequential-refine baseline of the TOA paper (Ye et al., 2025, "Multi-Agent Sampling:
Scaling Inference Compute for Data Synthesis with Tree Search-Based Agentic
Collaboration"), as docs/METHODS.md ("refine") describes it. Rounds repeat until
the budget is spent; each round shuffles the model order and chains the models: the
first generates from the prompt, each next one refines the answer just before it in the
chain (the refine template holds the question and that answer). Every answer is a
candidate, scored against the original prompt, never against the refine prompt.

Project choices that the paper leaves open:
- Each round's order is `random.Random(derive_seed(seed, prompt id, "refine", round))`
  shuffling the configured model list, so it is reproducible per prompt and independent
  of any other prompt's search.
- A chain does not carry over between rounds: every round starts afresh from the prompt.
- The budget may end mid-chain; the last round is then a prefix of its chain.
- `depth` is the position in the chain (1-based); `step` is the round (0-based).
"""

from __future__ import annotations

import random
from typing import Literal

from multisample.engine.seeds import derive_seed
from multisample.engine.types import Message, Prompt
from multisample.search.base import Candidate, ManyModels, Search, SearchContext, SearchResult


class RefineSettings(ManyModels):
    kind: Literal["refine"] = "refine"

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return budget  # the chains' steps and the rounds are all sequential


def round_order(models: list[str], seed: int, prompt_id: str, round_index: int) -> list[str]:
    """The chain order of one round: the models shuffled by a per-round seed."""
    order = list(models)
    random.Random(derive_seed(seed, prompt_id, "refine", round_index)).shuffle(order)
    return order


async def run(prompt: Prompt, ctx: SearchContext, settings: RefineSettings) -> SearchResult:
    search = Search(prompt, ctx, "refine")
    models = settings.models_used(ctx.pool.names)
    template = ctx.templates["refine"]
    round_index = 0
    while search.budget.can_generate():
        previous: Candidate | None = None
        for depth, model in enumerate(round_order(models, ctx.seed, prompt.id, round_index), 1):
            # Checked before every call, so a token budget overshoots by one response at most.
            if not search.budget.can_generate():
                break
            if previous is None:
                # The head of the chain answers the prompt itself.
                (previous,) = await search.sample(
                    model,
                    (Message("user", prompt.prompt),),
                    action="generate",
                    depth=depth,
                    step=round_index,
                )
            else:
                # Each next model refines the answer just before it.
                message = template.format(question=prompt.prompt, answer=previous.text)
                (previous,) = await search.sample(
                    model,
                    (Message("user", message),),
                    action="refine",
                    parents=(previous.id,),
                    depth=depth,
                    step=round_index,
                )
        round_index += 1
    return search.result()
