"""Process rewards: a score for every step of a solution, aggregated into one.

A response is split into steps at the reward's `separator` (empty steps dropped); the
reward scores each step prefix (steps 1..k, for every k) and aggregates the step scores as
search-and-learn does: `last` (the score of the whole solution so far, its default),
`min` (the weakest step) or `prod` (every step right). A response with no step scores 0.
As a `Reward` it scores a whole answer (best-of-N, weighted best-of-N, TOA, PRS use it so);
step-level search (beam search, DVTS) scores each partial solution with it.

Kinds here:
- `arithmetic_steps`: the exact step checker of generated arithmetic (engine.arithmetic).
  Step k is right when every equation in it holds and its result is the k-th
  intermediate result of the problem (after the last operation: the answer), recomputed
  from the problem the prompt carries; the last step of a finished solution is right
  only when it reaches the answer (a solution that stopped early with every step right
  is wrong), while an unfinished one (`Reward.unfinished`, a step-level search's partial
  solution) is judged on the steps it has. A real verifier for that task family.
- `step_judge`: a pool model rates the solution so far, 0-9, read as the judge reward
  reads its rating (the expected digit), over a template for partial solutions.
Real process reward models (Qwen2.5-Math-PRM, RLHFlow's PRMs) are engine.rewards.prm.
"""

from __future__ import annotations

import math
import re
from abc import abstractmethod
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from multisample.engine.answers import extract_answer
from multisample.engine.arithmetic import apply, problem_of
from multisample.engine.rewards.base import BaseRewardSpec, Reward, RewardError
from multisample.engine.rewards.judge import JudgeReward, judge_template
from multisample.engine.types import Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool

Aggregate = Literal["last", "min", "prod"]


def split_steps(text: str, separator: str) -> list[str]:
    """The steps of a solution: its text split at `separator`, blank pieces dropped."""
    return [step for step in text.split(separator) if step.strip()]


def aggregate(scores: Sequence[float], how: Aggregate) -> float:
    """One score from a solution's step scores (0 for a solution with no step)."""
    if not scores:
        return 0.0
    if how == "last":
        return float(scores[-1])
    if how == "min":
        return float(min(scores))
    return float(math.prod(scores))


class ProcessRewardSpec(BaseRewardSpec):
    """What every process reward's config has: how steps are split and aggregated."""

    separator: str = Field("\n\n", min_length=1)
    """What ends a step: the solution is split here (and step-level search stops each
    step here, unless its own `separator` is set)."""
    aggregate: Aggregate = "last"
    """How the step scores become one: `last` (search-and-learn's default), `min` or
    `prod`."""


class ProcessReward(Reward):
    """Scores each step prefix of a solution; `score` gives their aggregate."""

    def __init__(self, separator: str, how: Aggregate) -> None:
        super().__init__()
        self.separator = separator
        self.how = how

    def identity(self) -> str:
        return f"{self.name}:{self.separator!r}:{self.how}"

    async def score_steps(self, prompt: Prompt, responses: Sequence[str]) -> list[list[float]]:
        """Every step's score of each response (its steps split at the separator)."""
        return await self._score_steps(prompt, [split_steps(r, self.separator) for r in responses])

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        solutions = [split_steps(r, self.separator) for r in responses]
        if self.how == "last":  # only the whole solution's score is needed
            last = await self._score_steps(prompt, solutions, last=True)
            return [aggregate(scores, "last") for scores in last]
        return [aggregate(s, self.how) for s in await self._score_steps(prompt, solutions)]

    @abstractmethod
    async def _score_steps(
        self, prompt: Prompt, solutions: list[list[str]], last: bool = False
    ) -> list[list[float]]:
        """Each solution's step scores, one per step (of its steps 1..k); with `last`,
        only the last step's (a list of one, or none for a solution without steps)."""


# --- the arithmetic step checker --------------------------------------------------------

_EQUATION = re.compile(r"(-?\d+)\s*([-+*/x×÷])\s*(-?\d+)\s*=\s*(-?\d+)")
_SYMBOLS = {"x": "*", "×": "*", "÷": "/"}


