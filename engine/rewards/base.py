"""One interface for every scorer: `await reward.score(prompt, responses, reference)`."""

from __future__ import annotations

import hashlib
import json
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import cached_property
from typing import TYPE_CHECKING

from multisample.engine.config import Settings
from multisample.engine.types import Prompt

if TYPE_CHECKING:
    from multisample.engine.pool import ModelPool


class RewardError(RuntimeError):
    """A reward could not be computed; the message says which reward and why."""


class BaseRewardSpec(Settings):
    """A reward's config (the `reward` of a run): a `kind` literal, the reward's own
    fields, and the reward it builds."""

    @abstractmethod
    def build(self, pool: ModelPool) -> Reward:
        """The reward this spec describes, not started; judges call models of `pool`.
        What only the reward needs (model libraries) is imported here or later, never
        at the top of its module, so that a run without it never imports it."""


class Reward(ABC):
    """Scores responses to one prompt, batched, with a cache keyed by content hash.

    Subclasses implement `_score` for the responses not yet in the cache; they add no
    parameters to `score`. `calls` counts responses actually scored (cache misses).
    """

    name: str = "reward"

    def __init__(self) -> None:
        self._cache: dict[str, float] = {}
        self.calls = 0

    def identity(self) -> str:
        """What distinguishes this scorer's results from another's (part of cache keys)."""
        return self.name

    @cached_property
    def unfinished(self) -> Reward:
        """The reward of an unfinished solution (a step-level search's partial candidate,
        cut at a step boundary): this one, for a reward that scores any text alike. A
        reward that judges a finished answer otherwise (it must reach the answer) gives
        another here, with its own identity."""
        return self

    def missing_scores(self) -> int:
        """Responses scored so far whose score stands in for one the scorer could not
        give (a judge that named no digit); runs report it, so a stand-in is never
        silent. 0 for scorers that always give one."""
        return 0

    async def start(self) -> None:
        """Acquire resources (load models). Idempotent."""

    async def close(self) -> None:
        """Release resources. Idempotent."""

    async def score(
        self, prompt: Prompt, responses: Sequence[str], reference: str | None = None
    ) -> list[float]:
        """One score per response, higher is better. `reference` defaults to the prompt's."""
        reference = prompt.reference if reference is None else reference
        keys = [self._key(prompt, response, reference) for response in responses]
        todo: dict[str, str] = {}
        for key, response in zip(keys, responses, strict=True):
            if key not in self._cache:
                todo.setdefault(key, response)
        if todo:
            scores = [float(s) for s in await self._score(prompt, list(todo.values()), reference)]
            if len(scores) != len(todo):
                raise RewardError(
                    f"reward {self.name!r} returned {len(scores)} scores for {len(todo)} responses"
                )
            # A NaN would silently lose every comparison (best, pairs, bandits): refuse it.
            if not all(math.isfinite(s) for s in scores):
                raise RewardError(
                    f"reward {self.name!r} returned a non-finite score: {scores!r:.200}"
                )
            self.calls += len(todo)
            self._cache.update(zip(todo, scores, strict=True))
        return [self._cache[key] for key in keys]

    def _key(self, prompt: Prompt, response: str, reference: str | None) -> str:
        parts = [self.identity(), prompt.prompt, prompt.constraints, reference, response]
        if prompt.extract is not None:  # (the keys of prompts without it stay as they were)
            parts.append(prompt.extract)
        blob = json.dumps(parts, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    @abstractmethod
    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        """Scores of `responses` (none of them cached)."""


@asynccontextmanager
async def started_reward(spec: BaseRewardSpec, pool: ModelPool) -> AsyncIterator[Reward]:
    """The reward a config describes, started, and closed on the way out (a classifier's
    engine stops even when the run fails)."""
    reward = spec.build(pool)
    await reward.start()
    try:
        yield reward
    finally:
        await reward.close()
