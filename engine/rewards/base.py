"""One interface for every scorer: `await reward.score(prompt, responses, reference)`."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence

from engine.types import Prompt


class RewardError(RuntimeError):
    """A reward could not be computed; the message says which reward and why."""


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
            scores = await self._score(prompt, list(todo.values()), reference)
            if len(scores) != len(todo):
                raise RewardError(
                    f"reward {self.name!r} returned {len(scores)} scores for {len(todo)} responses"
                )
            self.calls += len(todo)
            self._cache.update(zip(todo, (float(s) for s in scores), strict=True))
        return [self._cache[key] for key in keys]

    def _key(self, prompt: Prompt, response: str, reference: str | None) -> str:
        blob = json.dumps(
            [self.identity(), prompt.prompt, prompt.constraints, reference, response],
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(blob.encode()).hexdigest()

    @abstractmethod
    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        """Scores of `responses` (none of them cached)."""
