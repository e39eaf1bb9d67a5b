"""Always one given model (the "one fixed model" baseline); it learns nothing."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field

from multisample.bandits.policies.base import OutcomeArrays, Policy
from multisample.engine.config import Settings


class FixedSettings(Settings):
    """Always the same model (a baseline)."""

    kind: Literal["fixed"] = "fixed"
    """One fixed model."""
    arm: int = Field(ge=0)
    """Index of the model among the candidates (0-based, below their number)."""


class Fixed(Policy):
    """Always the model `settings.arm`; learns nothing."""

    settings_type = FixedSettings
    single_arm = True

    def __init__(self, settings: Any, arms: int, seeds: Sequence[int]) -> None:
        super().__init__(settings, arms, seeds)
        if settings.arm >= arms:
            raise ValueError(f"fixed arm must be below the {arms} arms (got {settings.arm})")

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        return self.best_runs(), self.best_runs()

    def _learn(self, outcomes: OutcomeArrays) -> None:
        pass

    def best_runs(self) -> np.ndarray:
        return np.full(self.runs, self.settings.arm)
