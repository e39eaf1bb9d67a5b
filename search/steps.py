"""Step-level search guided by a process reward: beam search and DVTS.

A solution is written one step at a time: each call continues a partial solution and
stops at the step separator. The reward (a process reward, engine.rewards.process) scores
every partial solution, and the search keeps the best to extend. Search-and-learn's two
methods (Snell et al. 2024; Beeching et al. 2024, "Scaling test-time compute with open
models"), sharing one loop here:
- beam search: one tree; each round keeps the best ceil(n / M) partial solutions and
  extends each up to M times (M = `beam_width`), n being the solutions still to finish;
- DVTS (diverse verifier tree search): N / M independent subtrees of width M; each
  round, each subtree keeps only its best partial solution and extends it M times, so the
  subtrees explore apart.

At budget N (`budget.generations`; N = M under a token limit alone) a search finishes
exactly N solutions: a generation here is a whole solution, however many step calls it
took, as in search-and-learn's plots (its "N"); every step call's tokens are charged, so
accuracy against tokens is the fair comparison with other methods. A step that does not
end at the separator (the model ended, or ran out of tokens), or is blank, finishes its
solution; after `max_steps` rounds, the last step of every unfinished solution is written
to its end. The answer is the finished solution with the highest reward
(search-and-learn's "naive" choice).

Where this differs from search-and-learn, and why:
- its beam search extends N partial solutions every round until N have finished, then
  keeps the best N of up to 2N - 1; here each round extends only the n still to finish,
  so a search at budget N writes N solutions, comparable with N samples of best-of-N;
- its DVTS subtree stops when its best candidate finishes and answers with that round's
  M candidates, finished or not; here a subtree goes on until M solutions are finished
  (a candidate that finishes before it is the best counts too), so every answer is a
  whole solution;
- its `lookahead` (greedy extra steps scored but not kept; its config's default is 1,
  the DVTS recipes 0) is not implemented: each step is scored as written.
"""

from __future__ import annotations

import asyncio
import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from multisample.engine.prompts import PromptFile
from multisample.engine.rewards.process import ProcessRewardSpec
from multisample.engine.traps import check_separator
from multisample.engine.types import Message, Prompt
from multisample.search.base import (
    BaseStrategySettings,
    Candidate,
    OneModel,
    Search,
    SearchContext,
    SearchResult,
    split_evenly,
)

if TYPE_CHECKING:
    from multisample.engine.config import BudgetConfig
    from multisample.engine.rewards.base import BaseRewardSpec

DEFAULT_SEPARATOR = "\n\n"
"""search-and-learn's step separator, for a reward that splits no steps of its own."""


class StepSearchSettings(OneModel):
    """What beam search and DVTS share (defaults: search-and-learn's)."""

    beam_width: int = Field(4, ge=1)
    """M: how many times a kept partial solution is extended each round (4)."""
    max_steps: int = Field(40, ge=1)
    """Rounds before the last step of every unfinished solution is written to its end
    (search-and-learn's num_iterations, 40)."""
    separator: str | None = Field(None, min_length=1)
    """What ends a step; None: the process reward's separator (or "\\n\\n" for a reward
    that has none). A separator of its own must match the process reward's."""
    filter_duplicates: bool = False
    """Keep one of partial solutions with the same text (search-and-learn's option, off
    by default there too)."""

    def sequential_rounds(self, budget: int, pool_models: list[str]) -> float:
        return self.max_steps  # at most; a round waits for its scores

    def check_run(self, reward: BaseRewardSpec, budget: BudgetConfig | None) -> None:
        own = reward.separator if isinstance(reward, ProcessRewardSpec) else None
        if self.separator is not None and own is not None and self.separator != own:
            raise ValueError(
                f"separator {self.separator!r} is not the reward's ({own!r}): the process "
                "reward would score other steps than the search takes"
            )

    def step_separator(self, reward: object) -> str:
        """What ends a step: its own separator, else the process reward's (a reward or
        its spec), else search-and-learn's."""
        return self.separator or getattr(reward, "separator", None) or DEFAULT_SEPARATOR

    @abstractmethod
    def keep(self, need: int) -> int:
        """How many partial solutions a subtree keeps with `need` solutions to finish."""

    @abstractmethod
    def subtrees(self, n: int) -> list[int]:
        """The widths of the subtrees a search at budget `n` grows (they sum to n)."""


