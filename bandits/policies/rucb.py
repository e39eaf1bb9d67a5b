"""Relative UCB (Zoghi et al., "Relative Upper Confidence Bound for the K-Armed Dueling
Bandit Problem", ICML 2014), Algorithm 1 with its hypothesized best arm B; alpha = 0.51.

Choices the source leaves open (besides the win-matrix ones in win_matrix.py): ties are
broken uniformly at random, as the paper says, with the run's generator; x/0 := 1 applies
to each fraction of the bounds, so a pair never compared has u = 2 and l = 0.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field

from multisample.bandits.formulas import confidence_bounds, random_argmax, rucb_candidates
from multisample.bandits.policies.base import StateArray
from multisample.bandits.policies.win_matrix import WinMatrixPolicy
from multisample.engine.config import Settings


class RUCBSettings(Settings):
    """Relative Upper Confidence Bound (Zoghi et al. 2014)."""

    kind: Literal["rucb"] = "rucb"
    """RUCB: an optimistic candidate against its strongest optimistic challenger."""
    alpha: float = Field(0.51, gt=0.5)
    """Exploration weight in sqrt(alpha ln t / n); the analysis needs alpha > 1/2."""


class RUCB(WinMatrixPolicy):
    """RUCB, Algorithm 1; the comments name its lines."""

    settings_type = RUCBSettings
    counters: ClassVar[dict[str, StateArray]] = {
        **WinMatrixPolicy.counters,
        "hypothesis": StateArray("arm", low=-1, initial=-1),
    }
    hypothesis: np.ndarray
    """(runs,) the arm in the set B, or -1 when B is empty."""

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        k, run = self.arms, np.arange(self.runs)
        upper, _ = confidence_bounds(self.wins, self.settings.alpha, self.queries + 1)  # line 4-5
        candidates = rucb_candidates(upper)  # line 6
        size = candidates.sum(axis=-1)
        draws = self._uniforms(1 + 2 * k)
        coin, pick_first, pick_second = draws[:, 0], draws[:, 1 : k + 1], draws[:, k + 1 :]
        hyp = self.hypothesis
        hyp = np.where((hyp >= 0) & candidates[run, np.maximum(hyp, 0)], hyp, -1)  # line 8
        hyp = np.where(size == 1, candidates.argmax(axis=-1), hyp)  # line 9
        # Lines 7 and 10: B's arm with probability 1/2, else uniform over C \ B (all arms
        # when C is empty); with B empty, uniform over C.
        pool = candidates | (size == 0)[:, None]
        others = pool & (np.arange(k) != hyp[:, None])
        take_hyp = (hyp >= 0) & ((size == 1) | (coin < 0.5))
        c = np.where(take_hyp, hyp, random_argmax(np.zeros((self.runs, k)), others, pick_first))
        # Line 11: d = argmax_j u_jc, ties at random, and d != c when c ties.
        column = upper[run, :, c]
        top = column == column.max(axis=-1, keepdims=True)
        top &= ~((np.arange(k) == c[:, None]) & (top.sum(axis=-1) > 1)[:, None])
        d = random_argmax(np.zeros((self.runs, k)), top, pick_second)
        self.hypothesis = hyp
        return c, d
