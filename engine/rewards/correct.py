"""Whether a response's final answer is the prompt's reference answer: 1 or 0.

The answer is read with the prompt's extractors (engine.answers: `\\boxed{}`, "the answer
is", the last number) and compared exactly (numbers as fractions; math-verify where it is
installed). A response with no answer to read scores 0. Every prompt needs a reference:
one without, or with one that cannot be read, is refused before any engine starts
(engine.traps)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from multisample.engine.answers import EXTRACTORS, equivalent, extract_answer
from multisample.engine.rewards.base import BaseRewardSpec, Reward, RewardError
from multisample.engine.types import Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool


class CorrectRewardSpec(BaseRewardSpec):
    """1 when the response's final answer is the prompt's reference answer, else 0."""

    kind: Literal["correct"]

    def build(self, pool: ModelPool) -> Reward:
        return CorrectReward()


class CorrectReward(Reward):
    name = "correct"

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        if reference is None:
            raise RewardError(f"reward 'correct': prompt {prompt.id!r} has no reference answer")
        extractors = prompt.extract or EXTRACTORS
        answers = [extract_answer(response, extractors) for response in responses]
        return [float(a is not None and equivalent(a, reference)) for a in answers]
