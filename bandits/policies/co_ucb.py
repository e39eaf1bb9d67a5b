"""Co-UCB (Ye, Xie & Ng, "Multi-Source Test-Time Adaptation as Dueling Bandits for
Extractive Question Answering", ACL 2023): the default policy.

Arms are the K(K-1)/2 pairs; play the pair with the largest
(mu_i + mu_j)/2 + sqrt(2 ln T / n_ij), bonus 1 when n_ij = 0; then
mu_i <- (n_i mu_i + wins_i) / (n_i + B), n_i += B, the same for j, n_ij += B. Ties (draws)
count in B and win nothing. The collaborative update (step 4, both models learn from the
preferred answer) adapts the models, not the bandit: it is the caller's.

As the authors' code (oceanypt/Multi-source-TTA): ties among the best-scoring pairs are
broken uniformly at random (the authors shuffle the pairs; here the run's generator
draws, so a seeded policy stays reproducible and its state restores exactly); `best()`
is argmax_i mu_i + sqrt(2 ln T' / n_i) with T' = sum_i n_i = 2 x the queries (every
query plays two models), a bonus of 1 for an arm never played (as a pair never played
scores), ties to the lowest arm. Choices the source leaves open: T of the pair score is
the number of queries before the round; mu starts at 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from multisample.bandits.formulas import co_ucb_pair_scores, pairs, random_argmax, running_mean
from multisample.bandits.policies.base import OutcomeArrays, Policy, StateArray
from multisample.engine.config import Settings
from multisample.engine.ucb import ucb


class CoUCBSettings(Settings):
    """Co-UCB: dueling bandit over pairs of candidate models (the default policy)."""

    kind: Literal["co_ucb"] = "co_ucb"
    """Co-UCB (docs/BANDITS.md): play the pair with the largest mean win rate plus bonus."""


class CoUCB(Policy):
    """Co-UCB over the K(K-1)/2 pairs; see the module docstring."""

    settings_type = CoUCBSettings
    counters: ClassVar[dict[str, StateArray]] = {
        "mu": StateArray("arms", integer=False, high=1.0),
        "n_pair": StateArray("pairs"),
    }
    mu: np.ndarray
    """(runs, K) estimated win rate of each model."""
    n_pair: np.ndarray
    """(runs, K(K-1)/2) queries given to each pair; n_i is the sum over i's pairs."""

    def __init__(self, settings: Any, arms: int, seeds: Sequence[int]) -> None:
        super().__init__(settings, arms, seeds)
        self._first, self._second = pairs(arms)
        self._pair_index = np.full((arms, arms), -1)
        self._pair_index[self._first, self._second] = np.arange(len(self._first))
        self._pair_index[self._second, self._first] = np.arange(len(self._first))
        # incidence[p, i] = 1 when model i plays in pair p, so n = n_pair @ incidence.
        self._incidence = np.zeros((len(self._first), arms), dtype=np.int64)
        self._incidence[np.arange(len(self._first)), self._first] = 1
        self._incidence[np.arange(len(self._first)), self._second] = 1

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        # Step 1: the best-scoring pair; ties at random, as the authors' shuffle.
        scores = co_ucb_pair_scores(self.mu, self.n_pair, self.n_pair.sum(axis=-1))
        allowed = np.ones(scores.shape, dtype=bool)
        chosen = random_argmax(scores, allowed, self._uniforms(scores.shape[-1]))
        return self._first[chosen], self._second[chosen]

    def _check(self, outcomes: OutcomeArrays) -> None:
        super()._check(outcomes)
        if (outcomes.first == outcomes.second).any():
            raise ValueError("co_ucb plays pairs of two different models (got first == second)")

    def _learn(self, outcomes: OutcomeArrays) -> None:
        # Step 3: both models' win rates over all their queries, then the pair's count.
        run = np.arange(self.runs)
        n = self.n_pair @ self._incidence
        batch = outcomes.comparisons
        i, j = outcomes.first, outcomes.second
        self.mu[run, i] = running_mean(self.mu[run, i], n[run, i], outcomes.first_wins, batch)
        self.mu[run, j] = running_mean(self.mu[run, j], n[run, j], outcomes.second_wins, batch)
        self.n_pair[run, self._pair_index[i, j]] += batch

    def best_runs(self) -> np.ndarray:
        # T' counts model plays, 2 per query (the authors' code), not queries.
        n = self.n_pair @ self._incidence
        return ucb(self.mu, n, n.sum(axis=-1, keepdims=True), 1.0).argmax(axis=-1)
