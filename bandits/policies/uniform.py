"""A uniformly random pair of distinct models every round (a baseline); `best()` is the
empirical Copeland winner of what it saw."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from multisample.bandits.formulas import pairs
from multisample.bandits.policies.win_matrix import WinMatrixPolicy
from multisample.engine.config import Settings


class UniformSettings(Settings):
    """A uniformly random pair of distinct models every round (a baseline)."""

    kind: Literal["uniform"] = "uniform"
    """Uniform random pair."""


class Uniform(WinMatrixPolicy):
    """A uniformly random pair of distinct models; best() is the empirical Copeland winner."""

    settings_type = UniformSettings

    def __init__(self, settings: Any, arms: int, seeds: Sequence[int]) -> None:
        super().__init__(settings, arms, seeds)
        self._first, self._second = pairs(arms)

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        chosen = self._each(lambda rng, _: rng.integers(len(self._first)))
        return self._first[chosen], self._second[chosen]
