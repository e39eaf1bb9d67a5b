"""The share of a prompt's verifiable constraints that a response meets."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from multisample.engine.rewards.base import BaseRewardSpec, Reward
from multisample.engine.rewards.constraints import fraction_met, parse_constraints
from multisample.engine.types import Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool


class VerifiableRewardSpec(BaseRewardSpec):
    """The share of a prompt's verifiable constraints a response meets (IFEval-style)."""

    kind: Literal["verifiable"]

    def build(self, pool: ModelPool) -> Reward:
        return VerifiableReward()


class VerifiableReward(Reward):
    """IFEval-style: each constraint is checked in code; the score is the fraction met."""

    name = "verifiable"

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        constraints = parse_constraints(prompt.constraints)
        return [fraction_met(constraints, response) for response in responses]
