"""Rewards made of other rewards or of user code."""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from multisample.engine.config import Settings
from multisample.engine.rewards.base import BaseRewardSpec, Reward, RewardError
from multisample.engine.types import Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool


class WeightedComponent(Settings):
    weight: float
    """Multiplies this component's score; weights need not sum to 1."""
    # The union of every reward kind, this one included: the registry defines it (from
    # this module among others) and resolves this name once it exists.
    reward: RewardSpec  # noqa: F821
    """The component reward (any kind, weighted ones included)."""


class WeightedRewardSpec(BaseRewardSpec):
    """A weighted sum of other rewards (e.g. Self-J's judge + reference similarity)."""

    kind: Literal["weighted"]
    components: list[WeightedComponent] = Field(min_length=1)
    """The rewards summed, each with its weight."""

    def build(self, pool: ModelPool) -> Reward:
        return WeightedReward([(c.weight, c.reward.build(pool)) for c in self.components])


class CallableRewardSpec(BaseRewardSpec):
    """A user function `f(prompt: str, responses: list[str], reference: str | None)`
    returning one float per response (sync or async)."""

    kind: Literal["callable"]
    path: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    """Import path as 'package.module:function'."""

    def build(self, pool: ModelPool) -> Reward:
        return CallableReward(self.path)


class WeightedReward(Reward):
    """sum_i w_i * reward_i: e.g. Self-J's mix of a judge with reference similarity."""

    name = "weighted"

    def __init__(self, components: Sequence[tuple[float, Reward]]) -> None:
        super().__init__()
        self.components = list(components)

    def identity(self) -> str:
        return "weighted:" + ",".join(f"{w}*{r.identity()}" for w, r in self.components)

    @cached_property
    def unfinished(self) -> Reward:
        parts = [(w, r.unfinished) for w, r in self.components]
        same = all(p is r for (_, p), (_, r) in zip(parts, self.components, strict=True))
        return self if same else WeightedReward(parts)

    def missing_scores(self) -> int:
        return sum(r.missing_scores() for _, r in self.components)

    async def start(self) -> None:
        await asyncio.gather(*(r.start() for _, r in self.components))

    async def close(self) -> None:
        await asyncio.gather(*(r.close() for _, r in self.components))

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        parts = await asyncio.gather(
            *(r.score(prompt, responses, reference) for _, r in self.components)
        )
        weights = [w for w, _ in self.components]
        return [
            sum(w * s for w, s in zip(weights, col, strict=True))
            for col in zip(*parts, strict=True)
        ]


def import_callable(path: str) -> Callable[..., Any]:
    """'package.module:function' -> the function, or a RewardError saying what is wrong."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise RewardError(f"callable reward {path!r}: cannot import {module_name}: {exc}") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise RewardError(f"callable reward {path!r}: {module_name} has no function {attr!r}")
    return function


class CallableReward(Reward):
    """A user function `f(prompt, responses, reference) -> list[float]`, sync or async.

    A sync function runs in a worker thread so a slow one does not stall the engines.
    """

    name = "callable"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.function = import_callable(path)

    def identity(self) -> str:
        return f"callable:{self.path}"

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        if inspect.iscoroutinefunction(self.function):
            scores = await self.function(prompt.prompt, list(responses), reference)
        else:
            scores = await asyncio.to_thread(
                self.function, prompt.prompt, list(responses), reference
            )
        try:
            return [float(s) for s in scores]
        except (TypeError, ValueError):
            raise RewardError(
                f"callable reward {self.path!r} must return a list of numbers, got {scores!r:.200}"
            ) from None
