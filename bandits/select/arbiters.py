"""Arbiters: who decides, for each query of a round, which of the pair's two answers is
preferred. A reward (any reward of `synthesize`, judges included) or a person."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from rich.columns import Columns
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from multisample.engine.rewards.base import Reward
from multisample.engine.terminal import printable
from multisample.engine.types import Prompt


@dataclass(frozen=True)
class Verdict:
    """One query of a round: the answers and which one the arbiter preferred."""

    query: Prompt
    answers: tuple[str, str]
    scores: tuple[float | None, float | None]
    preferred: int | None
    """0 or 1: whose answer won; None for a tie."""


class Arbiter(Protocol):
    async def __call__(
        self, queries: list[Prompt], first: list[str], second: list[str]
    ) -> list[Verdict]: ...


class RewardArbiter:
    """Prefers the answer the reward scores higher (by more than the tie margin)."""

    def __init__(self, reward: Reward, tie_margin: float) -> None:
        self.reward = reward
        self.tie_margin = tie_margin

    async def scores(self, queries: list[Prompt], answers: list[str]) -> list[float]:
        scored = await asyncio.gather(
            *(self.reward.score(q, [a]) for q, a in zip(queries, answers, strict=True))
        )
        return [s[0] for s in scored]

    async def __call__(
        self, queries: list[Prompt], first: list[str], second: list[str]
    ) -> list[Verdict]:
        a, b = await asyncio.gather(self.scores(queries, first), self.scores(queries, second))
        return [
            Verdict(q, (x, y), (sx, sy), None if abs(sx - sy) <= self.tie_margin else int(sy > sx))
            for q, x, y, sx, sy in zip(queries, first, second, a, b, strict=True)
        ]


class HumanArbiter:
    """Shows both answers side by side, in random order so that position tells nothing,
    and asks which is better. 'q' (or the end of input) stops after the queries judged."""

    def __init__(self, console: Console, ask: Callable[[str], str], seed: int) -> None:
        self.console = console
        self.ask = ask
        self.coin = random.Random(seed)

    async def __call__(
        self, queries: list[Prompt], first: list[str], second: list[str]
    ) -> list[Verdict]:
        verdicts: list[Verdict] = []
        for query, x, y in zip(queries, first, second, strict=True):
            swap = self.coin.random() < 0.5
            answers = (y, x) if swap else (x, y)
            self.console.rule(Text(f"query {printable(query.id)}"))
            for turn in query.history:  # the conversation so far, then the query
                self.console.print(Text(f"[{turn.role}] {printable(turn.content)}", style="dim"))
            self.console.print(Text(printable(query.prompt)))
            panels = [
                Panel(Text(printable(text) or "(empty)"), title=str(i + 1))
                for i, text in enumerate(answers)
            ]
            self.console.print(Columns(panels, equal=True, expand=True))
            choice = self._choice()
            if choice == "q":
                break
            preferred = None if choice == "t" else (int(choice) - 1) ^ int(swap)
            verdicts.append(Verdict(query, (x, y), (None, None), preferred))
        return verdicts

    def _choice(self) -> str:
        while True:
            try:
                answer = self.ask("better answer: 1, 2, t (tie), q (stop) > ").strip().lower()
            except EOFError:
                return "q"
            if answer in {"1", "2", "t", "q"}:
                return answer
            self.console.print("type 1, 2, t or q", style="red")
