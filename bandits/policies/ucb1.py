"""Single-arm UCB1 (Auer et al. 2002) on absolute rewards: mu_k + sqrt(2 ln T / n_k).

Choices the source leaves open: T is the number of queries before the round. The index
is +inf for an arm never played, so each model is tried once first, as in Auer et al.'s
UCB1 (the Co-UCB authors' UCB1 baseline gives it mean + 1 instead, under which a model
whose rivals' indexes stay above 1 is never tried; docs/BANDITS.md). Rewards are meant
to lie in [0, 1]; the bonus assumes that range. Ties go to the lowest arm. `best()` is the
same index. It learns from every reward it is given (pooled when first == second).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import numpy as np

from multisample.bandits.formulas import running_mean
from multisample.bandits.policies.base import OutcomeArrays, Policy, StateArray, reward_counts
from multisample.engine.config import Settings
from multisample.engine.ucb import ucb


class UCB1Settings(Settings):
    """Single-arm UCB1 on absolute rewards; needs a reward model, not preferences."""

    kind: Literal["ucb1"] = "ucb1"
    """UCB1: one model per round, scored by absolute rewards in [0, 1]."""


class UCB1(Policy):
    """Single-arm UCB1 on absolute rewards: mu_k + sqrt(2 ln T / n_k), +inf when n_k = 0."""

    settings_type = UCB1Settings
    absolute_feedback = True
    single_arm = True
    counters: ClassVar[dict[str, StateArray]] = {
        "mu": StateArray("arms", integer=False, low=-math.inf),
        "n": StateArray("arms"),
    }
    mu: np.ndarray
    """(runs, K) mean reward of each model."""
    n: np.ndarray
    """(runs, K) rewards seen of each model."""

    def select_runs(self) -> tuple[np.ndarray, np.ndarray]:
        arm = self.best_runs()
        return arm, arm

    def _check(self, outcomes: OutcomeArrays) -> None:
        super()._check(outcomes)
        rewards = reward_counts(outcomes.first_rewards) + reward_counts(outcomes.second_rewards)
        if (rewards == 0).any():
            raise ValueError("ucb1 learns from absolute rewards; this feedback has none")

    def _learn(self, outcomes: OutcomeArrays) -> None:
        run = np.arange(self.runs)
        # Second after first, so a single-model round pools both reward lists.
        for arm, rewards in (
            (outcomes.first, outcomes.first_rewards),
            (outcomes.second, outcomes.second_rewards),
        ):
            count = reward_counts(rewards)
            total = np.nansum(rewards, axis=-1)
            self.mu[run, arm] = running_mean(self.mu[run, arm], self.n[run, arm], total, count)
            self.n[run, arm] += count

    def best_runs(self) -> np.ndarray:
        total = self.n.sum(axis=-1, keepdims=True)
        return ucb(self.mu, self.n, total, math.inf).argmax(axis=-1)
