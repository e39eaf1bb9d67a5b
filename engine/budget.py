"""Compute accounting for one search: generations, tokens and FLOPs, per model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from multisample.engine.config import BudgetConfig
from multisample.engine.types import Generation


def estimate_flops(parameters: float | None, tokens: int) -> float:
    """Forward-pass FLOPs of a decoder: about 2 x parameters x tokens (Kaplan et al., 2020).

    Unknown parameter counts give 0 rather than a guess; the summary says which models
    lacked one.
    """
    return 2.0 * parameters * tokens if parameters else 0.0


@dataclass
class ModelSpend:
    generations: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    flops: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class Budget:
    """What one search may spend and has spent. Strategies ask `can_generate()` before
    each call and `charge()` every generation they receive."""

    limits: BudgetConfig
    parameters: Callable[[str], float | None] = lambda _model: None
    per_model: dict[str, ModelSpend] = field(default_factory=dict)
    reward_calls: int = 0
    reserved: int = 0
    """Generations requested but not yet charged: concurrent calls of one search must
    not both spend the last generation."""

    @property
    def generations(self) -> int:
        return sum(s.generations for s in self.per_model.values())

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.per_model.values())

    @property
    def flops(self) -> float:
        return sum(s.flops for s in self.per_model.values())

    def remaining_generations(self) -> int | None:
        """Generations left under the generation limit (None: no such limit)."""
        if self.limits.generations is None:
            return None
        return max(self.limits.generations - self.generations - self.reserved, 0)

    def can_generate(self, n: int = 1) -> bool:
        """May the search spend `n` more generations?"""
        remaining = self.remaining_generations()
        if remaining is not None and n > remaining:
            return False
        return self.limits.tokens is None or self.tokens < self.limits.tokens

    def reserve(self, n: int) -> None:
        """Hold `n` generations for a call in flight; `charge` or `release` ends the hold."""
        self.reserved += n

    def release(self, n: int) -> None:
        """Give back held generations that were never made (a failed call)."""
        self.reserved = max(self.reserved - n, 0)

    def charge(self, generation: Generation, held: bool = True) -> None:
        """Charge a generation; `held`: it was reserved (`reserve`), and that hold ends."""
        if held:
            self.release(1)
        self.charge_tokens(generation)
        self.per_model[generation.model].generations += 1

    def charge_tokens(self, generation: Generation) -> None:
        """Charge a generation's tokens and FLOPs, not a generation: a step-level search's
        step that leaves its solution partial (a generation there is a whole solution)."""
        spend = self.per_model.setdefault(generation.model, ModelSpend())
        spend.prompt_tokens += generation.prompt_tokens
        spend.completion_tokens += generation.completion_tokens
        spend.flops += estimate_flops(self.parameters(generation.model), generation.total_tokens)

    def charge_rewards(self, n: int) -> None:
        self.reward_calls += n

    def to_dict(self) -> dict[str, object]:
        return {
            "generations": self.generations,
            "tokens": self.tokens,
            "flops": self.flops,
            "reward_calls": self.reward_calls,
            "per_model": {name: asdict(s) for name, s in sorted(self.per_model.items())},
        }
