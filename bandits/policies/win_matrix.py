"""The base of the dueling policies that keep a matrix of wins (RUCB, D-TS, uniform).

Choices the sources leave open, shared by these policies:
- They play their chosen pair for all B queries and add the round's wins to their win
  matrix; their time step is t = 1 + the queries before the round (the paper's t for
  B = 1).
- Tied queries are dropped from the win matrix (they still count in t). A self-duel
  (i, i), which RUCB and D-TS may choose once one arm is clearly best, holds no
  preference: it only advances t; its queries are its comparisons or, when none are
  given, its rewards.
- `best()` is the empirical Copeland winner (RUCB's "Return" line; D-TS defines none),
  lowest index among ties.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from multisample.bandits.formulas import copeland_scores, win_rates
from multisample.bandits.policies.base import OutcomeArrays, Policy, StateArray


class WinMatrixPolicy(Policy):
    """Dueling policies that keep the matrix of wins; best() is its Copeland winner."""

    counters: ClassVar[dict[str, StateArray]] = {
        "wins": StateArray("matrix"),
        "queries": StateArray("scalar"),
    }
    wins: np.ndarray
    """(runs, K, K) wins[i, j] = queries in which model i's answer beat model j's."""
    queries: np.ndarray
    """(runs,) queries so far, ties and self-duels included (t - 1)."""

    def _learn(self, outcomes: OutcomeArrays) -> None:
        run = np.arange(self.runs)
        distinct = outcomes.first != outcomes.second  # a self-duel holds no preference
        i, j = outcomes.first, outcomes.second
        self.wins[run, i, j] += np.where(distinct, outcomes.first_wins, 0)
        self.wins[run, j, i] += np.where(distinct, outcomes.second_wins, 0)
        self.queries += outcomes.queries

    def best_runs(self) -> np.ndarray:
        return copeland_scores(win_rates(self.wins)).argmax(axis=-1)