def step_result(step: str) -> int | None:
    """What a step of a worked arithmetic solution computes: the result of its last
    equation; without one, its answer as `extract_answer` reads a response's (\\boxed{32},
    "The answer is 32", the last number). None when an equation in it is false, or it has
    no number."""
    equations = _EQUATION.findall(step)
    for left, symbol, right, result in equations:
        operation = _SYMBOLS.get(symbol, symbol)
        if operation == "/" and (int(right) == 0 or int(left) % int(right)):
            return None
        if apply(int(left), operation, int(right)) != int(result):
            return None
    if equations:
        return int(equations[-1][3])
    answer = extract_answer(step)
    try:
        return int(answer.replace(",", "")) if answer is not None else None
    except ValueError:
        return None


def check_steps(steps: Sequence[str], values: Sequence[int], finished: bool = True) -> list[float]:
    """1 for each step that computes the next intermediate result of the problem whose
    start and results are `values` (a step past the last operation: the answer), else 0.
    The last step of a `finished` solution must compute the answer itself."""
    expected = list(values[1:])
    targets = [expected[min(k, len(expected) - 1)] for k in range(len(steps))]
    if finished and steps:
        targets[-1] = expected[-1]
    return [float(step_result(step) == target) for step, target in zip(steps, targets, strict=True)]


class ArithmeticStepsSpec(ProcessRewardSpec):
    """The exact step checker of generated arithmetic (prompts: {generate: arithmetic})."""

    kind: Literal["arithmetic_steps"]
    separator: str = Field("\n", min_length=1)
    """What ends a step: a line, as the problems' worked example writes them."""

    def build(self, pool: ModelPool) -> Reward:
        return ArithmeticStepsReward(self.separator, self.aggregate)


class ArithmeticStepsReward(ProcessReward):
    name = "arithmetic_steps"

    def __init__(self, separator: str, how: Aggregate, finished: bool = True) -> None:
        super().__init__(separator, how)
        self.finished = finished

    def identity(self) -> str:
        return f"{super().identity()}:{'finished' if self.finished else 'unfinished'}"

    @cached_property
    def unfinished(self) -> Reward:
        return ArithmeticStepsReward(self.separator, self.how, finished=False)

    async def _score_steps(
        self, prompt: Prompt, solutions: list[list[str]], last: bool = False
    ) -> list[list[float]]:
        problem = problem_of(prompt)
        if problem is None:
            raise RewardError(
                f"reward 'arithmetic_steps': prompt {prompt.id!r} is no generated arithmetic "
                "problem (prompts: {generate: arithmetic})"
            )
        values = problem.values()
        scores = [check_steps(steps, values, self.finished) for steps in solutions]
        return [s[-1:] for s in scores] if last else scores


# --- an LLM judge of partial solutions --------------------------------------------------

STEP_TEMPLATE = (
    "Below are a problem and the start of a solution. Rate how likely it is that every "
    "step so far is correct and leads to the right answer, on a scale from 0 (surely "
    "wrong) to 9 (surely right). Reply with a single digit.\n\n"
    "Problem:\n{question}\n\n"
    "Solution so far:\n{answer}\n\n"
    "Rating (0-9):"
)


class StepJudgeSpec(ProcessRewardSpec):
    """A pool model rates each partial solution 0-9 (the expected digit, as `judge`)."""

    kind: Literal["step_judge"]
    model: str
    """Name of the pool model that judges."""
    template: str | None = None
    """Path of a template file overriding the built-in one; it must use {answer} (the
    solution so far) and may use {question}; checked before any engine starts."""

    def build(self, pool: ModelPool) -> Reward:
        template = judge_template(pool, self.model, self.template, STEP_TEMPLATE)
        judge = JudgeReward(pool, self.model, use_reference=False, template=template)
        return StepJudgeReward(self.separator, self.aggregate, judge)


class StepJudgeReward(ProcessReward):
    name = "step_judge"

    def __init__(self, separator: str, how: Aggregate, judge: JudgeReward) -> None:
        super().__init__(separator, how)
        self.judge = judge

    def identity(self) -> str:
        return f"{super().identity()}:{self.judge.identity()}"

    def missing_scores(self) -> int:
        return self.judge.missing_scores()

    async def _score_steps(
        self, prompt: Prompt, solutions: list[list[str]], last: bool = False
    ) -> list[list[float]]:
        # Every prefix to be scored, judged in one batch (the judge caches repeats).
        prefixes = [
            [self.separator.join(steps[:k]) for k in range(first, len(steps) + 1)]
            for steps in solutions
            for first in [max(len(steps), 1) if last else 1]
        ]
        flat = [text for texts in prefixes for text in texts]
        scores = iter(await self.judge.score(prompt, flat) if flat else [])
        return [[next(scores) for _ in texts] for texts in prefixes]