class BeamSearchSettings(StepSearchSettings):
    kind: Literal["beam_search"] = "beam_search"

    def keep(self, need: int) -> int:
        return math.ceil(need / self.beam_width)

    def subtrees(self, n: int) -> list[int]:
        return [n]


class DVTSSettings(StepSearchSettings):
    kind: Literal["dvts"] = "dvts"

    def keep(self, need: int) -> int:
        return 1

    def subtrees(self, n: int) -> list[int]:
        return split_evenly(n, math.ceil(n / self.beam_width))


@dataclass
class Subtree:
    """One tree of partial solutions; it is done when `width` solutions are finished."""

    width: int
    frontier: list[Candidate | None] = field(default_factory=lambda: [None])
    """The partial solutions to extend next (None: the empty solution, at the start)."""
    finished: int = 0

    def need(self) -> int:
        return self.width - self.finished


async def run(prompt: Prompt, ctx: SearchContext, settings: StepSearchSettings) -> SearchResult:
    search = Search(prompt, ctx, settings.kind)
    (model,) = settings.models_used(ctx.pool.names)
    separator = settings.step_separator(ctx.reward)
    messages = (Message("user", prompt.prompt),)
    remaining = search.budget.remaining_generations()
    n = settings.beam_width if remaining is None else remaining
    trees = [Subtree(width) for width in settings.subtrees(n)] if n else []
    for step in range(settings.max_steps):
        growing = [t for t in trees if t.need() > 0 and t.frontier]
        if not growing or not search.budget.can_generate():
            break
        # The last round writes every unfinished solution to its end.
        stop = None if step == settings.max_steps - 1 else separator
        calls = [
            (
                tree,
                search.sample(
                    model,
                    messages,
                    times,
                    parents=() if parent is None else (parent.id,),
                    depth=step + 1,
                    step=step,
                    prefix="" if parent is None else parent.text,
                    separator=stop,
                ),
            )
            for tree in growing
            for parent, times in _expansions(tree.frontier, tree.need(), settings.beam_width)
        ]
        made = await asyncio.gather(*(call for _, call in calls))
        for tree in growing:
            children = [c for (t, _), cs in zip(calls, made, strict=True) if t is tree for c in cs]
            tree.finished += sum(not c.partial for c in children)
            partial = [c for c in children if c.partial]
            if settings.filter_duplicates:
                partial = list({c.text: c for c in reversed(partial)}.values())[::-1]
            tree.frontier = _best(partial, settings.keep(tree.need())) if tree.need() > 0 else []
    return search.result()


def check_separators(
    strategies: Sequence[tuple[str, BaseStrategySettings]],
    reward: BaseRewardSpec,
    prompts: PromptFile,
) -> None:
    """Each step-level strategy's separator occurs in the worked examples its prompts
    show (engine.traps.check_separator); ConfigError names the strategy's field."""
    for where, settings in strategies:
        if isinstance(settings, StepSearchSettings):
            check_separator(settings.step_separator(reward), prompts, f"{where}.separator")


def _expansions(
    frontier: list[Candidate | None], need: int, width: int
) -> list[tuple[Candidate | None, int]]:
    """How many times to extend each kept partial solution: `need` in all, round robin
    from the best, at most `width` each (the start, None, is extended `need` times)."""
    if frontier == [None]:
        return [(None, need)]
    counts = split_evenly(min(need, width * len(frontier)), len(frontier))
    return [(parent, count) for parent, count in zip(frontier, counts, strict=True) if count]


def _best(candidates: list[Candidate], k: int) -> list[Candidate]:
    """The k best-rewarded, best first; ties to the earlier candidate."""
    return sorted(candidates, key=lambda c: (-(c.reward or 0.0), c.id))[:k]
