"""Simulated dueling bandits: preference matrices, regret, and many seeds played at once.

A preference matrix P holds P[i, j] = the probability that model i's answer is preferred
to model j's (P + P.T = 1, diagonal 1/2). Regret is measured against the Condorcet winner
c (the arm that beats every other), or the Copeland winner when there is none; with
eps(c, i) = P[c, i] - 1/2, playing the pair (i, j) for one query costs
- strong regret (eps(c, i) + eps(c, j)) / 2,
- weak regret min(eps(c, i), eps(c, j)),
and a round of B queries costs B times that.

Single-arm policies (UCB1) need absolute rewards. Here model k's reward for one answer is
Bernoulli with mean k's Borda score, the mean of P[k, j] over j != k: the chance that its
answer beats the answer of a uniformly random other model. So the arm with the best
reward is the Borda winner, which is the Condorcet winner on Bradley-Terry instances but
need not be on others (which is what UCB1 pays for when it learns from rewards alone).

`simulate` plays one policy over many seeds with the policies' runs axis: each round is
a handful of numpy operations over all seeds, with one generator per seed for the policy
and one for the arena, so run r equals a single-run policy with seed r.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from multisample.bandits.formulas import copeland_scores
from multisample.bandits.policies.base import OutcomeArrays
from multisample.bandits.policies.registry import POLICIES, PolicySettings
from multisample.engine.intervals import mean_ci

# The arena's generator for a seed is this child of the seed's SeedSequence, so it never
# shares a stream with the policy's generator (seeded by the seed itself).
ARENA_STREAM = 1


# -- preference matrices ---------------------------------------------------------------


def preference_matrix(matrix: Any) -> np.ndarray:
    """A validated float copy of an arbitrary preference matrix: square, K >= 2, entries in
    [0, 1], P + P.T = 1 (to 1e-9) and 1/2 on the diagonal; ValueError otherwise."""
    p = np.array(matrix, dtype=float)
    if p.ndim != 2 or p.shape[0] != p.shape[1] or p.shape[0] < 2:
        raise ValueError(f"a preference matrix is K x K with K >= 2 (got shape {p.shape})")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("preference probabilities must lie in [0, 1]")
    if not np.allclose(p + p.T, 1.0, rtol=0, atol=1e-9):
        raise ValueError("a preference matrix needs P[i, j] + P[j, i] = 1 (diagonal 1/2)")
    return p


def bradley_terry(utilities: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bradley-Terry preferences P[i, j] = 1 / (1 + exp(u_j - u_i)), utilities on the logit
    scale (strength exp(u)). Its Condorcet winner is the arm of the largest utility."""
    u = np.asarray(utilities, dtype=float)
    return preference_matrix(1.0 / (1.0 + np.exp(u[None, :] - u[:, None])))


def random_condorcet(arms: int, seed: int, gap: float = 0.1) -> np.ndarray:
    """A random non-Bradley-Terry instance with a Condorcet winner: a random arm beats every
    other with probability uniform in [1/2 + gap, 1/2 + 2 gap]; the other pairs are uniform
    in [0.2, 0.8], so they may form cycles (no utilities explain them)."""
    if not 0 < gap <= 0.25:
        raise ValueError(f"gap must lie in (0, 0.25] (got {gap})")
    rng = np.random.default_rng(seed)
    p = np.full((arms, arms), 0.5)
    i, j = np.triu_indices(arms, 1)
    p[i, j] = rng.uniform(0.2, 0.8, len(i))
    p[j, i] = 1 - p[i, j]
    winner = int(rng.integers(arms))
    others = np.arange(arms) != winner
    p[winner, others] = rng.uniform(0.5 + gap, 0.5 + 2 * gap, arms - 1)
    p[others, winner] = 1 - p[winner, others]
    return preference_matrix(p)


