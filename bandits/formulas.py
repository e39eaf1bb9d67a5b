"""The bandits' formulas as pure numpy functions.

Every function takes arrays with any leading axes (the simulator's runs axis; none for a
single run) before the arm axes, so one formula serves a live run and a thousand
simulated ones. Matrices follow the convention `M[..., i, j]` = "row arm i against column
arm j"; counts are in queries (one query = one comparison of two answers).
"""

from __future__ import annotations

import numpy as np

from multisample.engine.ucb import ucb


def pairs(arms: int) -> tuple[np.ndarray, np.ndarray]:
    """The K(K-1)/2 unordered pairs i < j in the fixed order (0,1), (0,2), ..., (K-2,K-1).

    Co-UCB's arms are these pairs, in this order."""
    first, second = np.triu_indices(arms, 1)
    return first, second


def co_ucb_pair_scores(mu: np.ndarray, n_pair: np.ndarray, total: np.ndarray) -> np.ndarray:
    """Co-UCB's score of every pair (in `pairs` order): (mu_i + mu_j)/2 + sqrt(2 ln T / n_ij),
    with a bonus of 1 for a pair never played (Co-UCB's step 1, docs/BANDITS.md).

    mu: (..., K) win rates; n_pair: (..., K(K-1)/2) queries per pair; total: (...,) T."""
    i, j = pairs(mu.shape[-1])
    return ucb((mu[..., i] + mu[..., j]) / 2, n_pair, np.asarray(total)[..., None], 1.0)


def running_mean(
    mean: np.ndarray, count: np.ndarray, total: np.ndarray, added: np.ndarray
) -> np.ndarray:
    """Mean after `added` more observations summing to `total`:
    (count * mean + total) / (count + added). Unchanged when nothing is added."""
    after = np.asarray(count + added)
    return np.where(after > 0, (count * mean + total) / np.maximum(after, 1), mean)


def win_rates(wins: np.ndarray) -> np.ndarray:
    """Empirical preference matrix W_ij / (W_ij + W_ji); 1/2 for pairs never compared and
    on the diagonal. wins[..., i, j] = queries in which i beat j."""
    played = wins + np.swapaxes(wins, -1, -2)
    rates = np.where(played > 0, wins / np.maximum(played, 1), 0.5)
    return _with_diagonal(rates, 0.5)


def copeland_scores(preferences: np.ndarray) -> np.ndarray:
    """Copeland score of every arm: the number of other arms it beats (P_ij > 1/2; the
    diagonal is 1/2, so an arm never counts itself)."""
    return (preferences > 0.5).sum(axis=-1)


def confidence_bounds(
    wins: np.ndarray, alpha: float, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """RUCB's and D-TS's upper and lower confidence bounds on P:
    W/(W+W^T) +- sqrt(alpha ln t / (W+W^T)), with x/0 := 1 for every fraction as in both
    papers (so a pair never compared has u = 2 and l = 0), and u_ii = l_ii = 1/2.

    t: (...,) the time step, 1 + the queries before this round."""
    played = wins + np.swapaxes(wins, -1, -2)
    seen = played > 0
    safe = np.where(seen, played, 1)
    mean = np.where(seen, wins / safe, 1.0)
    log_t = np.log(np.asarray(t, dtype=float))[..., None, None]
    radius = np.where(seen, np.sqrt(alpha * log_t / safe), 1.0)
    return _with_diagonal(mean + radius, 0.5), _with_diagonal(mean - radius, 0.5)


def rucb_candidates(upper: np.ndarray) -> np.ndarray:
    """RUCB's set C (Zoghi et al. 2014, Alg. 1 line 6): arms with u_cj >= 1/2 for all j."""
    return (upper >= 0.5).all(axis=-1)


def dts_candidates(upper: np.ndarray) -> np.ndarray:
    """D-TS's set C (Wu & Liu 2016, Alg. 1 lines 5-6): arms whose upper Copeland score
    #{j != i : u_ij > 1/2} is the largest."""
    score = copeland_scores(upper)
    return score == score.max(axis=-1, keepdims=True)


def random_argmax(values: np.ndarray, allowed: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
    """Index of the largest of `values` among the `allowed` entries (last axis), ties broken
    uniformly at random by iid uniforms in [0, 1) of the same shape. Needs an allowed entry."""
    best = np.where(allowed, values, -np.inf).max(axis=-1, keepdims=True)
    return np.where(allowed & (values == best), uniforms, -1.0).argmax(axis=-1)


def _with_diagonal(matrix: np.ndarray, value: float) -> np.ndarray:
    out = np.array(matrix, dtype=float)
    idx = np.arange(out.shape[-1])
    out[..., idx, idx] = value
    return out
