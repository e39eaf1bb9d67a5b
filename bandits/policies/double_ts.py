"""Double Thompson sampling, D-TS (Wu & Liu, "Double Thompson Sampling for Dueling
Bandits", NeurIPS 2016, Algorithm 1; not the D-TS+ tie-breaking variant); alpha = 0.51.

Choices the source leaves open (besides the win-matrix ones in win_matrix.py): ties are
broken uniformly at random, as the paper says, with the run's generator; x/0 := 1 applies
to each fraction of the bounds, so a pair never compared has u = 2 and l = 0 (the
authors' code starts counts at 1e-6, which also puts an unplayed pair above every played
one and below 1/2 in l).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from multisample.bandits.formulas import confidence_bounds, dts_candidates, pairs, random_argmax
from multisample.bandits.policies.win_matrix import WinMatrixPolicy
from multisample.engine.config import Settings


class DoubleTSSettings(Settings):
    """Double Thompson sampling (Wu & Liu 2016)."""

    kind: Literal["double_ts"] = "double_ts"
    """D-TS: both models of the pair drawn by Thompson sampling on Beta posteriors."""
    alpha: float = Field(0.51, gt=0.5)
    """Exploration weight of the confidence bounds that prune candidates; > 1/2."""


class DoubleTS(WinMatrixPolicy):
    """D-TS, Algorithm 1; the comments name its lines."""

    settings_type = DoubleTSSettings

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        k, run, wins = self.arms, np.arange(self.runs), self.wins
        upper, lower = confidence_bounds(wins, self.settings.alpha, self.queries + 1)  # line 4
        candidates = dts_candidates(upper)  # lines 5-6
        # Lines 7-10: one posterior sample of P; the first arm beats the most arms in it,
        # among the candidates.
        i, j = pairs(k)
        a, b = wins[:, i, j] + 1, wins[:, j, i] + 1
        theta = self._each(lambda rng, r: rng.beta(a[r], b[r]))
        sample = np.full((self.runs, k, k), 0.5)
        sample[:, i, j], sample[:, j, i] = theta, 1 - theta
        beaten = (sample > 0.5).sum(axis=-1)
        first = random_argmax(beaten, candidates, self._uniforms(k))
        # Lines 12-13: a second, independent sample of column a1; the second arm is its
        # largest among arms not known to beat a1 (l_{i a1} <= 1/2), a1 itself included
        # with theta = 1/2, so a1 duels itself once no sample beats 1/2.
        a, b = wins[run, :, first] + 1, wins[run, first, :] + 1
        column = self._each(lambda rng, r: rng.beta(a[r], b[r]))
        column[run, first] = 0.5
        second = random_argmax(column, lower[run, :, first] <= 0.5, self._uniforms(k))
        return first, second