def cyclic(arms: int, margin: float = 0.2) -> np.ndarray:
    """An instance without a Condorcet winner: arm i beats the next floor((K-1)/2) arms
    (mod K) with probability 1/2 + margin (rock-paper-scissors for K = 3). Every arm has
    the same Copeland score, so the Copeland fallback is arm 0."""
    if arms < 3:
        raise ValueError(f"a cycle needs at least 3 arms (got {arms})")
    p = np.full((arms, arms), 0.5)
    for i in range(arms):
        for step in range(1, (arms - 1) // 2 + 1):
            p[i, (i + step) % arms] = 0.5 + margin
            p[(i + step) % arms, i] = 0.5 - margin
    return preference_matrix(p)


def condorcet_winner(matrix: np.ndarray) -> int | None:
    """The arm that beats every other arm (P[c, j] > 1/2 for all j != c), or None."""
    p = np.asarray(matrix)
    scores = copeland_scores(p)
    winners = np.flatnonzero(scores == p.shape[0] - 1)
    return int(winners[0]) if len(winners) else None


def copeland_winner(matrix: np.ndarray) -> int:
    """The arm that beats the most others (the lowest index among ties)."""
    return int(copeland_scores(np.asarray(matrix)).argmax())


def true_best(matrix: np.ndarray) -> int:
    """The arm regret is measured against: the Condorcet winner, else the Copeland winner."""
    winner = condorcet_winner(matrix)
    return copeland_winner(matrix) if winner is None else winner


def borda_scores(matrix: np.ndarray) -> np.ndarray:
    """Mean of P[k, j] over j != k: the chance k beats a uniformly random other arm."""
    p = np.asarray(matrix, dtype=float)
    return (p.sum(axis=-1) - 0.5) / (p.shape[0] - 1)


def strong_regret(matrix: np.ndarray, winner: int, first: Any, second: Any) -> Any:
    """Per-query strong regret of playing (first, second): (eps(c, i) + eps(c, j)) / 2.
    Arms may be ints (a float comes back) or arrays (an array)."""
    eps = np.asarray(matrix)[winner] - 0.5
    return _plain((eps[first] + eps[second]) / 2)


def weak_regret(matrix: np.ndarray, winner: int, first: Any, second: Any) -> Any:
    """Per-query weak regret of playing (first, second): min(eps(c, i), eps(c, j))."""
    eps = np.asarray(matrix)[winner] - 0.5
    return _plain(np.minimum(eps[first], eps[second]))


def _plain(value: Any) -> Any:
    return float(value) if np.ndim(value) == 0 else value


# -- simulation ------------------------------------------------------------------------


class Arena:
    """Draws every run's round on a preference matrix, one generator per seed.

    A duel (i != j) gives each of the B queries to both models; the first wins with
    probability P[i, j] (no ties). Every answer also gets a Bernoulli(Borda score)
    reward. A single-model round (i, i) gives rewards only, as live selection does."""

    def __init__(self, matrix: np.ndarray, batch: int, seeds: Sequence[int]) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1 (got {batch})")
        self.matrix = preference_matrix(matrix)
        self.batch = batch
        self._borda = borda_scores(self.matrix)
        self._rngs = [
            np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(ARENA_STREAM,)))
            for seed in seeds
        ]

    def play(self, first: np.ndarray, second: np.ndarray) -> OutcomeArrays:
        """One round of every run: the pair (first[r], second[r]) in run r."""
        draws = np.stack([rng.random((3, self.batch)) for rng in self._rngs])
        distinct = first != second
        first_wins = (draws[:, 0] < self.matrix[first, second][:, None]).sum(axis=-1)
        first_wins = np.where(distinct, first_wins, 0)
        second_rewards = (draws[:, 2] < self._borda[second][:, None]).astype(float)
        return OutcomeArrays(
            first=first,
            second=second,
            first_wins=first_wins,
            second_wins=np.where(distinct, self.batch - first_wins, 0),
            ties=np.zeros_like(first_wins),
            first_rewards=(draws[:, 1] < self._borda[first][:, None]).astype(float),
            second_rewards=np.where(distinct[:, None], second_rewards, np.nan),
        )


@dataclass(frozen=True)
class RegretCurves:
    """Cumulative regret in queries after each round, as (seeds, rounds) arrays; a live run
    is one seed."""

    strong: np.ndarray
    weak: np.ndarray


@dataclass(frozen=True)
class SimulationResult(RegretCurves):
    """One policy over many seeds: its regret curves (rounds = the horizon) and more."""

    settings: PolicySettings
    seeds: tuple[int, ...]
    batch: int
    winner: int
    """The arm regret is measured against (`true_best` of the matrix)."""
    best: np.ndarray
    """(seeds,) each run's best() after the last round."""
    seconds: float
    """Wall time of the simulation."""


def simulate(
    settings: PolicySettings,
    matrix: np.ndarray,
    batch: int,
    horizon: int,
    seeds: Sequence[int],
) -> SimulationResult:
    """Play `horizon` rounds of `batch` queries on the preference matrix, every seed at once."""
    started = time.perf_counter()
    arena = Arena(matrix, batch, seeds)
    policy = POLICIES[settings.kind](settings, arena.matrix.shape[0], seeds)
    winner = true_best(arena.matrix)
    strong = np.empty((len(seeds), horizon))
    weak = np.empty((len(seeds), horizon))
    for t in range(horizon):
        first, second = policy.select_runs()
        policy.update_runs(arena.play(first, second))
        strong[:, t] = batch * strong_regret(arena.matrix, winner, first, second)
        weak[:, t] = batch * weak_regret(arena.matrix, winner, first, second)
    return SimulationResult(
        settings=settings,
        seeds=tuple(seeds),
        batch=batch,
        winner=winner,
        strong=strong.cumsum(axis=1),
        weak=weak.cumsum(axis=1),
        best=policy.best_runs(),
        seconds=time.perf_counter() - started,
    )


def regret_band(
    curves: np.ndarray, points: int = 400
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rounds (1-based, at most `points` evenly spaced) with the mean over seeds and its 95%
    Student-t interval (engine.intervals.mean_ci) of (seeds, horizon) curves."""
    horizon = curves.shape[1]
    columns = np.unique(np.linspace(0, horizon - 1, min(points, horizon)).round().astype(int))
    mean, low, high = np.array([mean_ci(curves[:, c]) for c in columns]).T
    return columns + 1, mean, low, high


def plot_regret(curves: Mapping[str, RegretCurves], path: str | Path, title: str = "") -> None:
    """Mean cumulative strong and weak regret per label with 95% bands over seeds, as a PNG
    (simulations per policy, and a live run's regret.png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    for axis, which in zip(axes, ("strong", "weak"), strict=True):
        for label, regret in curves.items():
            rounds, mean, low, high = regret_band(getattr(regret, which))
            (line,) = axis.plot(rounds, mean, label=label)
            axis.fill_between(rounds, low, high, color=line.get_color(), alpha=0.2)
        axis.set_title(f"{which} regret")
        axis.set_xlabel("round")
        axis.set_ylabel("cumulative regret (queries)")
        axis.grid(alpha=0.3)
    axes[0].legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    # Written aside and renamed: a run's regret.png is never half written.
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(tmp, dpi=120)
    plt.close(figure)
    tmp.replace(path)
