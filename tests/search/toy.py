"""A deterministic toy pool and reward for exact checks of search bookkeeping.

Test-only: it never ships as a backend. A response's text encodes who made it from
what, and its reward is a fixed function of the text, so every number is predictable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace

from multisample.engine.rewards.base import Reward
from multisample.engine.types import Generation, GenerationRequest, Prompt, SamplingSettings


class ToyPool:
    def __init__(
        self,
        names: Sequence[str] = ("a", "b"),
        parameters: float = 1e6,
        system_prompts: Mapping[str, str] | None = None,
    ) -> None:
        self.names = list(names)
        self.calls: list[tuple[str, int]] = []  # (model, batch size)
        self._parameters = parameters
        self._system_prompts = dict(system_prompts or {})

    def spec(self, model: str) -> SimpleNamespace:
        """What strategies read of a model's config: its own system prompt, if any."""
        return SimpleNamespace(system_prompt=self._system_prompts.get(model))

    def sampling(self, model: str, base: SamplingSettings | None = None) -> SamplingSettings:
        return base or SamplingSettings()

    def parameters(self, model: str) -> float | None:
        return self._parameters

    async def context_length(self, model: str) -> int | None:
        return None  # no context window: every prompt fits

    def events(self) -> dict[str, dict[str, int]]:
        return {}  # the toy never fails

    def events_since(self, before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
        return {}

    async def generate(self, model: str, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append((model, len(requests)))
        return [
            Generation(
                text=f"{model}|{r.seed}|{r.messages[-1].content[:20]}",
                model=model,
                prompt_tokens=10,
                completion_tokens=5,
                finish_reason="stop",
                seed=r.seed,
                latency_s=0.001,
            )
            for r in requests
        ]


class ToyReward(Reward):
    """Reward = (seed mod 100) / 100, read back from the toy text."""

    name = "toy"

    async def _score(
        self, prompt: Prompt, responses: list[str], reference: str | None
    ) -> list[float]:
        return [int(r.split("|")[1]) % 100 / 100 for r in responses]
