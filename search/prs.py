"""PRS: Preference-guided Reflective Sampling with one policy model.

Ye et al., "Preference-Guided Reflective Sampling for Aligning Language Models",
EMNLP 2024. The policy answers the instruction with the user's preference appended
(x' = instruction + blank line + z), the best of that first layer (y*) gets one piece of
feedback written by the same model with respect to z, and a second layer refines y* given
that feedback. Candidates are both layers; the answer is the highest reward.

As the authors' code (nusnlp/PRS, generate_self_reflection.py): the feedback and corrector
prompts get x' as their question, and when the prompt has a preference of its own (a
per-example z) the reward scores x' too, so it judges the answer against that
preference (`score_preference`; False scores the original instruction). With the
default preference, the reward scores the original prompt.

Differences from the published recipe (docs/METHODS.md lists them all):
- Budget. The paper splits N samples as N0 = N1 = N/2 and does not count the feedback
  call. Here the feedback is a policy generation like any other, so it is charged to the
  budget B: N0 = ceil((B - 1) / 2), N1 = B - 1 - N0. Without feedback (the paper's
  ablation) N0 = ceil(B / 2), N1 = B - N0. Feedback needs B >= 3 to leave room for a
  refinement; below that the run is the no-feedback layout (B = 2: one sample, one
  refinement; B = 1: one sample). B is the search's remaining generation limit, or
  `settings.n` when the budget limits tokens only.
- Token budgets. When the budget has a token limit, every generation goes out alone and
  the search stops as soon as the budget is spent (overshooting by at most one response),
  wherever that happens: in the first layer, before the feedback, or among refinements.
  With only a generation limit each layer is one batch.
- Without feedback the refinement prompt is the project's `refine` template, whose
  question is x' (instruction + preference), so the preference still guides it.
- Published sampling (temperature 0.8, top_p 1, top_k 50, presence penalty 1.2) is
  applied to every policy call by default (`published_sampling`); a model's own sampling
  override in the pool config still wins over it (docs/METHODS.md says so).

Tree: first-layer samples hang off the prompt (depth 1, step 0); the feedback is a child
of y* (depth 2, step 1, reward None); refinements are children of y* and the feedback
(depth 3, step 2), or of y* alone without feedback (depth 2, step 2). Depth is one more
than the deepest parent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Literal, cast

from pydantic import Field

from multisample.engine.rewards.base import Reward
from multisample.engine.types import Message, Prompt, SamplingSettings
from multisample.search.base import Candidate, OneModel, Search, SearchContext, SearchResult

DEFAULT_PREFERENCE = (
    "I prefer responses that are informative, precise, creative, detailed, relevant, and in-depth."
)
PUBLISHED_SAMPLING = {"temperature": 0.8, "top_p": 1.0, "top_k": 50, "presence_penalty": 1.2}


class PRSSettings(OneModel):
    kind: Literal["prs"] = "prs"
    preference: str = DEFAULT_PREFERENCE
    """The user preference z appended to the instruction; a prompt's own `preference`
    takes its place."""
    feedback: bool = True
    """Have the policy write feedback on y* before refining it; False is the paper's
    no-feedback ablation (refine y* directly)."""
    n: int = Field(16, ge=1)
    """Total generations B when the budget limits tokens only; a generation limit, when
    set, is used instead."""
    sampling: SamplingSettings | None = None
    """Sampling of every policy call; None takes the run's sampling."""
    score_preference: bool = True
    """When the prompt has its own `preference`, the reward scores x' (instruction +
    preference) instead of the instruction, as the authors' code does; a reward then
    sees what the user asked for. Without a per-prompt preference the reward always
    scores the original prompt."""
    published_sampling: bool = True
    """Override temperature, top_p, top_k and presence_penalty with the published values
    (0.8, 1, 50, 1.2); other fields (max_tokens, stop, ...) stay as configured."""

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return 3 if budget >= 3 else 2  # samples, feedback, refinements


def layer_sizes(budget: int, feedback: bool) -> tuple[int, int, bool]:
    """(N0, N1, whether feedback is written) for a budget of `budget` generations.

    The feedback call counts against the budget; feedback needs B >= 3 so that at least
    one refinement follows it.
    """
    if budget <= 0:
        return 0, 0, False
    if feedback and budget >= 3:
        n0 = math.ceil((budget - 1) / 2)
        return n0, budget - 1 - n0, True
    n0 = math.ceil(budget / 2)
    return n0, budget - n0, False


class _ScoresAnotherPrompt:
    """The run's reward, scoring `scored` (the prompt with x' as its text) whatever
    prompt it is given; the rest of the record (id, reference, constraints) is kept."""

    def __init__(self, reward: Reward, scored: Prompt) -> None:
        self.reward = reward
        self.scored = scored

    async def score(
        self, prompt: Prompt, responses: Sequence[str], reference: str | None = None
    ) -> list[float]:
        return await self.reward.score(self.scored, responses, reference)


async def run(prompt: Prompt, ctx: SearchContext, settings: PRSSettings) -> SearchResult:
    preference = prompt.preference or settings.preference
    # Step 1: x' = instruction + blank line + z.
    augmented = f"{prompt.prompt}\n\n{preference}"
    if prompt.preference is not None and settings.score_preference:
        # A per-example preference: the reward judges against it (the authors' choice).
        scored = prompt.model_copy(update={"prompt": augmented})
        ctx = replace(ctx, reward=cast(Reward, _ScoresAnotherPrompt(ctx.reward, scored)))
    search = Search(prompt, ctx, "prs")
    (model,) = settings.models_used(ctx.pool.names)
    sampling = settings.sampling or ctx.sampling
    if settings.published_sampling:
        sampling = sampling.model_copy(update=PUBLISHED_SAMPLING)

    remaining = search.budget.remaining_generations()
    n0, n1, with_feedback = layer_sizes(
        settings.n if remaining is None else remaining, settings.feedback
    )

    async def layer(messages: tuple[Message, ...], n: int, **options: Any) -> list[Candidate]:
        return await search.sample_until_spent(model, messages, n, sampling=sampling, **options)

    # Step 2: N0 responses to x'; y* = argmax of the reward.
    first = await layer((Message("user", augmented),), n0, action="generate", depth=1, step=0)
    if not first or n1 == 0:
        return search.result()
    best = max(first, key=lambda c: c.reward if c.reward is not None else -math.inf)

    if with_feedback:
        # Step 3: the policy writes one piece of feedback on y* with respect to z, on
        # x' as the authors' reflective input. It is not an answer: not scored.
        feedback_prompt = ctx.templates["feedback"].format(
            question=augmented, answer=best.text, preference=preference
        )
        notes = await layer(
            (Message("user", feedback_prompt),),
            1,
            action="feedback",
            parents=(best.id,),
            depth=2,
            step=1,
            score=False,
        )
        if not notes:
            return search.result()
        (note,) = notes
        # Step 4: N1 refinements of y* given the feedback (the corrector prompt).
        refine_prompt = ctx.templates["corrector"].format(
            question=augmented, answer=best.text, preference=preference, feedback=note.text
        )
        parents, depth = (best.id, note.id), 3
    else:
        # Step 4 of the no-feedback ablation: the project's plain `refine` template, with
        # x' as the question so that the preference still guides the refinement.
        refine_prompt = ctx.templates["refine"].format(question=augmented, answer=best.text)
        parents, depth = (best.id,), 2
    await layer(
        (Message("user", refine_prompt),),
        n1,
        action="refine",
        parents=parents,
        depth=depth,
        step=2,
    )
    # Step 5: candidates = both layers (and the feedback node); answer = argmax reward.
    return search.result()
