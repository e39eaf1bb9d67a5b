"""The share of a prompt's verifiable constraints that a response meets."""

from __future__ import annotations

from engine.rewards.base import Reward
from engine.rewards.constraints import fraction_met, parse_constraints
from engine.types import Prompt


class VerifiableReward(Reward):
    """IFEval-style: each constraint is checked in code; the score is the fraction met."""

    name = "verifiable"

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        constraints = parse_constraints(prompt.constraints)
        return [fraction_met(constraints, response) for response in responses]
